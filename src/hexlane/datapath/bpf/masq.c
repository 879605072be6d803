// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* hexlane's IPv4 masquerading on the node's external interface, for tc (clsact) hooks.
 *
 * hl_masq_egress: a TCP/UDP packet from a pod of this node (source in the node's pod CIDR) to
 *   a destination outside every non-masquerade prefix (ipv4NativeRoutingCIDR, pod CIDRs, node
 *   IPs) leaves with the node's IP and a NAT port. The first packet of a flow picks a port
 *   from [port_min, port_max] free for that (remote address, remote port, protocol), claiming
 *   the reply entry with BPF_NOEXIST so two flows never share one; both directions are kept
 *   in the hl_snat4 LRU.
 * hl_masq_ingress: a reply to the node IP on a NAT port gets its destination turned back into
 *   the pod's address and port before the kernel routes it (to the pod's veth).
 * Everything else passes untouched (also malformed packets: judging them is not ours here).
 */
#include "common.h"
#include "hexlane_maps.h"
#include "drop.h"
#include "parse.h"
#include "csum.h"
#include "masq.h"

#define L4_SPORT_OFF(p) ((p)->l4_off + offsetof(struct udphdr, source))
#define L4_DPORT_OFF(p) ((p)->l4_off + offsetof(struct udphdr, dest))

static __always_inline bool hl_masq_exempt(__be32 daddr)
{
	struct masq4_nonmasq_key key = { .prefixlen = 32, .addr = daddr };

	return bpf_map_lookup_elem(&hl_masq4_nonmasq, &key) != NULL;
}

/* The egress entry of a new flow: a free NAT port claimed through its reply entry. */
static __always_inline struct snat4_entry *hl_snat_new(const struct pkt4 *p,
							const struct masq4_config *cfg,
							const struct snat4_key *key)
{
	struct snat4_key rkey = {
		.saddr = p->daddr, .daddr = cfg->node_ip, .sport = p->dport,
		.proto = p->proto, .dir = SNAT_DIR_INGRESS,
	};
	struct snat4_entry rval = { .to_addr = p->saddr, .to_port = p->sport };
	struct snat4_entry fval = { .to_addr = cfg->node_ip };
	__u32 range, start, i;
	__u16 port = 0;

	if (cfg->port_max < cfg->port_min)
		return NULL;
	range = (__u32)cfg->port_max - cfg->port_min + 1;
	start = bpf_get_prandom_u32() % range;
	rval.last_seen_ns = bpf_ktime_get_ns();
	for (i = 0; i < MASQ_PORT_TRIES; i++) {
		port = cfg->port_min + (start + i) % range;
		rkey.dport = bpf_htons(port);
		if (bpf_map_update_elem(&hl_snat4, &rkey, &rval, BPF_NOEXIST) == 0)
			break;
	}
	if (i == MASQ_PORT_TRIES)
		return NULL;
	fval.to_port = bpf_htons(port);
	fval.last_seen_ns = rval.last_seen_ns;
	if (bpf_map_update_elem(&hl_snat4, key, &fval, BPF_ANY) < 0) {
		bpf_map_delete_elem(&hl_snat4, &rkey);
		return NULL;
	}
	return bpf_map_lookup_elem(&hl_snat4, key);
}

SEC("tc")
int hl_masq_egress(struct __sk_buff *skb)
{
	const struct masq4_config *cfg;
	struct snat4_entry *nat;
	struct snat4_key key = {};
	struct pkt4 p = {};
	__u32 zero = 0;
	int ret;

	if (hl_parse_ipv4(skb, &p) != PARSE_OK)
		return TC_ACT_OK;
	cfg = bpf_map_lookup_elem(&hl_masq4_config, &zero);
	if (!cfg || !cfg->enabled)
		return TC_ACT_OK;
	if ((p.saddr & cfg->pod_mask) != cfg->pod_net || hl_masq_exempt(p.daddr))
		return TC_ACT_OK;

	key.saddr = p.saddr;
	key.daddr = p.daddr;
	key.sport = p.sport;
	key.dport = p.dport;
	key.proto = p.proto;
	key.dir = SNAT_DIR_EGRESS;
	nat = bpf_map_lookup_elem(&hl_snat4, &key);
	if (!nat) {
		nat = hl_snat_new(&p, cfg, &key);
		if (!nat)
			return hl_drop(HL_DROP_CT_CREATE);
	} else {
		nat->last_seen_ns = bpf_ktime_get_ns();
	}
	ret = hl_rewrite_addr(skb, &p, IP_SADDR_OFF, p.saddr, nat->to_addr);
	if (ret < 0)
		return hl_drop(-ret);
	ret = hl_rewrite_port(skb, &p, L4_SPORT_OFF(&p), p.sport, nat->to_port);
	if (ret < 0)
		return hl_drop(-ret);
	return TC_ACT_OK;
}

SEC("tc")
int hl_masq_ingress(struct __sk_buff *skb)
{
	const struct masq4_config *cfg;
	struct snat4_entry *nat;
	struct snat4_key key = {};
	struct pkt4 p = {};
	__u32 zero = 0;
	int ret;

	if (hl_parse_ipv4(skb, &p) != PARSE_OK)
		return TC_ACT_OK;
	cfg = bpf_map_lookup_elem(&hl_masq4_config, &zero);
	if (!cfg || !cfg->enabled || p.daddr != cfg->node_ip)
		return TC_ACT_OK;

	key.saddr = p.saddr;
	key.daddr = p.daddr;
	key.sport = p.sport;
	key.dport = p.dport;
	key.proto = p.proto;
	key.dir = SNAT_DIR_INGRESS;
	nat = bpf_map_lookup_elem(&hl_snat4, &key);
	if (!nat)
		return TC_ACT_OK;
	nat->last_seen_ns = bpf_ktime_get_ns();
	ret = hl_rewrite_addr(skb, &p, IP_DADDR_OFF, p.daddr, nat->to_addr);
	if (ret < 0)
		return hl_drop(-ret);
	ret = hl_rewrite_port(skb, &p, L4_DPORT_OFF(&p), p.dport, nat->to_port);
	if (ret < 0)
		return hl_drop(-ret);
	return TC_ACT_OK;
}

char _license[] SEC("license") = "Dual BSD/GPL";
