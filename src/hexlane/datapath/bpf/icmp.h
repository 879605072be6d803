/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Rejecting a packet with ICMP "destination unreachable / port unreachable".
 *
 * A Service without backends must not blackhole its clients (Cilium's default
 * service-no-backend-response=reject): the packet is turned, in place, into the ICMP error a
 * host would send (quoting the offending IP header and 8 bytes of its payload), addressed from
 * the frontend back to the client, and redirected out of the device it came in on. Clients see
 * ECONNREFUSED (TCP) or a port-unreachable error (UDP) at once.
 *
 * A packet a local socket sent through a veth may still carry CHECKSUM_PARTIAL (its L4
 * checksum left to a NIC); BPF cannot clear that state, so the reply keeps it. That is harmless
 * where such packets come from, a veth: nothing computes the checksum on the way back and the
 * receiving stack trusts partial checksums. Packets from a physical NIC are never partial.
 */
#ifndef HEXLANE_ICMP_H
#define HEXLANE_ICMP_H

#include "common.h"
#include "parse.h"

#define HL_ICMP_DEST_UNREACH 3
#define HL_ICMP_PORT_UNREACH 3
#define HL_ICMP_QUOTE_MAX (60 + 8) /* the longest IPv4 header and 8 bytes of its payload */

struct hl_icmp_unreach {
	__u8 type;
	__u8 code;
	__sum16 checksum;
	__u32 unused;
};

static __always_inline __u16 hl_csum_fold(__s64 sum)
{
	__u32 s = (__u32)sum;

	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__u16)~s;
}

/* Rewrite the packet into the ICMP error for it; returns TC_ACT_REDIRECT, or
 * -(enum hl_drop_reason) when it could not.
 */
static __always_inline int hl_icmp_reject(struct __sk_buff *skb, const struct pkt4 *p)
{
	__u8 quote[HL_ICMP_QUOTE_MAX] = {};
	struct hl_icmp_unreach icmp = {
		.type = HL_ICMP_DEST_UNREACH,
		.code = HL_ICMP_PORT_UNREACH,
	};
	struct iphdr ip = {};
	__u8 macs[12], swapped[12];
	__u32 quote_len, icmp_off;
	__s64 sum;

	quote_len = (__u32)(p->l4_off - p->l3_off) + 8;
	if (quote_len < 28 || quote_len > HL_ICMP_QUOTE_MAX)
		return -HL_DROP_INVALID_IP;
	if (bpf_skb_load_bytes(skb, p->l3_off, quote, quote_len) < 0)
		return -HL_DROP_TRUNCATED;
	if (bpf_skb_load_bytes(skb, 0, macs, sizeof(macs)) < 0)
		return -HL_DROP_TRUNCATED;
	__builtin_memcpy(swapped, macs + 6, 6);
	__builtin_memcpy(swapped + 6, macs, 6);

	icmp_off = sizeof(struct ethhdr) + sizeof(struct iphdr);
	if (bpf_skb_change_tail(skb, icmp_off + sizeof(icmp) + quote_len, 0) < 0)
		return -HL_DROP_WRITE;

	ip.version = 4;
	ip.ihl = 5;
	ip.tot_len = bpf_htons(sizeof(ip) + sizeof(icmp) + quote_len);
	ip.ttl = 64;
	ip.protocol = IPPROTO_ICMP;
	ip.saddr = p->daddr;
	ip.daddr = p->saddr;
	sum = bpf_csum_diff(NULL, 0, (__be32 *)&ip, sizeof(ip), 0);
	if (sum < 0)
		return -HL_DROP_CSUM;
	ip.check = hl_csum_fold(sum);

	sum = bpf_csum_diff(NULL, 0, (__be32 *)&icmp, sizeof(icmp), 0);
	if (sum < 0)
		return -HL_DROP_CSUM;
	sum = bpf_csum_diff(NULL, 0, (__be32 *)quote, quote_len & ~3U, sum);
	if (sum < 0)
		return -HL_DROP_CSUM;
	icmp.checksum = hl_csum_fold(sum);

	if (bpf_skb_store_bytes(skb, 0, swapped, sizeof(swapped), 0) < 0 ||
	    bpf_skb_store_bytes(skb, sizeof(struct ethhdr), &ip, sizeof(ip), 0) < 0 ||
	    bpf_skb_store_bytes(skb, icmp_off, &icmp, sizeof(icmp), 0) < 0 ||
	    bpf_skb_store_bytes(skb, icmp_off + sizeof(icmp), quote, quote_len, 0) < 0)
		return -HL_DROP_WRITE;
	return bpf_redirect(skb->ifindex, 0);
}

#endif /* HEXLANE_ICMP_H */
