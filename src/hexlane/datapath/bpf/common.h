/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Includes, constants and small helpers shared by every hexlane BPF program (lb.c, masq.c).
 *
 * Built without vmlinux.h: only the kernel's uapi headers and libbpf's bpf_helpers.h, so the
 * programs compile with Debian's clang 14 and load on any kernel with BTF.
 */
#ifndef HEXLANE_COMMON_H
#define HEXLANE_COMMON_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <stdbool.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#ifndef __always_inline
#define __always_inline inline __attribute__((always_inline))
#endif

#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)

#ifndef offsetof
#define offsetof(type, member) __builtin_offsetof(type, member)
#endif

/* A map pinned by name under the agent's --bpf-root: it outlives the agent, and a restarted
 * agent's programs find it again, with the state it holds (`flags`: map_flags, or 0).
 */
#define HL_PINNED_MAP(_type, _key, _value, _max_entries, _flags)	\
	struct {							\
		__uint(type, _type);					\
		__type(key, _key);					\
		__type(value, _value);					\
		__uint(max_entries, _max_entries);			\
		__uint(map_flags, _flags);				\
		__uint(pinning, LIBBPF_PIN_BY_NAME);			\
	}

/* Why a packet is dropped: what the parser (parse.h) and the rewrites (csum.h) return, negated,
 * and the reason of its counter in hl_metrics (metrics.h; HL_DROP_NONE counts forwards there).
 */
enum hl_drop_reason {
	HL_DROP_NONE = 0,
	HL_DROP_TRUNCATED = 1,       /* shorter than the headers it announces */
	HL_DROP_INVALID_IP = 2,      /* IPv4 header malformed (version, ihl, total length) */
	HL_DROP_INVALID_L4 = 3,      /* TCP/UDP header malformed (TCP data offset) */
	HL_DROP_NO_BACKEND = 4,      /* service has no backend: rejected */
	HL_DROP_BACKEND_MISSING = 5, /* chosen slot names no backend (map out of sync) */
	HL_DROP_WRITE = 6,           /* packet rewrite failed */
	HL_DROP_CSUM = 7,            /* checksum update failed */
	HL_DROP_CT_CREATE = 8,       /* conntrack map full or update failed */
	HL_DROP_REPLY_NAT = 9,       /* reply matched conntrack but its reverse NAT is missing */
	HL_DROP_SNAT_PORTS = 10,     /* SNAT (NodePort, masquerade) found no free NAT port */
	HL_DROP_DSR_OPT = 11,        /* a DSR option that is malformed or truncated */
	HL_DROP_NO_NODE_IP = 12,     /* SNAT needed but the agent set no node address */
	HL_DROP_POLICY = 13,         /* network policy denied a new connection (policy.h) */
	HL_DROP_UNKNOWN = 15,        /* a reason the counters do not know (a bug) */
	HL_DROP_MAX = 16,
};

#endif /* HEXLANE_COMMON_H */
