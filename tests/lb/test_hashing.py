"""The hash primitives match their reference implementations.

Pins down MurmurHash3 x64_128 against the published smhasher vectors (as used by Cilium's
pkg/murmur3 tests and the mmh3 package). jhash_3words is held to the
kernel-style C version by tests/datapath (the BPF program computes it for 1,000 tuples).
"""

from __future__ import annotations

from hexlane.lb.hashing import murmur3_x64_128


def test_murmur3_empty_and_seeded() -> None:
    assert murmur3_x64_128(b"", 0) == (0, 0)
    # smhasher: MurmurHash3_x64_128("", seed=1) = 4610abe56eff5cb5 51622daa78f83583
    assert murmur3_x64_128(b"", 1) == (0x4610ABE56EFF5CB5, 0x51622DAA78F83583)


def test_murmur3_known_text() -> None:
    # mmh3.hash64(b"hello", signed=False) == (0xcbd8a7b341bd9b02, 0x5b1e906a48ae1d19)
    assert murmur3_x64_128(b"hello", 0) == (0xCBD8A7B341BD9B02, 0x5B1E906A48AE1D19)
