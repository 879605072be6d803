/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Reading an IPv4 TCP/UDP packet's headers, with every bound checked.
 *
 * hl_parse_ipv4 fills a struct pkt4 or says why it cannot: not for us (pass it on), or
 * malformed/truncated (drop it, with the reason). Fragments are passed on untouched: only a
 * first fragment carries ports, and following ones would need a fragment map (not built yet).
 * hl_parse_ipv4_echo (the masquerade's) takes an ICMP echo of one type too, its identifier
 * standing for a port: the source port of a request, the destination port of a reply.
 */
#ifndef HEXLANE_PARSE_H
#define HEXLANE_PARSE_H

#include "common.h"

#define PARSE_OK 0
#define PARSE_PASS 1 /* not IPv4 TCP/UDP (or a fragment): none of our business */

#define HL_ICMP_ECHOREPLY 0
#define HL_ICMP_ECHO      8
#define HL_NO_ECHO        (-1) /* hl_parse_ipv4: ICMP is not ours */

struct hl_icmp_echo {
	__u8 type;
	__u8 code;
	__sum16 checksum;
	__be16 id;
	__be16 seq;
};

struct pkt4 {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;   /* ICMP echo: the identifier on a request, 0 on a reply */
	__be16 dport;   /* ICMP echo: 0 on a request, the identifier on a reply */
	__u8 proto;
	__u8 tcp_flags; /* FIN 0x01, SYN 0x02, RST 0x04, ACK 0x10; 0 for UDP and ICMP */
	__u16 l3_off;
	__u16 l4_off;
	__u16 csum_off;  /* offset of the L4 checksum field */
	__u16 csum_flags; /* BPF_F_MARK_MANGLED_0 for UDP, whose checksum 0 means "none" */
	__u16 pad2;
};

/* Returns PARSE_OK, PARSE_PASS, or -(enum hl_drop_reason). `echo_type`: HL_ICMP_ECHO or
 * HL_ICMP_ECHOREPLY for the ICMP echos to take as well, HL_NO_ECHO for none.
 */
static __always_inline int __hl_parse_ipv4(struct __sk_buff *skb, struct pkt4 *p, int echo_type)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip4;
	__u32 ihl_len;

	if ((void *)(eth + 1) > data_end)
		return -HL_DROP_TRUNCATED;
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return PARSE_PASS;
	ip4 = (void *)(eth + 1);
	if ((void *)(ip4 + 1) > data_end)
		return -HL_DROP_TRUNCATED;
	if (ip4->version != 4 || ip4->ihl < 5)
		return -HL_DROP_INVALID_IP;
	ihl_len = (__u32)ip4->ihl * 4;
	if (bpf_ntohs(ip4->tot_len) < ihl_len)
		return -HL_DROP_INVALID_IP;
	if ((void *)ip4 + ihl_len > data_end)
		return -HL_DROP_TRUNCATED;
	if (ip4->protocol != IPPROTO_TCP && ip4->protocol != IPPROTO_UDP &&
	    (echo_type == HL_NO_ECHO || ip4->protocol != IPPROTO_ICMP))
		return PARSE_PASS;
	/* MF set or a non-zero offset: a fragment */
	if (ip4->frag_off & bpf_htons(0x3fff))
		return PARSE_PASS;

	p->saddr = ip4->saddr;
	p->daddr = ip4->daddr;
	p->proto = ip4->protocol;
	p->l3_off = sizeof(struct ethhdr);
	p->l4_off = sizeof(struct ethhdr) + ihl_len;

	if (p->proto == IPPROTO_TCP) {
		struct tcphdr *th = (void *)ip4 + ihl_len;

		if ((void *)(th + 1) > data_end)
			return -HL_DROP_TRUNCATED;
		if (th->doff < 5)
			return -HL_DROP_INVALID_L4;
		p->sport = th->source;
		p->dport = th->dest;
		p->tcp_flags = ((__u8 *)th)[13];
		p->csum_off = p->l4_off + offsetof(struct tcphdr, check);
		p->csum_flags = 0;
	} else if (echo_type == HL_NO_ECHO || p->proto == IPPROTO_UDP) {
		struct udphdr *uh = (void *)ip4 + ihl_len;

		if ((void *)(uh + 1) > data_end)
			return -HL_DROP_TRUNCATED;
		p->sport = uh->source;
		p->dport = uh->dest;
		p->tcp_flags = 0;
		p->csum_off = p->l4_off + offsetof(struct udphdr, check);
		p->csum_flags = BPF_F_MARK_MANGLED_0;
	} else {
		struct hl_icmp_echo *echo = (void *)ip4 + ihl_len;

		if ((void *)(echo + 1) > data_end)
			return -HL_DROP_TRUNCATED;
		if (echo->type != echo_type || echo->code != 0)
			return PARSE_PASS;
		p->sport = echo_type == HL_ICMP_ECHO ? echo->id : 0;
		p->dport = echo_type == HL_ICMP_ECHO ? 0 : echo->id;
		p->tcp_flags = 0;
		p->csum_off = p->l4_off + offsetof(struct hl_icmp_echo, checksum);
		p->csum_flags = 0;
	}
	return PARSE_OK;
}

static __always_inline int hl_parse_ipv4(struct __sk_buff *skb, struct pkt4 *p)
{
	return __hl_parse_ipv4(skb, p, HL_NO_ECHO);
}

static __always_inline int hl_parse_ipv4_echo(struct __sk_buff *skb, struct pkt4 *p,
					      int echo_type)
{
	return __hl_parse_ipv4(skb, p, echo_type);
}

#endif /* HEXLANE_PARSE_H */
