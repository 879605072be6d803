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
 * Self-contained on purpose: parse.h/csum.h/drop.h pull in hexlane_maps.h, whose pinned maps
 * (the Maglev map-in-map among them, sized at build time) this object must not create.
 */
#include "common.h"
#include "masq.h"

/* Every packet not dropped goes on to the next filter (and, after the last, on its way), so
 * programs attached behind ours still see it. */
#define MASQ_PASS TC_ACT_UNSPEC

#define IP_CSUM_OFF   (sizeof(struct ethhdr) + offsetof(struct iphdr, check))
#define IP_SADDR_OFF  (sizeof(struct ethhdr) + offsetof(struct iphdr, saddr))
#define IP_DADDR_OFF  (sizeof(struct ethhdr) + offsetof(struct iphdr, daddr))
#define ICMP_ECHOREPLY 0
#define ICMP_ECHO      8

struct masq_icmp_echo {
	__u8 type;
	__u8 code;
	__sum16 checksum;
	__be16 id;
	__be16 seq;
};

struct masq_pkt {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;     /* ICMP echo: the identifier on the request, 0 on the reply */
	__be16 dport;     /* ICMP echo: 0 on the request, the identifier on the reply */
	__u32 sport_off;
	__u32 dport_off;
	__u32 csum_off;
	__u32 csum_flags;
	__u8 proto;
	__u8 pseudo;      /* the L4 checksum covers the addresses (TCP, UDP; not ICMP) */
};

static __always_inline void masq_count(__u32 slot)
{
	__u64 *count = bpf_map_lookup_elem(&hl_masq4_stats, &slot);

	if (count)
		__sync_fetch_and_add(count, 1);
}

/* true when the packet is an unfragmented IPv4 TCP/UDP packet whose headers are all there,
 * or an ICMP echo of the type `echo_type` (requests go out, replies come in)
 */
