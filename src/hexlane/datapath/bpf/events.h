/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Flow events for Hubble: traces of connections and every drop, through a BPF ring buffer.
 *
 * What is reported, per node (docs/hubble.md has the whole picture):
 * - A trace when a connection is first seen, when a packet of it carries a TCP flag it had not
 *   carried yet (SYN, FIN, RST: Cilium's default monitor-aggregation flags) and at most every
 *   HL_TRACE_INTERVAL_NS otherwise (Cilium's monitor-aggregation-interval, 5 s): Cilium's
 *   "medium" monitor aggregation. Each direction of a connection is its own entry in
 *   hl_trace4; the second direction seen is the reply (is_reply).
 * - Only where a packet goes, as Cilium reports with that aggregation: to a local pod
 *   (to-endpoint), into the tunnel (to-overlay), out of the node (to-network) or up the
 *   node's own stack (to-stack). Each packet is considered once per node, by the first hook
 *   of ours it meets (pods' packets where they leave the pod, others where they enter the
 *   node); that hook marks it (HL_MARK_TRACED) so a later hook (the veth's egress) leaves it.
 * - Service translations ride on the trace: the tuple reported is the client's and the
 *   backend's (the source before any SNAT, which goes in xlated_saddr), with the frontend in
 *   svc_addr/svc_port, so a flow names its backend pod and its Service.
 * - Every drop of ours, with its reason and whatever of the packet was parsed.
 * Nothing is reported while the agent has not switched events on (hl_trace_config).
 *
 * What the ring cannot take is counted: hl_events_stats holds {emitted, lost}, and the agent
 * counts what it received, so received + lost = emitted once the ring is drained.
 */
#ifndef HEXLANE_EVENTS_H
#define HEXLANE_EVENTS_H

#include "common.h"
#include "parse.h"
#include "conntrack.h" /* HL_TCP_* */

#ifndef HL_EVENTS_RING_SIZE
#define HL_EVENTS_RING_SIZE (4 << 20) /* bytes; a power of two, a multiple of the page size */
#endif
#ifndef HL_TRACE_MAP_MAX_ENTRIES
#define HL_TRACE_MAP_MAX_ENTRIES 131072
#endif

/* Cilium's monitor message types, as Hubble's event_type.type reports them */
#define HL_EVENT_DROP  1
#define HL_EVENT_TRACE 4
#define HL_EVENT_POLICY_VERDICT 5
#define HL_EVENT_L7    129 /* Cilium's access log (its proxy's L7 records) */

/* Cilium's trace observation points (flow.TraceObservationPoint) */
#define HL_OBS_TO_HOST     2
#define HL_OBS_TO_STACK    3
#define HL_OBS_TO_OVERLAY  4
#define HL_OBS_TO_NETWORK  11
#define HL_OBS_TO_ENDPOINT 101

/* hl_event.flags */
#define HL_EV_F_REPLY        (1 << 0) /* the second direction of its connection seen here */
#define HL_EV_F_SERVICE      (1 << 1) /* svc_addr/svc_port: the frontend it was sent to */
#define HL_EV_F_XLATED_SRC   (1 << 2) /* xlated_saddr: the source it left with (SNAT) */
#define HL_EV_F_L4           (1 << 3) /* sport/dport are parsed (TCP, UDP; ICMP: type/code) */
#define HL_EV_F_RESPONSE     (1 << 4) /* L7: a response (else a request) */

/* A policy verdict's flags (in hl_event.obs_point), Cilium's layout: the direction (1
 * ingress, 2 egress), the match type (Cilium's PolicyMatch*) in bits 3-5, audited.
 */
#define HL_VERDICT_F_INGRESS 1
#define HL_VERDICT_F_EGRESS  2
#define HL_VERDICT_MATCH_SHIFT 3
#define HL_VERDICT_F_AUDITED 0x40

/* hl_trace_config.flags */
#define HL_TRACE_F_ON (1 << 0)
#define HL_TRACE_F_L7 (1 << 1) /* hand up the first bytes of DNS and HTTP messages */

/* L7 visibility without a proxy: the first bytes of a DNS or HTTP/1.x message, on the ports
 * the agent lists in hl_l7_ports, are handed up in an HL_EVENT_L7 record (struct
 * hl_l7_event). Each message is handed up once in the cluster, where its client is when the
 * client is a pod (the request leaving it, the response coming to it), else where its server
 * pod is; so a request and its response are seen on the same node, and the agent there pairs
 * them for the latency.
 */
#define HL_L7_CAPTURE 512 /* bytes of payload at most */
#define HL_L7_DNS  1
#define HL_L7_HTTP 2
#define HL_L7_CLIENT 1 /* seen at the client pod (egress) */
#define HL_L7_SERVER 2 /* seen at the server pod (ingress) */

/* A packet some hook of ours has considered for a trace (skb->mark; a veth into another
 * namespace clears it, as it clears every mark).
 */
#define HL_MARK_TRACED 0x00100000

#define HL_TRACE_INTERVAL_NS (5ULL * 1000 * 1000 * 1000)
#define HL_TRACE_TCP_FLAGS (HL_TCP_FIN | HL_TCP_SYN | HL_TCP_RST)

struct hl_event {
	__u64 ktime_ns;     /* bpf_ktime_get_ns(): CLOCK_MONOTONIC */
	__u8 type;          /* HL_EVENT_* */
	__u8 obs_point;     /* HL_OBS_* (traces); policy verdicts: HL_VERDICT_F_* */
	__u8 reason;        /* enum hl_drop_reason (drops) */
	__u8 tcp_flags;     /* of this packet */
	__u8 proto;         /* IPPROTO_*; 0: not parsed */
	__u8 flags;         /* HL_EV_F_* */
	__u8 icmp_type;
	__u8 icmp_code;
	__u32 ifindex;      /* the device the hook runs on */
	__u32 len;          /* the packet's length */
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__be32 svc_addr;
	__be16 svc_port;
	__u16 pad;
	__be32 xlated_saddr;
	__u32 identity;     /* policy verdicts: the remote side's security identity */
	__u32 cookie;       /* policy verdicts: the agent's number for the deciding policies */
};

/* One direction of a connection, as reported (the client's and the backend's addresses). */
struct hl_trace4_key {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 pad[3];
};

struct hl_trace4_entry {
	__u64 last_report_ns;
	__u8 flags_seen; /* the HL_TRACE_TCP_FLAGS reported so far */
	__u8 reply;
	__u8 pad[6];
};

/* What the agent sets (array, one entry). */
struct hl_trace_config {
	__u32 flags;            /* HL_TRACE_F_* */
	__be32 pod_net;         /* this node's pod CIDR: its packets go to local pods */
	__be32 pod_mask;
	__u32 overlay_ifindex;  /* the tunnel device (0: none) */
	__u32 host_ifindex;     /* hexlane_host */
	__be32 cluster_net;     /* the cluster's pod CIDR: its addresses are pods */
	__be32 cluster_mask;
	__u32 pad;
};

/* hl_l7_ports: which ports carry which protocol (HL_L7_*) */
struct hl_l7_port {
	__be16 port;
	__u8 proto;
	__u8 pad;
};

struct hl_l7_event {
	struct hl_event ev;     /* type HL_EVENT_L7; flags HL_EV_F_RESPONSE */
	__u16 cap_len;          /* bytes of data */
	__u8 kind;              /* HL_L7_* */
	__u8 side;              /* HL_L7_CLIENT, HL_L7_SERVER */
	__u32 pad;
	__u8 data[HL_L7_CAPTURE];
};

struct hl_events_stats {
	__u64 emitted;
	__u64 lost;
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, HL_EVENTS_RING_SIZE);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} hl_events SEC(".maps");

/* per CPU: counting thousands of events a second on one shared line would bounce it */
HL_PINNED_MAP(BPF_MAP_TYPE_PERCPU_ARRAY, __u32, struct hl_events_stats, 1, 0)
	hl_events_stats SEC(".maps");

HL_PINNED_MAP(BPF_MAP_TYPE_ARRAY, __u32, struct hl_trace_config, 1, 0)
	hl_trace_config SEC(".maps");

HL_PINNED_MAP(BPF_MAP_TYPE_LRU_HASH, struct hl_trace4_key, struct hl_trace4_entry,
	      HL_TRACE_MAP_MAX_ENTRIES, BPF_F_NO_COMMON_LRU) hl_trace4 SEC(".maps");

HL_PINNED_MAP(BPF_MAP_TYPE_HASH, struct hl_l7_port, __u8, 64, 0) hl_l7_ports SEC(".maps");

/* where an L7 record is put together (too big for the stack) */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct hl_l7_event);
	__uint(max_entries, 1);
} hl_l7_scratch SEC(".maps");

