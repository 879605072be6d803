/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Every BPF map of hexlane's service load balancer, declared once.
 *
 * The shapes follow Cilium's (bpf/lib/common.h, bpf/lib/lb.h): a service map keyed by
 * {frontend, slot} whose slot 0 is the service itself and slots 1..count its backends, a
 * backend map, reverse NAT, a per-service Maglev table in a map of maps, a conntrack LRU and a
 * session-affinity LRU (the counters of forwards and drops are metrics.h's).
 * hexlane/datapath/lb/maps.py mirrors every struct here with ctypes; tests/datapath checks the
 * mirror against this header's BTF.
 *
 * Maps are pinned by name under the agent's --bpf-root, so they outlive the agent: a restarted
 * agent reuses them and traffic keeps its conntrack state.
 */
#ifndef HEXLANE_MAPS_H
#define HEXLANE_MAPS_H

#include "common.h"

/* Build-time parameters: hexlane.datapath.build passes them with -D. */
#ifndef LB_MAGLEV_LUT_SIZE
#define LB_MAGLEV_LUT_SIZE 16381
#endif
#ifndef HASH_INIT4_SEED
#define HASH_INIT4_SEED 0x71dcda46 /* Cilium's default seed "JLfvgnHc2kaSUFaI", bytes 4..7 */
#endif
#ifndef LB_MAP_MAX_ENTRIES
#define LB_MAP_MAX_ENTRIES 65536 /* Cilium's bpf-lb-map-max */
#endif
#ifndef LB_MAGLEV_MAP_MAX_ENTRIES
#define LB_MAGLEV_MAP_MAX_ENTRIES 65536 /* one table per service id */
#endif
#ifndef CT_MAP_MAX_ENTRIES
#define CT_MAP_MAX_ENTRIES 262144
#endif

/* lb4_service.flags (Cilium's SVC_FLAG_*) */
#define SVC_FLAG_EXTERNAL_IP   (1 << 0)
#define SVC_FLAG_NODEPORT      (1 << 1)
#define SVC_FLAG_EXT_LOCAL     (1 << 2)
#define SVC_FLAG_HOSTPORT      (1 << 3)
#define SVC_FLAG_AFFINITY      (1 << 4)
#define SVC_FLAG_LOADBALANCER  (1 << 5)
#define SVC_FLAG_ROUTABLE      (1 << 6)
#define SVC_FLAG_SOURCE_RANGE  (1 << 7)
/* lb4_service.flags2 */
#define SVC_FLAG_INT_LOCAL     (1 << 4)
#define SVC_FLAG_TWO_SCOPES    (1 << 5)
#define SVC_FLAG_FWD_MODE_DSR  (1 << 7)

/* The master entry's backend_id field holds the affinity timeout in seconds in its low 24 bits
 * and the selection algorithm in its high 8 bits, as Cilium packs them.
 */
#define LB_ALGORITHM_SHIFT     24
#define AFFINITY_TIMEOUT_MASK  ((1 << LB_ALGORITHM_SHIFT) - 1)
#define LB_SELECTION_RANDOM    1
#define LB_SELECTION_MAGLEV    2

#define LB_LOOKUP_SCOPE_EXT 0
#define LB_LOOKUP_SCOPE_INT 1

/* lb4_backend.flags: the backend's state */
#define BE_STATE_ACTIVE      0
#define BE_STATE_TERMINATING 1
#define BE_STATE_QUARANTINED 2
#define BE_STATE_MAINTENANCE 3

/* ct4_key.flags: which kind of entry */
#define CT_F_SERVICE 1 /* client -> frontend: remembers the chosen backend */
#define CT_F_REPLY   2 /* client -> backend after DNAT: lets replies be reverse-translated */
#define CT_F_POLICY  4 /* {endpoint, remote, ports}: a connection policy allowed (policy.h) */

/* ct4_entry.flags */
#define CT_ENTRY_F_CLOSING 1 /* a TCP FIN or RST was seen: the agent expires it soon */
#define CT_ENTRY_F_SNAT    2 /* NodePort SNAT: the flow left with nat_addr:nat_port as source */
#define CT_ENTRY_F_DSR     4 /* DSR reply entry on the backend's node: source := nat_addr:port */

/* lb4_backend.node_local */
#define BE_NODE_REMOTE 0
#define BE_NODE_LOCAL  1 /* the backend is a pod of this node */

/* The IPv4 option carrying the service address to the backend's node under DSR (Cilium's
 * "opt" dispatch, DSR_IPV4_OPT_TYPE): type 0x9a (copied, class 0, number 26), length 8,
 * then the service port and address in network order.
 */
#define DSR_IPV4_OPT_TYPE 0x9a
#define DSR_IPV4_OPT_LEN  8

/* The NAT ports NodePort SNAT picks from (Cilium's NodePort range for SNAT is similar): the
 * client's own port when it is free for the backend, else a random one in this range.
 */
/* The source a pod's connection to its own address through a service (hairpin) is SNATed to,
 * so the pod's reply leaves it and comes back through the translation: Cilium's
 * IPV4_LOOPBACK, 169.254.42.1 (network order below).
 */
#define HL_HAIRPIN_ADDR bpf_htonl(0xa9fe2a01)

#define SNAT_PORT_MIN 32768
#define SNAT_PORT_MAX 60999
#define SNAT_PORT_TRIES 16

struct lb4_key {
	__be32 address;     /* frontend address */
	__be16 dport;       /* frontend port */
	__u16 backend_slot; /* 0: the service itself; 1..count: its backends */
	__u8 proto;         /* IPPROTO_TCP/UDP: one port number, two services */
	__u8 scope;         /* LB_LOOKUP_SCOPE_EXT/INT (traffic policies) */
	__u8 pad[2];
};

struct lb4_service {
	/* slot > 0: the backend id; slot 0: affinity timeout | algorithm << 24 */
	__u32 backend_id;
	__u16 count;         /* number of backend slots */
	__u16 rev_nat_index; /* the service id: reverse NAT and Maglev table key */
	__u8 flags;
	__u8 flags2;
	__u16 pad;
};

struct lb4_backend {
	__be32 address;
	__be16 port;
	__u8 proto;
	__u8 flags;       /* BE_STATE_* */
	__u16 cluster_id;
	__u8 zone;
	__u8 node_local;  /* BE_NODE_LOCAL: a pod of this node (no SNAT/DSR needed) */
};

struct lb4_reverse_nat {
	__be32 address;
	__be16 port;
	__u16 pad;
};

/* A Maglev table: backend ids, slot = hash % LB_MAGLEV_LUT_SIZE. */
struct lb4_maglev_lut {
	__u32 backend_ids[LB_MAGLEV_LUT_SIZE];
};

/* Conntrack key: the tuple in packet order (unlike Cilium's, ports are not swapped). */
struct ct4_key {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 flags; /* CT_F_* */
	__u16 pad;
};

struct ct4_entry {
	__u64 last_seen_ns; /* bpf_ktime_get_ns() of the latest packet */
	__u64 packets;
	__u64 bytes;
	__u32 backend_id;
	__u16 rev_nat_index;
	__u16 flags;      /* CT_ENTRY_F_* */
	__be32 nat_addr;  /* SNAT: node address (service entry) or client address (reply entry);
			   * DSR reply entry: the service address */
	__be16 nat_port;  /* the matching port */
	__u16 pad;
};

/* Per-node settings the agent writes (array, one entry). */
struct lb_node_config {
	__be32 node_ip; /* the source address of NodePort SNAT */
	__u32 pad;
};

struct lb4_affinity_key {
	__be32 client_ip;
	__u16 rev_nat_id;
	__u16 pad;
};

struct lb_affinity_val {
	__u64 last_used_ns;
	__u32 backend_id;
	__u32 pad;
};

HL_PINNED_MAP(BPF_MAP_TYPE_HASH, struct lb4_key, struct lb4_service,
	      LB_MAP_MAX_ENTRIES, BPF_F_NO_PREALLOC) hl_lb4_services SEC(".maps");

HL_PINNED_MAP(BPF_MAP_TYPE_HASH, __u32, struct lb4_backend,
	      LB_MAP_MAX_ENTRIES, BPF_F_NO_PREALLOC) hl_lb4_backends SEC(".maps");

HL_PINNED_MAP(BPF_MAP_TYPE_HASH, __u16, struct lb4_reverse_nat,
	      LB_MAP_MAX_ENTRIES, BPF_F_NO_PREALLOC) hl_lb4_revnat SEC(".maps");

/* The inner map of hl_lb4_maglev: one entry holding one service's whole table, so the agent
 * swaps a service's table atomically by pointing the outer entry at a new inner map.
 */
struct hl_lb4_maglev_inner {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	/* by size: BTF would only carry a forward declaration of the table struct */
	__uint(value_size, sizeof(struct lb4_maglev_lut));
	__uint(max_entries, 1);
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__type(key, __u16); /* rev_nat_index */
	__type(value, __u32);
	__uint(max_entries, LB_MAGLEV_MAP_MAX_ENTRIES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__array(values, struct hl_lb4_maglev_inner);
} hl_lb4_maglev SEC(".maps");

/* per-CPU LRU lists: new flows on different CPUs do not contend for one lock */
HL_PINNED_MAP(BPF_MAP_TYPE_LRU_HASH, struct ct4_key, struct ct4_entry,
	      CT_MAP_MAX_ENTRIES, BPF_F_NO_COMMON_LRU) hl_ct4 SEC(".maps");

HL_PINNED_MAP(BPF_MAP_TYPE_LRU_HASH, struct lb4_affinity_key, struct lb_affinity_val,
	      LB_MAP_MAX_ENTRIES, 0) hl_lb4_affinity SEC(".maps");

/* Which backends belong to which service: an affinity entry only counts while its backend is
 * still one of the service's (Cilium's cilium_lb_affinity_match); the agent keeps it.
 */
struct lb_affinity_match {
	__u32 backend_id;
	__u16 rev_nat_id;
	__u16 pad;
};

HL_PINNED_MAP(BPF_MAP_TYPE_HASH, struct lb_affinity_match, __u8,
	      LB_MAP_MAX_ENTRIES, BPF_F_NO_PREALLOC) hl_lb_aff_match SEC(".maps");

HL_PINNED_MAP(BPF_MAP_TYPE_ARRAY, __u32, struct lb_node_config,
	      1, 0) hl_lb_config SEC(".maps");

#endif /* HEXLANE_MAPS_H */
