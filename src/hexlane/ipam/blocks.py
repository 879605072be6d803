"""Cilium's LB-IPAM range allocator, reproduced so hexlane picks the addresses Cilium picks.

Cilium (`pkg/ipalloc` HashAllocator) keeps the free addresses of a range as maximal blocks in a
binary min-heap ordered by block size. "Any address" is the first address of the block at the
top of the heap: the first address of the smallest free block, so a fresh range hands out its
addresses from the lowest up, and a range split by a specific request fills the smaller hole
first. Ties between equal-sized blocks are broken by the heap's layout, so this module performs
the same heap operations in the same order as Go's `container/heap` (`Fix` after shrinking a
block, `Remove` then two `Push`es when taking an address from the middle of one). That is what
lets `hexlane ipam plan` predict Cilium's answer, ties included.

The pure LB-IPAM core never frees an address (it recomputes from scratch), so only taking is
needed. Addresses are plain integers here; the caller converts.
"""

from __future__ import annotations

import bisect


class _Block:
    __slots__ = ("first", "last", "pos")

    def __init__(self, first: int, last: int) -> None:
        self.first = first
        self.last = last
        self.pos = 0  # index in the heap array

    @property
    def size(self) -> int:
        return self.last - self.first + 1


class BlockAllocator:
    """Free-address bookkeeping for one inclusive range [first, last]."""

    def __init__(self, first: int, last: int) -> None:
        if first > last:
            raise ValueError(f"range start {first} is after its end {last}")
        self.first = first
        self.last = last
        self.size = last - first + 1
        self.free = self.size
        block = _Block(first, last)
        self._heap: list[_Block] = [block]
        # Blocks are disjoint, so the one holding an address is found by bisecting their
        # starts; Cilium scans the heap array, which finds the same (only) block.
        self._starts: list[int] = [first]
        self._by_start: dict[int, _Block] = {first: block}

    @property
    def used(self) -> int:
        return self.size - self.free

    def contains(self, ip: int) -> bool:
        return self.first <= ip <= self.last

    def is_free(self, ip: int) -> bool:
        return self._block_of(ip) is not None

    def free_blocks(self) -> list[tuple[int, int]]:
        """The free blocks in address order (for tests and debugging)."""
        return [(b.first, b.last) for b in sorted(self._heap, key=lambda b: b.first)]

    def take_any(self) -> int | None:
        """Cilium's AllocAny: the first address of the block at the top of the heap."""
        if not self._heap:
            return None
        ip = self._heap[0].first
        self.take(ip)
        return ip

    def take(self, ip: int) -> bool:
        """Cilium's Alloc of a specific address; False when it is outside or already taken."""
        block = self._block_of(ip)
        if block is None:
            return False
        self.free -= 1
        if block.first == ip:
            if block.first == block.last:
                self._unindex(block)
                self._remove(block.pos)
                return True
            self._unindex(block)
            block.first += 1
            self._index(block)
            self._fix(block.pos)
            return True
        if block.last == ip:
            block.last -= 1
            self._fix(block.pos)
            return True
        # In the middle: remove the block, push its left part, then its right part.
        self._unindex(block)
        self._remove(block.pos)
        left = _Block(block.first, ip - 1)
        right = _Block(ip + 1, block.last)
        self._index(left)
        self._index(right)
        self._push(left)
        self._push(right)
        return True

    # --- the sorted index of blocks by their first address

    def _block_of(self, ip: int) -> _Block | None:
        i = bisect.bisect_right(self._starts, ip) - 1
        if i < 0:
            return None
        block = self._by_start[self._starts[i]]
        return block if ip <= block.last else None

    def _index(self, block: _Block) -> None:
        bisect.insort(self._starts, block.first)
        self._by_start[block.first] = block

    def _unindex(self, block: _Block) -> None:
        i = bisect.bisect_left(self._starts, block.first)
        del self._starts[i]
        del self._by_start[block.first]

    # --- Go's container/heap, operation for operation (ties depend on it)

    def _less(self, i: int, j: int) -> bool:
        a, b = self._heap[i], self._heap[j]
        return (a.last - a.first) < (b.last - b.first)

    def _swap(self, i: int, j: int) -> None:
        h = self._heap
        h[i], h[j] = h[j], h[i]
        h[i].pos = i
        h[j].pos = j

    def _up(self, j: int) -> None:
        while j > 0:
            i = (j - 1) // 2
            if not self._less(j, i):
                break
            self._swap(i, j)
            j = i

    def _down(self, i0: int, n: int) -> bool:
        i = i0
        while True:
            j1 = 2 * i + 1
            if j1 >= n:
                break
            j = j1
            j2 = j1 + 1
            if j2 < n and self._less(j2, j1):
                j = j2
            if not self._less(j, i):
                break
            self._swap(i, j)
            i = j
        return i > i0

    def _push(self, block: _Block) -> None:
        block.pos = len(self._heap)
        self._heap.append(block)
        self._up(block.pos)

    def _remove(self, i: int) -> None:
        n = len(self._heap) - 1
        if n != i:
            self._swap(i, n)
            if not self._down(i, n):
                self._up(i)
        self._heap.pop()

    def _fix(self, i: int) -> None:
        if not self._down(i, len(self._heap)):
            self._up(i)
