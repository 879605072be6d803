"""The lab's cluster DNS server: what CoreDNS is in a k3s cluster, run on the control-plane
host beside the other lab daemons.

It watches Services, EndpointSlices and Namespaces with hexlane's informers, and answers
every query from the zone they make (`hexlane.lab.clusterdns`: the answers, decided
there), over UDP and TCP on port 53 of the control plane's address. The zone is rebuilt on
the first query after a change, so a Service is resolvable as soon as its watch event lands.

It also publishes itself as k3s's CoreDNS is published: the Service `kube-system/kube-dns`
at the cluster DNS address (ports `dns` 53/UDP, `dns-tcp` 53/TCP, `metrics` 9153/TCP, the
labels `k8s-app: kube-dns`, `kubernetes.io/name: CoreDNS`), created when missing, and its
EndpointSlice pointing at the address it serves on, kept so (the way the apiserver keeps
the `kubernetes` Service's). The Service has no selector: the server is a daemon of the
host, not a pod. Pods reach it through the Service, so their DNS traffic crosses hexlane's
datapath like any other. CoreDNS's Prometheus counters `coredns_dns_requests_total` and
`coredns_dns_responses_total` are served on :9153/metrics.

    python -m hexlane.lab.dnsserver --kubeconfig F --listen 10.0.0.10 [--port 53]
        [--service-ip 10.43.0.10] [--cluster-domain cluster.local] [--metrics-port 9153]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import struct
import sys
import time
from collections.abc import Sequence
from typing import Any, cast

import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
from prometheus_client import CollectorRegistry, Counter

from hexlane.k8s.client import ApiError, KubeClient, load_client_config
from hexlane.k8s.controller import Controller
from hexlane.k8s.informer import Informer
from hexlane.k8s.ratelimit import RateLimiter
from hexlane.k8s.resources import EndpointSlice, Namespace, Service, kind_of
from hexlane.k8s.runtime import log_to_stderr, run_until_stopped, serve_metrics

from .clusterdns import CLUSTER_DOMAIN, DNS_SERVICE, ClusterZone, respond_wire
from .podspec import name_of, uid_of

log = logging.getLogger("hexlane.lab.dns")

QPS, BURST = 20.0, 30
DNS_PORT = 53
METRICS_PORT = 9153
TCP_IDLE = 10.0  # seconds a TCP connection may wait between queries
PUBLISH_INTERVAL = 30.0
MANAGED_BY = "hexlane-lab-dns"
SERVICE_LABELS = {"k8s-app": "kube-dns", "kubernetes.io/cluster-service": "true",
                  "kubernetes.io/name": "CoreDNS"}
FREQUENT_TYPES = ("A", "AAAA", "CNAME", "MX", "NS", "PTR", "SOA", "SRV", "TXT")


def kube_dns_service(service_ip: str) -> dict[str, Any]:
    namespace, name = DNS_SERVICE
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(SERVICE_LABELS),
                     "annotations": {"prometheus.io/port": str(METRICS_PORT),
                                     "prometheus.io/scrape": "true"}},
        "spec": {"type": "ClusterIP", "clusterIP": service_ip, "clusterIPs": [service_ip],
                 "ports": [
                     {"name": "dns", "port": DNS_PORT, "protocol": "UDP",
                      "targetPort": DNS_PORT},
                     {"name": "dns-tcp", "port": DNS_PORT, "protocol": "TCP",
                      "targetPort": DNS_PORT},
                     {"name": "metrics", "port": METRICS_PORT, "protocol": "TCP",
                      "targetPort": METRICS_PORT}]},
    }


def kube_dns_slice(address: str, service: dict[str, Any]) -> dict[str, Any]:
    """The EndpointSlice that puts this server behind the Service (owned by it)."""
    namespace, name = DNS_SERVICE
    return {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {
            "name": name, "namespace": namespace,
            "labels": {**SERVICE_LABELS, "kubernetes.io/service-name": name,
                       "endpointslice.kubernetes.io/managed-by": MANAGED_BY},
            "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": name,
                                 "uid": uid_of(service), "controller": True,
                                 "blockOwnerDeletion": True}]},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [address],
                       "conditions": {"ready": True, "serving": True, "terminating": False}}],
        "ports": [{"name": "dns", "port": DNS_PORT, "protocol": "UDP"},
                  {"name": "dns-tcp", "port": DNS_PORT, "protocol": "TCP"},
                  {"name": "metrics", "port": METRICS_PORT, "protocol": "TCP"}],
    }


def _slice_differs(have: dict[str, Any], want: dict[str, Any]) -> bool:
    meta_have, meta_want = have.get("metadata") or {}, want["metadata"]
    labels = meta_have.get("labels") or {}
    return any(have.get(k) != want[k] for k in ("addressType", "endpoints", "ports")) or \
        any(labels.get(k) != v for k, v in meta_want["labels"].items()) or \
        meta_have.get("ownerReferences") != meta_want["ownerReferences"]


class DnsServer:
    """The informers, the zone they make, the sockets and the publisher."""

    def __init__(self, client: KubeClient, *, listen: str, port: int = DNS_PORT,
                 service_ip: str | None = None, domain: str = CLUSTER_DOMAIN,
                 metrics_port: int | None = METRICS_PORT) -> None:
        self.client = client
        self.listen = listen
        self.port = port
        self.service_ip = service_ip
        self.domain = domain
        self.metrics_port = metrics_port
        self.services = Informer(client, Service)
        self.slices = Informer(client, EndpointSlice)
        self.namespaces = Informer(client, Namespace)
        self.informers = [self.services, self.slices, self.namespaces]
        self.publisher = Controller("kube-dns", self.publish, interval=PUBLISH_INTERVAL,
                                    debounce=0.05)
        for informer in self.informers:
            informer.add_handler(lambda *_: self._changed(), lambda *_: self._changed(),
                                 lambda *_: self._changed())
        self._zone: ClusterZone | None = None
        self._serial = int(time.time())
        self.bound: tuple[str, int] = (listen, port)
        self.registry = CollectorRegistry()
        self._requests = Counter(
            "coredns_dns_requests_total", "Counter of DNS requests made per zone, protocol "
            "and family.", ["server", "zone", "view", "proto", "family", "type"],
            registry=self.registry)
        self._responses = Counter(
            "coredns_dns_responses_total", "Counter of response status codes.",
            ["server", "zone", "view", "rcode", "plugin"], registry=self.registry)

    # -- the zone ---------------------------------------------------------------------------

    def _changed(self) -> None:
        self._zone = None
        self._serial = int(time.time())
        if self.service_ip:
            self.publisher.trigger()

    def zone(self) -> ClusterZone:
        """The zone of the caches now (rebuilt after a change, on first use)."""
        if self._zone is None:
            self._zone = ClusterZone.build(
                self.services.cache.objects(), self.slices.cache.objects(),
                [name_of(n) for n in self.namespaces.cache.objects()], domain=self.domain,
                serial=self._serial)
        return self._zone

    def answer(self, wire: bytes, proto: str) -> bytes | None:
        """The answer to one query's bytes (None: send nothing), counted."""
        try:
            out = respond_wire(self.zone(), wire, tcp=proto == "tcp")
        except Exception:  # a bug with one query must not stop the server
            log.exception("answering a %s query", proto)
            return None
        if out is not None:
            self._count(wire, out, proto)
        return out

    def _count(self, wire: bytes, out: bytes, proto: str) -> None:
        server = f"dns://{self.listen}:{self.port}"
        try:
            query = dns.message.from_wire(wire)
            qname, qtype = query.question[0].name, query.question[0].rdtype
        except Exception:  # FORMERR for bytes that are no query: counted without a type
            qname, qtype = None, None
        zone = "dropped"
        if qname is not None:
            for origin in (self.zone().origin, dns.name.from_text("in-addr.arpa.")):
                if qname.is_subdomain(origin):
                    zone = origin.to_text()
        type_text = dns.rdatatype.to_text(qtype) if qtype is not None else "other"
        self._requests.labels(server, zone, "", proto, "1",
                              type_text if type_text in FREQUENT_TYPES else "other").inc()
        rcode = dns.rcode.to_text(dns.rcode.Rcode(struct.unpack("!H", out[2:4])[0] & 0xF))
        self._responses.labels(server, zone, "", rcode,
                               "kubernetes" if zone != "dropped" else "").inc()

    # -- serving ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Until cancelled: caches first, then the sockets, then the Service published."""
        for informer in self.informers:
            informer.start()
        udp: asyncio.DatagramTransport | None = None
        tcp: asyncio.Server | None = None
        metrics = None
        try:
            for informer in self.informers:
                await informer.wait_synced()
            loop = asyncio.get_running_loop()
            udp, _ = await loop.create_datagram_endpoint(
                lambda: _UdpProtocol(self), local_addr=(self.listen, self.port))
            self.bound = udp.get_extra_info("sockname")[:2]
            self.port = int(self.bound[1])
            tcp = await asyncio.start_server(self._tcp_client, self.listen, self.port)
            if self.metrics_port is not None:
                metrics, _ = await serve_metrics(self.registry,
                                                 (self.listen, self.metrics_port))
            log.info("serving %s on %s:%d (UDP and TCP)", self.domain, self.listen, self.port)
            if self.service_ip:
                self.publisher.start()
            await asyncio.Event().wait()
        finally:
            await self.publisher.stop()
            if tcp is not None:
                tcp.close()
            if udp is not None:
                udp.close()
            if metrics is not None:
                await metrics.cleanup()
            for informer in self.informers:
                await informer.stop()

    async def _tcp_client(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        """Length-prefixed queries on one connection until the client closes or idles."""
        try:
            while True:
                head = await asyncio.wait_for(reader.readexactly(2), TCP_IDLE)
                wire = await asyncio.wait_for(reader.readexactly(struct.unpack("!H", head)[0]),
                                              TCP_IDLE)
                out = self.answer(wire, "tcp")
                if out is not None:
                    writer.write(struct.pack("!H", len(out)) + out)
                    await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    # -- publishing -------------------------------------------------------------------------

    async def publish(self) -> None:
        """kube-system/kube-dns exists, and its EndpointSlice points here (writes only what
        differs from the caches)."""
        assert self.service_ip
        namespace, name = DNS_SERVICE
        key = f"{namespace}/{name}"
        service = self.services.cache.get(key)
        if service is None:
            try:
                service = await self.client.request("POST", kind_of(Service).path(namespace),
                                                    body=kube_dns_service(self.service_ip))
                log.info("created Service %s at %s", key, self.service_ip)
            except ApiError as e:
                if not e.conflict:
                    raise
                return  # made meanwhile: the watch brings it and triggers us again
            self.services.cache.put(service)
        ip = str((service.get("spec") or {}).get("clusterIP") or "")
        if ip != self.service_ip:
            log.warning("Service %s has clusterIP %s, not %s; its endpoints point here all "
                        "the same", key, ip, self.service_ip)
        want = kube_dns_slice(self.listen, service)
        have = self.slices.cache.get(key)
        kind = kind_of(EndpointSlice)
        try:
            if have is None:
                stored = await self.client.request("POST", kind.path(namespace), body=want)
            elif _slice_differs(have, want):
                want["metadata"]["resourceVersion"] = have["metadata"]["resourceVersion"]
                stored = await self.client.request("PUT", kind.path(namespace, name), body=want)
            else:
                return
        except ApiError as e:
            if e.conflict:
                return  # the cache is behind; the watch event triggers another run
            raise
        self.slices.cache.put(stored)
        log.info("EndpointSlice %s points at %s", key, self.listen)


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        out = self.server.answer(data, "udp")
        if out is not None and self.transport is not None:
            self.transport.sendto(out, addr)


async def _main(args: argparse.Namespace) -> int:
    client = KubeClient(load_client_config(None, args.kubeconfig), RateLimiter(QPS, BURST))
    server = DnsServer(client, listen=args.listen, port=args.port, service_ip=args.service_ip,
                       domain=args.cluster_domain,
                       metrics_port=None if args.metrics_port == 0 else args.metrics_port)
    await run_until_stopped(server.run(), "the cluster DNS")
    await client.aclose()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hexlane.lab.dnsserver")
    p.add_argument("--kubeconfig", required=True)
    p.add_argument("--listen", required=True, help="the address to serve on (the cp's)")
    p.add_argument("--port", type=int, default=DNS_PORT)
    p.add_argument("--service-ip", help="publish kube-system/kube-dns at this ClusterIP, "
                   "with an EndpointSlice pointing at --listen")
    p.add_argument("--cluster-domain", default=CLUSTER_DOMAIN)
    p.add_argument("--metrics-port", type=int, default=METRICS_PORT, help="0: none")
    args = p.parse_args(argv)
    log_to_stderr()
    logging.getLogger("aiohttp").setLevel(logging.WARNING)
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(_main(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