/* What a hook knows about the packet it reports: the logical tuple and the translation. */
struct hl_trace {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__be32 svc_addr;
	__be16 svc_port;
	__u8 proto;
	__u8 tcp_flags;
	__be32 xlated_saddr;
	__u8 flags;  /* HL_EV_F_SERVICE, HL_EV_F_XLATED_SRC, HL_EV_F_L4 */
	__u8 icmp_type;
	__u8 icmp_code;
	__u8 pad;
};

static __always_inline const struct hl_trace_config *hl_trace_on(void)
{
	__u32 zero = 0;
	const struct hl_trace_config *cfg = bpf_map_lookup_elem(&hl_trace_config, &zero);

	return cfg && (cfg->flags & HL_TRACE_F_ON) ? cfg : NULL;
}

static __always_inline void hl_trace_from_pkt(struct hl_trace *tr, const struct pkt4 *p)
{
	tr->saddr = p->saddr;
	tr->daddr = p->daddr;
	tr->sport = p->sport;
	tr->dport = p->dport;
	tr->proto = p->proto;
	tr->tcp_flags = p->tcp_flags;
	tr->flags = p->proto ? HL_EV_F_L4 : 0;
}

/* Whether this packet is to be reported (Cilium's "medium" aggregation, module doc); sets
 * *reply for the direction's flows.
 */
