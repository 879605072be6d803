/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Rewriting addresses and ports with incremental L3/L4 checksum updates. */
#ifndef HEXLANE_CSUM_H
#define HEXLANE_CSUM_H

#include "common.h"
#include "parse.h"

#define IP_SADDR_OFF (sizeof(struct ethhdr) + offsetof(struct iphdr, saddr))
#define IP_DADDR_OFF (sizeof(struct ethhdr) + offsetof(struct iphdr, daddr))
#define IP_CSUM_OFF  (sizeof(struct ethhdr) + offsetof(struct iphdr, check))

/* Replace the IPv4 address at addr_off (saddr or daddr) and fix the IP header checksum and,
 * when `l4_pseudo` (TCP, UDP: not ICMP), the L4 one, which covers the address through the
 * pseudo header. Returns 0 or -(enum hl_drop_reason).
 */
static __always_inline int __hl_rewrite_addr(struct __sk_buff *skb, const struct pkt4 *p,
					     __u32 addr_off, __be32 old_addr, __be32 new_addr,
					     bool l4_pseudo)
{
	if (old_addr == new_addr)
		return 0;
	if (l4_pseudo && bpf_l4_csum_replace(skb, p->csum_off, old_addr, new_addr,
					     p->csum_flags | BPF_F_PSEUDO_HDR | sizeof(new_addr)) < 0)
		return -HL_DROP_CSUM;
	if (bpf_l3_csum_replace(skb, IP_CSUM_OFF, old_addr, new_addr, sizeof(new_addr)) < 0)
		return -HL_DROP_CSUM;
	if (bpf_skb_store_bytes(skb, addr_off, &new_addr, sizeof(new_addr), 0) < 0)
		return -HL_DROP_WRITE;
	return 0;
}

/* Replace the L4 port at port_off (source or destination) and fix the L4 checksum. */
static __always_inline int hl_rewrite_port(struct __sk_buff *skb, const struct pkt4 *p,
					   __u32 port_off, __be16 old_port, __be16 new_port)
{
	if (old_port == new_port)
		return 0;
	if (bpf_l4_csum_replace(skb, p->csum_off, old_port, new_port,
				p->csum_flags | sizeof(new_port)) < 0)
		return -HL_DROP_CSUM;
	if (bpf_skb_store_bytes(skb, port_off, &new_port, sizeof(new_port), 0) < 0)
		return -HL_DROP_WRITE;
	return 0;
}

/* Rewrite one side of the packet, its `source` or its destination, to addr:port. `echo`: the
 * packet is an ICMP echo, whose identifier stands for both ports and whose checksum has no
 * pseudo header. Returns 0 or -(enum hl_drop_reason).
 */
static __always_inline int __hl_rewrite_side(struct __sk_buff *skb, const struct pkt4 *p,
					     bool source, __be32 addr, __be16 port, bool echo)
{
	__u32 port_off;
	int ret;

	ret = __hl_rewrite_addr(skb, p, source ? IP_SADDR_OFF : IP_DADDR_OFF,
				source ? p->saddr : p->daddr, addr, !echo);
	if (ret < 0)
		return ret;
	port_off = p->l4_off + (echo ? offsetof(struct hl_icmp_echo, id) :
				source ? offsetof(struct udphdr, source) :
				offsetof(struct udphdr, dest));
	ret = hl_rewrite_port(skb, p, port_off, source ? p->sport : p->dport, port);
	if (ret < 0)
		return ret;
	return 0;
}

/* A TCP/UDP packet's source (destination) becomes addr:port. */
static __always_inline int hl_rewrite_src(struct __sk_buff *skb, const struct pkt4 *p,
					  __be32 addr, __be16 port)
{
	return __hl_rewrite_side(skb, p, true, addr, port, false);
}

static __always_inline int hl_rewrite_dst(struct __sk_buff *skb, const struct pkt4 *p,
					  __be32 addr, __be16 port)
{
	return __hl_rewrite_side(skb, p, false, addr, port, false);
}

#endif /* HEXLANE_CSUM_H */
