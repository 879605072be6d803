/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The maps of hexlane's IPv4 masquerading (SNAT of pod traffic leaving the node), declared once.
 *
 * hexlane/datapath/masq.py mirrors every struct with ctypes; tests/datapath checks the mirror
 * against this header's BTF. Maps are pinned by name under the agent's --bpf-root, so NAT
 * state outlives an agent restart.
 */
#ifndef HEXLANE_MASQ_H
#define HEXLANE_MASQ_H

#include "common.h"

#ifndef SNAT4_MAP_MAX_ENTRIES
#define SNAT4_MAP_MAX_ENTRIES 65536
#endif
#define MASQ_PORT_TRIES 64 /* ports tried per new flow before giving up */

/* hl_masq4_stats slots */
#define MASQ_STAT_EGRESS      0 /* packets translated on the way out */
#define MASQ_STAT_INGRESS     1 /* replies translated back */
#define MASQ_STAT_NO_PORT     2 /* new flows dropped: no free NAT port (or map update failed) */
#define MASQ_STAT_REWRITE     3 /* packets dropped: rewrite or checksum update failed */
#define MASQ_STAT_MAX         4

#define SNAT_DIR_EGRESS  1 /* pod -> world, as the pod sent it: gives node IP and port */
#define SNAT_DIR_INGRESS 2 /* world -> node, as the reply arrives: gives pod IP and port */

/* The node's masquerading settings: one entry, written by the agent. */
struct masq4_config {
	__be32 node_ip;   /* the address pods' traffic leaves with */
	__be32 pod_net;   /* only sources in this node's pod CIDR are masqueraded */
	__be32 pod_mask;
	__u16 port_min;   /* NAT source ports, host order, outside the node's ephemeral range */
	__u16 port_max;
	__u32 enabled;
};

/* Destinations never masqueraded (ipv4NativeRoutingCIDR, pod CIDRs, node IPs): an LPM trie. */
struct masq4_nonmasq_key {
	__u32 prefixlen;
	__be32 addr;
};

struct snat4_key {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 dir; /* SNAT_DIR_* */
	__u16 pad;
};

struct snat4_entry {
	__be32 to_addr; /* egress: the node IP; ingress: the pod IP */
	__be16 to_port;
	__u16 pad;
	__u64 last_seen_ns;
};

HL_PINNED_MAP(BPF_MAP_TYPE_ARRAY, __u32, struct masq4_config,
	      1, 0) hl_masq4_config SEC(".maps");

HL_PINNED_MAP(BPF_MAP_TYPE_LPM_TRIE, struct masq4_nonmasq_key, __u8,
	      1024, BPF_F_NO_PREALLOC) hl_masq4_nonmasq SEC(".maps");

HL_PINNED_MAP(BPF_MAP_TYPE_LRU_HASH, struct snat4_key, struct snat4_entry,
	      SNAT4_MAP_MAX_ENTRIES, 0) hl_snat4 SEC(".maps");

HL_PINNED_MAP(BPF_MAP_TYPE_ARRAY, __u32, __u64,
	      MASQ_STAT_MAX, 0) hl_masq4_stats SEC(".maps");

#endif /* HEXLANE_MASQ_H */