static __always_inline bool hl_trace_aggregate(const struct hl_trace *tr, bool *reply)
{
	struct hl_trace4_key key = {
		.saddr = tr->saddr, .daddr = tr->daddr,
		.sport = tr->sport, .dport = tr->dport, .proto = tr->proto,
	};
	struct hl_trace4_entry fresh = {}, *cur;
	__u8 flags = tr->tcp_flags & HL_TRACE_TCP_FLAGS;
	bool syn = (tr->tcp_flags & (HL_TCP_SYN | HL_TCP_ACK)) == HL_TCP_SYN;
	__u64 now = bpf_ktime_get_ns();

	cur = bpf_map_lookup_elem(&hl_trace4, &key);
	/* A pure SYN starts a connection over (a reused tuple): report it, and ask anew which
	 * direction it is.
	 */
	if (cur && !syn) {
		*reply = cur->reply;
		if (flags & ~cur->flags_seen) {
			cur->flags_seen |= flags;
			cur->last_report_ns = now;
			return true;
		}
		if (now - cur->last_report_ns >= HL_TRACE_INTERVAL_NS) {
			cur->last_report_ns = now;
			return true;
		}
		return false;
	}
	{
		struct hl_trace4_key rkey = {
			.saddr = tr->daddr, .daddr = tr->saddr,
			.sport = tr->dport, .dport = tr->sport, .proto = tr->proto,
		};

		*reply = !syn && bpf_map_lookup_elem(&hl_trace4, &rkey) != NULL;
	}
	fresh.last_report_ns = now;
	fresh.flags_seen = flags;
	fresh.reply = *reply;
	bpf_map_update_elem(&hl_trace4, &key, &fresh, BPF_ANY);
	return true;
}

static __always_inline void hl_event_emit(struct hl_event *ev)
{
	__u32 zero = 0;
	struct hl_events_stats *stats = bpf_map_lookup_elem(&hl_events_stats, &zero);

	if (stats)
		stats->emitted++;
	/* Nobody is woken: the agent drains the ring on a short timer. (A wakeup for the first
	 * record after each drain, the default, cost an interrupt and a context switch for a
	 * few records at a time on a busy node.)
	 */
	if (bpf_ringbuf_output(&hl_events, ev, sizeof(*ev), BPF_RB_NO_WAKEUP) < 0 && stats)
		stats->lost++;
}

static __always_inline void hl_event_fill(struct hl_event *ev, struct __sk_buff *skb,
					  const struct hl_trace *tr)
{
	ev->ktime_ns = bpf_ktime_get_ns();
	ev->ifindex = skb->ifindex;
	ev->len = skb->len;
	ev->tcp_flags = tr->tcp_flags;
	ev->proto = tr->proto;
	ev->flags = tr->flags;
	ev->icmp_type = tr->icmp_type;
	ev->icmp_code = tr->icmp_code;
	ev->saddr = tr->saddr;
	ev->daddr = tr->daddr;
	ev->sport = tr->sport;
	ev->dport = tr->dport;
	ev->svc_addr = tr->svc_addr;
	ev->svc_port = tr->svc_port;
	ev->xlated_saddr = tr->xlated_saddr;
}

/* The observation point of a packet to `daddr` that the FIB (result `fib_ret`, device
 * `ifindex`) sends on: into a pod (`to_pod`: straight into its namespace, or any address of
 * this node's pod CIDR), into the tunnel, up this node's stack (an address of its own, or
 * hexlane_host), else out of the node.
 */
