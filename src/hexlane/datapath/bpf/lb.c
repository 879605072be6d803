// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* hexlane's IPv4 service load balancer, for tc (clsact) hooks.
 *
 * hl_from_client: a packet to a service frontend (address, port, protocol) gets a backend
 *   (conntrack first, then session affinity, then random or Maglev per service), is DNATed to
 *   it with L3/L4 checksums fixed, and the flow is remembered. A service without backends
 *   rejects the packet with ICMP port unreachable sent back out of the device (icmp.h); it
 *   is counted as HL_DROP_NO_BACKEND, since it never reaches a backend.
 * hl_to_client: a reply from a backend (matched through conntrack) gets its source turned
 *   back into the service frontend.
 * Anything that is not IPv4 TCP/UDP, or not for a service, passes untouched. Malformed or
 * truncated packets are dropped and counted by reason in hl_drops.
 */
#include "common.h"
#include "hexlane_maps.h"
#include "drop.h"
#include "parse.h"
#include "csum.h"
#include "conntrack.h"
#include "lb.h"
#include "icmp.h"

static __always_inline int hl_dnat(struct __sk_buff *skb, const struct pkt4 *p,
				   const struct lb4_backend *backend)
{
	__be32 addr = backend->address;
	__be16 port = backend->port;
	int ret;

	ret = hl_rewrite_addr(skb, p, IP_DADDR_OFF, p->daddr, addr);
	if (ret < 0)
		return ret;
	return hl_rewrite_port(skb, p, p->l4_off + offsetof(struct udphdr, dest), p->dport, port);
}

SEC("tc")
int hl_from_client(struct __sk_buff *skb)
{
	const struct lb4_service *svc;
	const struct lb4_backend *backend = NULL;
	struct lb4_key key = {};
	struct ct4_key ct_key = {};
	struct ct4_entry *ct;
	struct pkt4 p = {};
	__u32 backend_id = 0;
	bool affinity;
	int ret;

	ret = hl_parse_ipv4(skb, &p);
	if (ret == PARSE_PASS)
		return TC_ACT_OK;
	if (ret < 0)
		return hl_drop(-ret);

	key.address = p.daddr;
	key.dport = p.dport;
	key.proto = p.proto;
	svc = hl_lb4_lookup_service(&key);
	if (!svc)
		return TC_ACT_OK;

	/* An established flow keeps its backend while that backend exists. */
	hl_ct_key_forward(&ct_key, &p, CT_F_SERVICE);
	ct = bpf_map_lookup_elem(&hl_ct4, &ct_key);
	if (ct) {
		backend_id = ct->backend_id;
		backend = bpf_map_lookup_elem(&hl_lb4_backends, &backend_id);
		if (backend)
			hl_ct_touch(ct, skb, &p);
	}

	if (!backend) {
		if (svc->count == 0) {
			hl_drop(HL_DROP_NO_BACKEND);
			ret = hl_icmp_reject(skb, &p);
			return ret < 0 ? hl_drop(-ret) : ret;
		}
		affinity = svc->flags & SVC_FLAG_AFFINITY;
		backend_id = affinity ? hl_lb4_affinity_backend(svc, p.saddr) : 0;
		if (backend_id)
			backend = bpf_map_lookup_elem(&hl_lb4_backends, &backend_id);
		if (!backend) {
			backend_id = hl_lb4_select_backend(&key, svc, &p);
			backend = bpf_map_lookup_elem(&hl_lb4_backends, &backend_id);
			if (!backend)
				return hl_drop(HL_DROP_BACKEND_MISSING);
		}
		if (affinity)
			hl_lb4_update_affinity(svc, p.saddr, backend_id);

		ret = hl_ct_create(&ct_key, skb, backend_id, svc->rev_nat_index);
		if (ret < 0)
			return hl_drop(-ret);
		/* The reply entry is keyed by the translated tuple. */
		ct_key.daddr = backend->address;
		ct_key.dport = backend->port;
		ct_key.flags = CT_F_REPLY;
		ret = hl_ct_create(&ct_key, skb, backend_id, svc->rev_nat_index);
		if (ret < 0)
			return hl_drop(-ret);
	}

	ret = hl_dnat(skb, &p, backend);
	if (ret < 0)
		return hl_drop(-ret);
	return TC_ACT_OK;
}

SEC("tc")
int hl_to_client(struct __sk_buff *skb)
{
	const struct lb4_reverse_nat *nat;
	struct ct4_key ct_key = {};
	struct ct4_entry *ct;
	struct pkt4 p = {};
	__u16 rev_nat_index;
	int ret;

	ret = hl_parse_ipv4(skb, &p);
	if (ret == PARSE_PASS)
		return TC_ACT_OK;
	if (ret < 0)
		return hl_drop(-ret);

	hl_ct_key_reply(&ct_key, &p);
	ct = bpf_map_lookup_elem(&hl_ct4, &ct_key);
	if (!ct)
		return TC_ACT_OK;
	hl_ct_touch(ct, skb, &p);
	rev_nat_index = ct->rev_nat_index;
	nat = bpf_map_lookup_elem(&hl_lb4_revnat, &rev_nat_index);
	if (!nat)
		return hl_drop(HL_DROP_REPLY_NAT);

	ret = hl_rewrite_addr(skb, &p, IP_SADDR_OFF, p.saddr, nat->address);
	if (ret < 0)
		return hl_drop(-ret);
	ret = hl_rewrite_port(skb, &p, p.l4_off + offsetof(struct udphdr, source), p.sport,
			      nat->port);
	if (ret < 0)
		return hl_drop(-ret);
	return TC_ACT_OK;
}

char _license[] SEC("license") = "Dual BSD/GPL";
