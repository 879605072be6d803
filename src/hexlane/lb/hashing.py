"""The two hash functions Cilium's load balancer depends on, bit for bit (pure).

- MurmurHash3 x64_128 (Austin Appleby's reference, as in Cilium's ``pkg/murmur3``) gives every
  backend its Maglev offset and skip.
- Bob Jenkins' ``jhash_3words`` (lookup3, as in the Linux kernel and Cilium's
  ``bpf/lib/jhash.h``) is what the datapath hashes a packet's tuple with to pick a Maglev slot.

Both are also written in C in ``hexlane/datapath/bpf/jhash.h`` and ``bench/c/maglev.c``; tests
hold the Python and C versions to the same answers.
"""

from __future__ import annotations

from functools import lru_cache

_M64 = 0xFFFFFFFFFFFFFFFF
_M32 = 0xFFFFFFFF
_C1 = 0x87C37B91114253D5
_C2 = 0x4CF5AD432745937F

# jhash's golden-ratio-derived start value, as in the kernel's <linux/jhash.h>.
JHASH_INITVAL = 0xDEADBEEF


def murmur3_x64_128(data: bytes, seed: int) -> tuple[int, int]:
    """MurmurHash3 x64_128 of `data` with a 32-bit `seed`: the pair (h1, h2) of 64-bit words.

    Blocks are read little-endian, as Cilium's Go code does on the little-endian machines it
    runs on (its comment says results differ on big-endian hosts; little-endian is the one
    every Cilium node computes, so that is the one reproduced here). Rotations and the final
    mix are written out in place: this runs for every backend of every Maglev table.
    """
    m64 = _M64
    c1 = _C1
    c2 = _C2
    h1 = h2 = seed & _M32
    length = len(data)
    nblocks = length >> 4
    for i in range(nblocks):
        k1 = int.from_bytes(data[i * 16 : i * 16 + 8], "little")
        k2 = int.from_bytes(data[i * 16 + 8 : i * 16 + 16], "little")
        k1 = (k1 * c1) & m64
        k1 = ((k1 << 31) | (k1 >> 33)) & m64
        h1 ^= (k1 * c2) & m64
        h1 = ((h1 << 27) | (h1 >> 37)) & m64
        h1 = ((h1 + h2) * 5 + 0x52DCE729) & m64
        k2 = (k2 * c2) & m64
        k2 = ((k2 << 33) | (k2 >> 31)) & m64
        h2 ^= (k2 * c1) & m64
        h2 = ((h2 << 31) | (h2 >> 33)) & m64
        h2 = ((h2 + h1) * 5 + 0x38495AB5) & m64

    tail = data[nblocks * 16 :]
    if len(tail) > 8:
        k2 = (int.from_bytes(tail[8:], "little") * c2) & m64
        k2 = ((k2 << 33) | (k2 >> 31)) & m64
        h2 ^= (k2 * c1) & m64
    if tail:
        k1 = (int.from_bytes(tail[:8], "little") * c1) & m64
        k1 = ((k1 << 31) | (k1 >> 33)) & m64
        h1 ^= (k1 * c2) & m64

    h1 ^= length
    h2 ^= length
    h1 = (h1 + h2) & m64
    h2 = (h2 + h1) & m64
    # fmix64 of both words
    h1 ^= h1 >> 33
    h1 = (h1 * 0xFF51AFD7ED558CCD) & m64
    h1 ^= h1 >> 33
    h1 = (h1 * 0xC4CEB9FE1A85EC53) & m64
    h1 ^= h1 >> 33
    h2 ^= h2 >> 33
    h2 = (h2 * 0xFF51AFD7ED558CCD) & m64
    h2 ^= h2 >> 33
    h2 = (h2 * 0xC4CEB9FE1A85EC53) & m64
    h2 ^= h2 >> 33
    h1 = (h1 + h2) & m64
    h2 = (h2 + h1) & m64
    return h1, h2


@lru_cache(maxsize=65536)
def murmur3_x64_128_cached(data: bytes, seed: int) -> tuple[int, int]:
    """`murmur3_x64_128`, remembered: backends mostly stay when a Service's table is rebuilt."""
    return murmur3_x64_128(data, seed)


def _rol32(x: int, r: int) -> int:
    return ((x << r) | (x >> (32 - r))) & _M32


def jhash_3words(a: int, b: int, c: int, initval: int) -> int:
    """The kernel's ``jhash_3words(a, b, c, initval)`` on 32-bit words."""
    init = (initval + JHASH_INITVAL + (3 << 2)) & _M32
    a = (a + init) & _M32
    b = (b + init) & _M32
    c = (c + init) & _M32
    # __jhash_final
    c ^= b
    c = (c - _rol32(b, 14)) & _M32
    a ^= c
    a = (a - _rol32(c, 11)) & _M32
    b ^= a
    b = (b - _rol32(a, 25)) & _M32
    c ^= b
    c = (c - _rol32(b, 16)) & _M32
    a ^= c
    a = (a - _rol32(c, 4)) & _M32
    b ^= a
    b = (b - _rol32(a, 14)) & _M32
    c ^= b
    c = (c - _rol32(b, 24)) & _M32
    return c