static __always_inline __u8 hl_trace_point(const struct hl_trace_config *cfg, __be32 daddr,
					   long fib_ret, __u32 ifindex, bool to_pod)
{
	if (to_pod || (cfg->pod_mask && (daddr & cfg->pod_mask) == cfg->pod_net))
		return HL_OBS_TO_ENDPOINT;
	if (fib_ret != BPF_FIB_LKUP_RET_SUCCESS && fib_ret != BPF_FIB_LKUP_RET_NO_NEIGH)
		return HL_OBS_TO_STACK;
	if (cfg->overlay_ifindex && ifindex == cfg->overlay_ifindex)
		return HL_OBS_TO_OVERLAY;
	if (ifindex == cfg->host_ifindex)
		return HL_OBS_TO_STACK;
	return HL_OBS_TO_NETWORK;
}

/* Where a packet that goes on to the kernel is going: the FIB's answer, asked only for the
 * packets reported.
 */
static __always_inline __u8 hl_trace_obs_point(struct __sk_buff *skb,
					       const struct hl_trace_config *cfg,
					       __be32 saddr, __be32 daddr)
{
	struct bpf_fib_lookup fib = {};
	long ret;

	if (cfg->pod_mask && (daddr & cfg->pod_mask) == cfg->pod_net)
		return HL_OBS_TO_ENDPOINT;
	fib.family = 2; /* AF_INET */
	fib.ipv4_src = saddr;
	fib.ipv4_dst = daddr;
	fib.ifindex = skb->ifindex;
	ret = bpf_fib_lookup(skb, &fib, sizeof(fib), BPF_FIB_LOOKUP_SKIP_NEIGH);
	return hl_trace_point(cfg, daddr, ret, fib.ifindex, false);
}

static __always_inline bool hl_in(__be32 addr, __be32 net, __be32 mask)
{
	return mask && (addr & mask) == net;
}

/* The protocol a port carries (HL_L7_*), 0: none of the listed. */
static __always_inline __u8 hl_l7_kind(__be16 port, __u8 proto)
{
	struct hl_l7_port key = { .port = port, .proto = proto };
	__u8 *kind = bpf_map_lookup_elem(&hl_l7_ports, &key);

	return kind ? *kind : 0;
}

/* Whether the first four bytes of a TCP payload start an HTTP/1.x request. */
static __always_inline bool hl_http_request(__u32 head)
{
	switch (bpf_ntohl(head)) {
	case 0x47455420: /* "GET " */
	case 0x504f5354: /* "POST" */
	case 0x50555420: /* "PUT " */
	case 0x48454144: /* "HEAD" */
	case 0x44454c45: /* "DELE" */
	case 0x50415443: /* "PATC" */
	case 0x4f505449: /* "OPTI" */
	case 0x434f4e4e: /* "CONN" */
	case 0x54524143: /* "TRAC" */
		return true;
	}
	return false;
}

/* Hand up the first bytes of a DNS or HTTP message this packet carries, when this node is
 * where it is seen (see HL_L7_CAPTURE). `tr` is the logical tuple (client and backend, or
 * backend and client for a reply), with the frontend when a Service was in the way. The
 * message says itself whether it is a response (DNS: the QR bit; HTTP: "HTTP/1.x" first).
 */
