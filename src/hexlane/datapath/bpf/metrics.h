/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Packets and bytes the programs forward and drop, by direction and reason: the agent's
 * cilium_forward_* and cilium_drop_* (hexlane.datapath.metrics reads them, summing the CPUs).
 *
 * One per-CPU array, as Cilium's metrics map is one per-CPU hash: slot
 * reason * HL_DIR_MAX + direction holds {packets, bytes}; reason 0 (HL_DROP_NONE) counts
 * forwards, any other reason drops. Per CPU so that counting every packet of a pod costs one
 * lookup and two adds on a line no other CPU writes. Pinned by name and shared by the load
 * balancer's object and the masquerade's (whichever loads first creates it).
 *
 * Directions (Cilium's names for them):
 * - HL_DIR_INGRESS: into a pod of this node: what passes the pod veth's egress
 *   (hl_to_pod), and what a hook sends straight into the pod's namespace;
 * - HL_DIR_EGRESS: out of a pod of this node: what passes the pod veth's ingress (hl_from_pod);
 * - HL_DIR_SERVICE: the node's other hooks (LAN device, tunnel, hexlane_host, lo), whose job is
 *   Services: the packets they translate or turn back and send on themselves, and their drops.
 */
#ifndef HEXLANE_METRICS_H
#define HEXLANE_METRICS_H

#include "common.h"

#define HL_DIR_UNKNOWN 0
#define HL_DIR_INGRESS 1
#define HL_DIR_EGRESS  2
#define HL_DIR_SERVICE 3
#define HL_DIR_MAX     4

struct hl_metrics_value {
	__u64 packets;
	__u64 bytes;
};

HL_PINNED_MAP(BPF_MAP_TYPE_PERCPU_ARRAY, __u32, struct hl_metrics_value,
	      HL_DROP_MAX * HL_DIR_MAX, 0) hl_metrics SEC(".maps");

/* Count one packet of `len` bytes under `reason` (HL_DROP_NONE: forwarded) and `dir`
 * (HL_DIR_*).
 */
static __always_inline void hl_count_len(__u32 len, __u32 reason, __u32 dir)
{
	__u32 slot = reason * HL_DIR_MAX + dir;
	struct hl_metrics_value *value;

	if (reason >= HL_DROP_MAX || dir >= HL_DIR_MAX)
		return;
	value = bpf_map_lookup_elem(&hl_metrics, &slot);
	if (value) {
		value->packets++;
		value->bytes += len;
	}
}

/* The packet as the hook sees it now (its length with the Ethernet header). */
static __always_inline void hl_count(struct __sk_buff *skb, __u32 reason, __u32 dir)
{
	hl_count_len(skb->len, reason, dir);
}

static __always_inline void hl_count_forward(struct __sk_buff *skb, __u32 dir)
{
	hl_count(skb, HL_DROP_NONE, dir);
}

#endif /* HEXLANE_METRICS_H */
