/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Counting drops: every TC_ACT_SHOT of ours goes through hl_drop, counted by reason and
 * direction in hl_metrics (metrics.h).
 */
#ifndef HEXLANE_DROP_H
#define HEXLANE_DROP_H

#include "common.h"
#include "metrics.h"

static __always_inline int hl_drop(struct __sk_buff *skb, __u32 reason, __u32 dir)
{
	if (reason == HL_DROP_NONE || reason >= HL_DROP_MAX)
		reason = HL_DROP_UNKNOWN;
	hl_count(skb, reason, dir);
	return TC_ACT_SHOT;
}

#endif /* HEXLANE_DROP_H */
