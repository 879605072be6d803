/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Service lookup and backend selection, the way Cilium's bpf/lib/lb.h does them.
 *
 * Selection per service (the algorithm sits in the master entry's top byte):
 * - random: slot = prandom % count + 1, then the backend id stored in that service slot;
 * - maglev: the service's table (hl_lb4_maglev[rev_nat_index]) at
 *   jhash_3words(saddr, (svc_port << 16) | client_port, proto, HASH_INIT4_SEED) % M,
 *   with ports and address as loaded from the packet (network order) and the client port 0
 *   under session affinity, exactly as Cilium hashes (since cilium/cilium#37005 and #37353;
 *   older releases put the client port in the high half); hexlane.lb.maglev.maglev_slot is
 *   the Python twin.
 */
#ifndef HEXLANE_LB_H
#define HEXLANE_LB_H

#include "common.h"
#include "hexlane_maps.h"
#include "jhash.h"
#include "parse.h"

static __always_inline const struct lb4_service *hl_lb4_lookup_service(struct lb4_key *key)
{
	key->backend_slot = 0;
	key->scope = LB_LOOKUP_SCOPE_EXT;
	return bpf_map_lookup_elem(&hl_lb4_services, key);
}

/* The frontend a packet uses. Traffic from inside the cluster (pods, the node) takes a
 * two-scope service's INT entry (internalTrafficPolicy's backends); traffic from outside
 * takes the EXT entry (externalTrafficPolicy's). `key` keeps the scope it was found under,
 * since the random selection reads the backend slots under the same key.
 */
static __always_inline const struct lb4_service *hl_lb4_lookup_scoped(struct lb4_key *key,
								      bool internal)
{
	const struct lb4_service *svc, *scoped;

	svc = hl_lb4_lookup_service(key);
	if (!svc || !internal || !(svc->flags2 & SVC_FLAG_TWO_SCOPES))
		return svc;
	key->scope = LB_LOOKUP_SCOPE_INT;
	scoped = bpf_map_lookup_elem(&hl_lb4_services, key);
	if (scoped)
		return scoped;
	key->scope = LB_LOOKUP_SCOPE_EXT;
	return svc;
}

/* Frontends that answer traffic arriving from outside the node (ClusterIP does not, as in
 * Cilium without bpf.lbExternalClusterIP).
 */
static __always_inline bool hl_lb4_is_external(const struct lb4_service *svc)
{
	return svc->flags & (SVC_FLAG_NODEPORT | SVC_FLAG_LOADBALANCER | SVC_FLAG_EXTERNAL_IP);
}

static __always_inline __u32 hl_lb4_algorithm(const struct lb4_service *svc)
{
	return svc->backend_id >> LB_ALGORITHM_SHIFT;
}

static __always_inline __u32 hl_lb4_maglev_hash(const struct pkt4 *p, bool affinity)
{
	__u32 client_port = affinity ? 0 : p->sport;

	return hl_jhash_3words(p->saddr, ((__u32)p->dport << 16) | client_port, p->proto,
			       HASH_INIT4_SEED);
}

static __always_inline __u32 hl_lb4_select_maglev(const struct lb4_service *svc,
						  const struct pkt4 *p)
{
	__u16 index = svc->rev_nat_index;
	__u32 zero = 0, slot;
	struct lb4_maglev_lut *lut;
	void *inner;

	inner = bpf_map_lookup_elem(&hl_lb4_maglev, &index);
	if (!inner)
		return 0;
	lut = bpf_map_lookup_elem(inner, &zero);
	if (!lut)
		return 0;
	slot = hl_lb4_maglev_hash(p, svc->flags & SVC_FLAG_AFFINITY) % LB_MAGLEV_LUT_SIZE;
	/* clang turns "% M" into multiply-and-shift, which loses the bound for the verifier:
	 * hide the value from the optimiser and check it again (Cilium's map_array_get_32 does
	 * the same with inline assembly).
	 */
	asm volatile("" : "+r"(slot));
	if (slot >= LB_MAGLEV_LUT_SIZE)
		return 0;
	return lut->backend_ids[slot];
}

static __always_inline __u32 hl_lb4_select_random(struct lb4_key *key,
						  const struct lb4_service *svc)
{
	const struct lb4_service *be;

	/* Slot 0 is the service itself. */
	key->backend_slot = (bpf_get_prandom_u32() % svc->count) + 1;
	be = bpf_map_lookup_elem(&hl_lb4_services, key);
	key->backend_slot = 0;
	return be ? be->backend_id : 0;
}

static __always_inline __u32 hl_lb4_select_backend(struct lb4_key *key,
						   const struct lb4_service *svc,
						   const struct pkt4 *p)
{
	if (hl_lb4_algorithm(svc) == LB_SELECTION_MAGLEV)
		return hl_lb4_select_maglev(svc, p);
	return hl_lb4_select_random(key, svc);
}

/* Session affinity (sessionAffinity: ClientIP): the backend this client used within the
 * service's timeout and that still belongs to the service, or 0.
 */
static __always_inline __u32 hl_lb4_affinity_backend(const struct lb4_service *svc,
						     __be32 client)
{
	struct lb4_affinity_key key = { .client_ip = client, .rev_nat_id = svc->rev_nat_index };
	struct lb_affinity_match match = {};
	__u64 timeout_ns = (__u64)(svc->backend_id & AFFINITY_TIMEOUT_MASK) * 1000000000ULL;
	struct lb_affinity_val *val;
	__u64 now;

	val = bpf_map_lookup_elem(&hl_lb4_affinity, &key);
	if (!val)
		return 0;
	now = bpf_ktime_get_ns();
	match.backend_id = val->backend_id;
	match.rev_nat_id = svc->rev_nat_index;
	if (val->last_used_ns + timeout_ns <= now ||
	    !bpf_map_lookup_elem(&hl_lb_aff_match, &match)) {
		bpf_map_delete_elem(&hl_lb4_affinity, &key);
		return 0;
	}
	val->last_used_ns = now;
	return val->backend_id;
}

static __always_inline void hl_lb4_update_affinity(const struct lb4_service *svc, __be32 client,
						   __u32 backend_id)
{
	struct lb4_affinity_key key = { .client_ip = client, .rev_nat_id = svc->rev_nat_index };
	struct lb_affinity_val val = { .last_used_ns = bpf_ktime_get_ns(), .backend_id = backend_id };

	bpf_map_update_elem(&hl_lb4_affinity, &key, &val, BPF_ANY);
}

#endif /* HEXLANE_LB_H */
