/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* L2 announcements: answer ARP requests for the LoadBalancer and external IPs this node
 * announces, from the tc ingress program of the LAN device (as Cilium's bpf_host does).
 *
 * hl_l2_responder_v4 holds one entry per (IP, ingress ifindex) the node announces; the agent
 * keeps it through its reconciler. A request for such an IP arriving on exactly that device
 * is turned around in place into a reply carrying the device's MAC (kept in the entry, since
 * one object serves every device) and sent back out of it; the entry counts the replies, and
 * so does hl_l2_replies, for all of them (an entry's count goes with it when its IP moves).
 * hl_l2_liveness holds the agent's last heartbeat (bpf_ktime_get_ns clock, CLOCK_MONOTONIC)
 * and how old it may get: an agent that stops refreshing it (wedged, SIGSTOPped) stops being
 * answered for after the lease duration, so another node's takeover is not fought.
 * Everything else, other ARP included, passes untouched.
 */
#ifndef HEXLANE_L2_RESPONDER_H
#define HEXLANE_L2_RESPONDER_H

#include "common.h"

#define L2_RESPONDER_MAX_ENTRIES 4096

/* From linux/if_arp.h, which pulls in libc headers the BPF target lacks. */
#define HL_ARPHRD_ETHER 1
#define HL_ARPOP_REQUEST 1
#define HL_ARPOP_REPLY 2

struct l2_responder_v4_key {
	__be32 ip4;
	__u32 ifindex;
};

struct l2_responder_v4_entry {
	__u64 responses_sent;
	__u8 mac[ETH_ALEN]; /* the device's MAC: the reply's sender */
	__u16 pad;
};

struct l2_liveness {
	__u64 agent_ns;     /* the agent's last heartbeat, bpf_ktime_get_ns() clock */
	__u64 max_age_ns;   /* answer only while now - agent_ns <= max_age_ns */
};

HL_PINNED_MAP(BPF_MAP_TYPE_HASH, struct l2_responder_v4_key, struct l2_responder_v4_entry,
	      L2_RESPONDER_MAX_ENTRIES, BPF_F_NO_PREALLOC) hl_l2_responder_v4 SEC(".maps");

HL_PINNED_MAP(BPF_MAP_TYPE_ARRAY, __u32, struct l2_liveness, 1, 0) hl_l2_liveness SEC(".maps");

/* every reply sent, per CPU (the agent's hexlane_l2_arp_replies_total) */
HL_PINNED_MAP(BPF_MAP_TYPE_PERCPU_ARRAY, __u32, __u64, 1, 0) hl_l2_replies SEC(".maps");

struct hl_arphdr {
	__be16 ar_hrd;
	__be16 ar_pro;
	__u8 ar_hln;
	__u8 ar_pln;
	__be16 ar_op;
};

/* The Ethernet ARP body after the header (IPv4 over Ethernet only). */
struct arp_eth_ipv4 {
	__u8 sha[ETH_ALEN];
	__be32 sip;
	__u8 tha[ETH_ALEN];
	__be32 tip;
} __attribute__((packed));

/* TC_ACT_REDIRECT when this was a request we answer, else -1 (not ours: go on). */
static __always_inline int hl_l2_respond(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct hl_arphdr *arp;
	struct arp_eth_ipv4 *body;
	struct l2_responder_v4_key key = {};
	struct l2_responder_v4_entry *entry;
	struct l2_liveness *live;
	__u64 *replies;
	__u32 zero = 0;
	__be32 tip;
	__u64 now;

	if ((void *)(eth + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_ARP))
		return -1;
	arp = (void *)(eth + 1);
	body = (void *)(arp + 1);
	if ((void *)(body + 1) > data_end)
		return -1;
	if (arp->ar_hrd != bpf_htons(HL_ARPHRD_ETHER) || arp->ar_pro != bpf_htons(ETH_P_IP) ||
	    arp->ar_hln != ETH_ALEN || arp->ar_pln != 4 || arp->ar_op != bpf_htons(HL_ARPOP_REQUEST))
		return -1;
	live = bpf_map_lookup_elem(&hl_l2_liveness, &zero);
	if (!live)
		return -1;
	now = bpf_ktime_get_ns();
	if (now < live->agent_ns || now - live->agent_ns > live->max_age_ns)
		return -1;
	tip = body->tip;
	key.ip4 = tip;
	key.ifindex = skb->ingress_ifindex;
	entry = bpf_map_lookup_elem(&hl_l2_responder_v4, &key);
	if (!entry)
		return -1;

	/* Turn the request around: to the asker, from us, "tip is at our MAC". */
	__builtin_memcpy(eth->h_dest, body->sha, ETH_ALEN);
	__builtin_memcpy(eth->h_source, entry->mac, ETH_ALEN);
	arp->ar_op = bpf_htons(HL_ARPOP_REPLY);
	__builtin_memcpy(body->tha, body->sha, ETH_ALEN);
	body->tip = body->sip;
	__builtin_memcpy(body->sha, entry->mac, ETH_ALEN);
	body->sip = tip;
	__sync_fetch_and_add(&entry->responses_sent, 1);
	replies = bpf_map_lookup_elem(&hl_l2_replies, &zero);
	if (replies)
		(*replies)++;
	return bpf_redirect(skb->ifindex, 0);
}

#endif /* HEXLANE_L2_RESPONDER_H */