static __always_inline bool masq_parse(struct __sk_buff *skb, struct masq_pkt *p,
				       __u8 echo_type)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip4;
	__u32 ihl_len, l4_off;

	if ((void *)(eth + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return false;
	ip4 = (void *)(eth + 1);
	if ((void *)(ip4 + 1) > data_end || ip4->version != 4 || ip4->ihl < 5)
		return false;
	if (ip4->frag_off & bpf_htons(0x3fff))
		return false;
	ihl_len = (__u32)ip4->ihl * 4;
	if ((void *)ip4 + ihl_len > data_end)
		return false;
	p->saddr = ip4->saddr;
	p->daddr = ip4->daddr;
	p->proto = ip4->protocol;
	l4_off = sizeof(struct ethhdr) + ihl_len;
	/* TCP and UDP both start with source and destination port */
	p->sport_off = l4_off + offsetof(struct udphdr, source);
	p->dport_off = l4_off + offsetof(struct udphdr, dest);
	p->pseudo = 1;
	if (p->proto == IPPROTO_TCP) {
		struct tcphdr *th = (void *)ip4 + ihl_len;

		if ((void *)(th + 1) > data_end)
			return false;
		p->sport = th->source;
		p->dport = th->dest;
		p->csum_off = l4_off + offsetof(struct tcphdr, check);
		p->csum_flags = 0;
		return true;
	}
	if (p->proto == IPPROTO_UDP) {
		struct udphdr *uh = (void *)ip4 + ihl_len;

		if ((void *)(uh + 1) > data_end)
			return false;
		p->sport = uh->source;
		p->dport = uh->dest;
		p->csum_off = l4_off + offsetof(struct udphdr, check);
		p->csum_flags = BPF_F_MARK_MANGLED_0; /* UDP checksum 0 means "none": keep it so */
		return true;
	}
	if (p->proto == IPPROTO_ICMP) {
		struct masq_icmp_echo *echo = (void *)ip4 + ihl_len;

		if ((void *)(echo + 1) > data_end || echo->type != echo_type || echo->code != 0)
			return false;
		p->sport = echo_type == ICMP_ECHO ? echo->id : 0;
		p->dport = echo_type == ICMP_ECHO ? 0 : echo->id;
		p->sport_off = p->dport_off = l4_off + offsetof(struct masq_icmp_echo, id);
		p->csum_off = l4_off + offsetof(struct masq_icmp_echo, checksum);
		p->csum_flags = 0;
		p->pseudo = 0;
		return true;
	}
	return false;
}

/* Rewrite an address (and, through the pseudo header, the L4 checksum) and a port. */
static __always_inline int masq_rewrite(struct __sk_buff *skb, const struct masq_pkt *p,
					__u32 addr_off, __be32 old_addr, __be32 new_addr,
					__u32 port_off, __be16 old_port, __be16 new_port)
{
	if (p->pseudo && bpf_l4_csum_replace(skb, p->csum_off, old_addr, new_addr,
					     p->csum_flags | BPF_F_PSEUDO_HDR | sizeof(new_addr)) < 0)
		return -1;
	if (bpf_l3_csum_replace(skb, IP_CSUM_OFF, old_addr, new_addr, sizeof(new_addr)) < 0)
		return -1;
	if (bpf_skb_store_bytes(skb, addr_off, &new_addr, sizeof(new_addr), 0) < 0)
		return -1;
	if (old_port == new_port)
		return 0;
	if (bpf_l4_csum_replace(skb, p->csum_off, old_port, new_port,
				p->csum_flags | sizeof(new_port)) < 0)
		return -1;
	if (bpf_skb_store_bytes(skb, port_off, &new_port, sizeof(new_port), 0) < 0)
		return -1;
	return 0;
}

static __always_inline bool masq_exempt(__be32 daddr)
{
	struct masq4_nonmasq_key key = { .prefixlen = 32, .addr = daddr };

	return bpf_map_lookup_elem(&hl_masq4_nonmasq, &key) != NULL;
}

/* The egress entry of a new flow: a free NAT port, claimed through its reply entry. */
static __always_inline struct snat4_entry *masq_new_flow(const struct masq_pkt *p,
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
	struct masq_pkt p = {};
	__u32 zero = 0;

	if (!masq_parse(skb, &p, ICMP_ECHO))
		return MASQ_PASS;
	cfg = bpf_map_lookup_elem(&hl_masq4_config, &zero);
	if (!cfg || !cfg->enabled)
		return MASQ_PASS;
	if ((p.saddr & cfg->pod_mask) != cfg->pod_net || masq_exempt(p.daddr))
		return MASQ_PASS;

	key.saddr = p.saddr;
	key.daddr = p.daddr;
	key.sport = p.sport;
	key.dport = p.dport;
	key.proto = p.proto;
	key.dir = SNAT_DIR_EGRESS;
	nat = bpf_map_lookup_elem(&hl_snat4, &key);
	if (!nat) {
		nat = masq_new_flow(&p, cfg, &key);
		if (!nat) {
			masq_count(MASQ_STAT_NO_PORT);
			return TC_ACT_SHOT;
		}
	} else {
		nat->last_seen_ns = bpf_ktime_get_ns();
	}
	if (masq_rewrite(skb, &p, IP_SADDR_OFF, p.saddr, nat->to_addr,
			 p.sport_off, p.sport, nat->to_port) < 0) {
		masq_count(MASQ_STAT_REWRITE);
		return TC_ACT_SHOT;
	}
	masq_count(MASQ_STAT_EGRESS);
	return MASQ_PASS;
}

SEC("tc")
int hl_masq_ingress(struct __sk_buff *skb)
{
	const struct masq4_config *cfg;
	struct snat4_entry *nat;
	struct snat4_key key = {};
	struct masq_pkt p = {};
	__u32 zero = 0;

	if (!masq_parse(skb, &p, ICMP_ECHOREPLY))
		return MASQ_PASS;
	cfg = bpf_map_lookup_elem(&hl_masq4_config, &zero);
	if (!cfg || !cfg->enabled || p.daddr != cfg->node_ip)
		return MASQ_PASS;

	key.saddr = p.saddr;
	key.daddr = p.daddr;
	key.sport = p.sport;
	key.dport = p.dport;
	key.proto = p.proto;
	key.dir = SNAT_DIR_INGRESS;
	nat = bpf_map_lookup_elem(&hl_snat4, &key);
	if (!nat)
		return MASQ_PASS;
	nat->last_seen_ns = bpf_ktime_get_ns();
	if (masq_rewrite(skb, &p, IP_DADDR_OFF, p.daddr, nat->to_addr,
			 p.dport_off, p.dport, nat->to_port) < 0) {
		masq_count(MASQ_STAT_REWRITE);
		return TC_ACT_SHOT;
	}
	masq_count(MASQ_STAT_INGRESS);
	return MASQ_PASS;
}

char _license[] SEC("license") = "Dual BSD/GPL";
