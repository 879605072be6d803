/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Connection tracking for the load balancer, in the hl_ct4 LRU map.
 *
 * A new flow to a service gets two entries: CT_F_SERVICE keyed by the tuple as the client sent
 * it (client -> frontend), remembering the backend so later packets keep it; and CT_F_REPLY
 * keyed by the tuple after DNAT (client -> backend), so a reply (backend -> client) finds the
 * service's reverse NAT. The LRU evicts idle flows under pressure; the agent expires the rest
 * by last_seen_ns (hexlane.datapath.lb.conntrack), sooner once a FIN or RST marked them closing.
 */
#ifndef HEXLANE_CONNTRACK_H
#define HEXLANE_CONNTRACK_H

#include "common.h"
#include "hexlane_maps.h"
#include "parse.h"

static __always_inline void hl_ct_key(struct ct4_key *key, __be32 saddr, __be32 daddr,
				     __be16 sport, __be16 dport, __u8 proto, __u8 flags)
{
	key->saddr = saddr;
	key->daddr = daddr;
	key->sport = sport;
	key->dport = dport;
	key->proto = proto;
	key->flags = flags;
	key->pad = 0;
}

/* The key of a packet's own tuple, as it came. */
static __always_inline void hl_ct_key_forward(struct ct4_key *key, const struct pkt4 *p, __u8 flags)
{
	hl_ct_key(key, p->saddr, p->daddr, p->sport, p->dport, p->proto, flags);
}

/* The CT_F_REPLY key a reply packet (backend -> client) belongs to. */
static __always_inline void hl_ct_key_reply(struct ct4_key *key, const struct pkt4 *p)
{
	hl_ct_key(key, p->daddr, p->saddr, p->dport, p->sport, p->proto, CT_F_REPLY);
}

#define HL_TCP_FIN 0x01
#define HL_TCP_SYN 0x02
#define HL_TCP_RST 0x04
#define HL_TCP_ACK 0x10

static __always_inline void hl_ct_touch(struct ct4_entry *entry, struct __sk_buff *skb,
					const struct pkt4 *p)
{
	if (p->tcp_flags & (HL_TCP_FIN | HL_TCP_RST))
		entry->flags |= CT_ENTRY_F_CLOSING;
	else if ((p->tcp_flags & (HL_TCP_SYN | HL_TCP_ACK)) == HL_TCP_SYN)
		entry->flags &= ~CT_ENTRY_F_CLOSING; /* the tuple reused by a new connection */
	entry->last_seen_ns = bpf_ktime_get_ns();
	__sync_fetch_and_add(&entry->packets, 1);
	__sync_fetch_and_add(&entry->bytes, skb->len);
}

static __always_inline int hl_ct_create(const struct ct4_key *key, struct __sk_buff *skb,
					__u32 backend_id, __u16 rev_nat_index)
{
	/* A new flow: any earlier entry under this key (a reused port) starts over. */
	struct ct4_entry entry = {
		.last_seen_ns = bpf_ktime_get_ns(),
		.packets = 1,
		.bytes = skb->len,
		.backend_id = backend_id,
		.rev_nat_index = rev_nat_index,
	};

	if (bpf_map_update_elem(&hl_ct4, key, &entry, BPF_ANY) < 0)
		return -HL_DROP_CT_CREATE;
	return 0;
}

#endif /* HEXLANE_CONNTRACK_H */
