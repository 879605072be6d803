/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Bob Jenkins' lookup3 final mix and jhash_3words, as the kernel's <linux/jhash.h> and Cilium's
 * bpf/lib/jhash.h define them. hexlane.lb.hashing.jhash_3words is the Python twin; a test runs
 * both on the same tuples.
 */
#ifndef HEXLANE_JHASH_H
#define HEXLANE_JHASH_H

#include <linux/types.h>

#define HL_JHASH_INITVAL 0xdeadbeef

static __always_inline __u32 hl_rol32(__u32 word, unsigned int shift)
{
	return (word << shift) | (word >> ((-shift) & 31));
}

#define __hl_jhash_final(a, b, c)			\
	do {						\
		c ^= b; c -= hl_rol32(b, 14);		\
		a ^= c; a -= hl_rol32(c, 11);		\
		b ^= a; b -= hl_rol32(a, 25);		\
		c ^= b; c -= hl_rol32(b, 16);		\
		a ^= c; a -= hl_rol32(c, 4);		\
		b ^= a; b -= hl_rol32(a, 14);		\
		c ^= b; c -= hl_rol32(b, 24);		\
	} while (0)

static __always_inline __u32 hl_jhash_3words(__u32 a, __u32 b, __u32 c, __u32 initval)
{
	initval += HL_JHASH_INITVAL + (3 << 2);
	a += initval;
	b += initval;
	c += initval;
	__hl_jhash_final(a, b, c);
	return c;
}

#endif /* HEXLANE_JHASH_H */