static __always_inline void hl_l7_capture(struct __sk_buff *skb,
					  const struct hl_trace_config *cfg,
					  const struct hl_trace *tr)
{
	struct hl_l7_event *rec;
	struct iphdr ip4;
	__u32 zero = 0, head = 0;
	__u64 off, len; /* 64 bits: a 32-bit length is zero-extended in a copy the verifier
			 * may not be shown */
	__be32 client, server;
	__u8 kind, side, byte;
	bool response;

	if (tr->proto != IPPROTO_TCP && tr->proto != IPPROTO_UDP)
		return;
	kind = hl_l7_kind(tr->dport, tr->proto);
	if (!kind)
		kind = hl_l7_kind(tr->sport, tr->proto);
	if (!kind && (tr->flags & HL_EV_F_SERVICE))
		kind = hl_l7_kind(tr->svc_port, tr->proto);
	if (!kind)
		return;
	if (bpf_skb_load_bytes(skb, sizeof(struct ethhdr), &ip4, sizeof(ip4)) < 0)
		return;
	off = sizeof(struct ethhdr) + ip4.ihl * 4;
	if (tr->proto == IPPROTO_TCP) {
		if (bpf_skb_load_bytes(skb, off + 12, &byte, 1) < 0)
			return;
		off += (byte >> 4) * 4;
	} else {
		off += sizeof(struct udphdr);
	}
	if (off >= skb->len)
		return; /* no payload */
	len = skb->len - off;
	if (kind == HL_L7_HTTP) {
		if (tr->proto != IPPROTO_TCP || bpf_skb_load_bytes(skb, off, &head, 4) < 0)
			return;
		if (head == bpf_htonl(0x48545450)) /* "HTTP" */
			response = true;
		else if (hl_http_request(head))
			response = false;
		else
			return; /* the rest of a message, a body */
	} else {
		/* a DNS header (12 bytes), behind its length on TCP; byte 2 holds QR */
		__u32 dns = tr->proto == IPPROTO_TCP ? 2 : 0;

		if (len < dns + 12 || bpf_skb_load_bytes(skb, off + dns + 2, &byte, 1) < 0)
			return;
		response = byte & 0x80;
	}
	client = response ? tr->daddr : tr->saddr;
	server = response ? tr->saddr : tr->daddr;
	if (hl_in(client, cfg->cluster_net, cfg->cluster_mask)) {
		/* the client is a pod: seen where it is */
		if (!hl_in(client, cfg->pod_net, cfg->pod_mask))
			return;
		side = HL_L7_CLIENT;
	} else {
		if (!hl_in(server, cfg->pod_net, cfg->pod_mask))
			return;
		side = HL_L7_SERVER;
	}
	if (len > HL_L7_CAPTURE)
		len = HL_L7_CAPTURE;
	if (len < 1)
		return;
	rec = bpf_map_lookup_elem(&hl_l7_scratch, &zero);
	if (!rec)
		return;
	if (bpf_skb_load_bytes(skb, off, rec->data, len) < 0)
		return;
	__builtin_memset(&rec->ev, 0, sizeof(rec->ev));
	hl_event_fill(&rec->ev, skb, tr);
	rec->ev.type = HL_EVENT_L7;
	if (response)
		rec->ev.flags |= HL_EV_F_RESPONSE;
	rec->cap_len = len;
	rec->kind = kind;
	rec->side = side;
	rec->pad = 0;
	{
		struct hl_events_stats *stats = bpf_map_lookup_elem(&hl_events_stats, &zero);
		__u32 size = offsetof(struct hl_l7_event, data) + len;

		if (stats)
			stats->emitted++;
		if (size > sizeof(*rec))
			return;
		if (bpf_ringbuf_output(&hl_events, rec, size, BPF_RB_NO_WAKEUP) < 0 && stats)
			stats->lost++;
	}
}

/* Report `tr` (if the aggregation says so) at observation point `obs` (0: ask the FIB). */
static __always_inline void hl_trace_report(struct __sk_buff *skb, const struct hl_trace *tr,
					    __u8 obs)
{
	const struct hl_trace_config *cfg = hl_trace_on();
	struct hl_event ev = {};
	bool reply = false;

	if (!cfg)
		return;
	skb->mark |= HL_MARK_TRACED;
	if (cfg->flags & HL_TRACE_F_L7)
		hl_l7_capture(skb, cfg, tr);
	if (!hl_trace_aggregate(tr, &reply))
		return;
	if (!obs)
		obs = hl_trace_obs_point(skb, cfg, tr->saddr, tr->daddr);
	hl_event_fill(&ev, skb, tr);
	ev.type = HL_EVENT_TRACE;
	ev.obs_point = obs;
	if (reply)
		ev.flags |= HL_EV_F_REPLY;
	hl_event_emit(&ev);
}

/* A packet the hook redirects itself, after its FIB lookup (hl_fib_redirect). */
static __always_inline void hl_trace_redirect(struct __sk_buff *skb, const struct hl_trace *tr,
					      __be32 daddr, long fib_ret, __u32 ifindex,
					      bool to_pod)
{
	const struct hl_trace_config *cfg = hl_trace_on();

	if (cfg)
		hl_trace_report(skb, tr, hl_trace_point(cfg, daddr, fib_ret, ifindex, to_pod));
}

/* A drop, with whatever of the packet is known (`tr` may be zeroed). */
static __always_inline void hl_drop_report(struct __sk_buff *skb, const struct hl_trace *tr,
					   __u32 reason)
{
	struct hl_event ev = {};

	if (!hl_trace_on())
		return;
	hl_event_fill(&ev, skb, tr);
	ev.type = HL_EVENT_DROP;
	ev.reason = reason;
	hl_event_emit(&ev);
}

#endif /* HEXLANE_EVENTS_H */
