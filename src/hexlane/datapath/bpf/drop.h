/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Counting drops by reason: every TC_ACT_SHOT of ours goes through hl_drop. */
#ifndef HEXLANE_DROP_H
#define HEXLANE_DROP_H

#include "common.h"
#include "hexlane_maps.h"

static __always_inline int hl_drop(__u32 reason)
{
	__u64 *count;

	if (reason >= HL_DROP_MAX)
		reason = HL_DROP_NONE;
	count = bpf_map_lookup_elem(&hl_drops, &reason);
	if (count)
		__sync_fetch_and_add(count, 1);
	return TC_ACT_SHOT;
}

#endif /* HEXLANE_DROP_H */
