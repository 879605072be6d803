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
 * ICMP echo is translated too, its identifier standing for the port (source side on the echo
 *   request going out, destination side on the reply coming back), so pods can ping out.
 * Everything else passes untouched, also malformed packets and fragments: judging them is not
 * this program's job. The programs sit behind the load balancer's (tc priority 2 after 1),
 * which hands on what it does not translate.
 *
 * Headers and rewrites are the load balancer's (parse.h, csum.h); the maps are masq.h's, and
 * the counters of drops by reason and direction, hl_metrics (metrics.h), which this object
 * shares with the load balancer's (a pod's packets dropped here are EGRESS, replies to pods
 * INGRESS).
 */
#include "common.h"
#include "parse.h"
#include "csum.h"
#include "masq.h"
#include "metrics.h"

/* Every packet not dropped goes on to the next filter (and, after the last, on its way), so
 * programs attached behind ours still see it. */
#define MASQ_PASS TC_ACT_UNSPEC

static __always_inline void masq_count(__u32 slot)
{
	__u64 *count = bpf_map_lookup_elem(&hl_masq4_stats, &slot);

	if (count)
		__sync_fetch_and_add(count, 1);
}

static __always_inline bool masq_exempt(__be32 daddr)
{
	struct masq4_nonmasq_key key = { .prefixlen = 32, .addr = daddr };

	return bpf_map_lookup_elem(&hl_masq4_nonmasq, &key) != NULL;
}

/* The egress entry of a new flow: a free NAT port, claimed through its reply entry. */
static __always_inline struct snat4_entry *masq_new_flow(const struct pkt4 *p,
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

/* Both programs' body. `egress`: a pod's packet on its way out gets the node's address and a
 * NAT port as source; else a reply coming in gets the pod's back as destination.
 */
static __always_inline int masq_handle(struct __sk_buff *skb, bool egress)
{
	const struct masq4_config *cfg;
	struct snat4_entry *nat;
	struct snat4_key key = {};
	struct pkt4 p = {};
	__u32 zero = 0;
	int ret;

	if (hl_parse_ipv4_echo(skb, &p, egress ? HL_ICMP_ECHO : HL_ICMP_ECHOREPLY) != PARSE_OK)
		return MASQ_PASS;
	cfg = bpf_map_lookup_elem(&hl_masq4_config, &zero);
	if (!cfg || !cfg->enabled)
		return MASQ_PASS;
	if (egress ? (p.saddr & cfg->pod_mask) != cfg->pod_net || masq_exempt(p.daddr)
		   : p.daddr != cfg->node_ip)
		return MASQ_PASS;

	key.saddr = p.saddr;
	key.daddr = p.daddr;
	key.sport = p.sport;
	key.dport = p.dport;
	key.proto = p.proto;
	key.dir = egress ? SNAT_DIR_EGRESS : SNAT_DIR_INGRESS;
	nat = bpf_map_lookup_elem(&hl_snat4, &key);
	if (nat) {
		nat->last_seen_ns = bpf_ktime_get_ns();
	} else if (egress) {
		nat = masq_new_flow(&p, cfg, &key);
		if (!nat) {
			masq_count(MASQ_STAT_NO_PORT);
			hl_count(skb, HL_DROP_SNAT_PORTS, HL_DIR_EGRESS);
			return TC_ACT_SHOT;
		}
	} else {
		return MASQ_PASS;
	}
	ret = __hl_rewrite_side(skb, &p, egress, nat->to_addr, nat->to_port,
				p.proto == IPPROTO_ICMP);
	if (ret < 0) {
		masq_count(MASQ_STAT_REWRITE);
		hl_count(skb, -ret, egress ? HL_DIR_EGRESS : HL_DIR_INGRESS);
		return TC_ACT_SHOT;
	}
	masq_count(egress ? MASQ_STAT_EGRESS : MASQ_STAT_INGRESS);
	return MASQ_PASS;
}

SEC("tc")
int hl_masq_egress(struct __sk_buff *skb)
{
	return masq_handle(skb, true);
}

SEC("tc")
int hl_masq_ingress(struct __sk_buff *skb)
{
	return masq_handle(skb, false);
}

char _license[] SEC("license") = "Dual BSD/GPL";
