"""RFC 6962 / RFC 9162 Merkle tree hashes, inclusion and consistency proofs (SHA-256)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from itertools import islice

HASH_SIZE = 32
LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
EMPTY_ROOT = hashlib.sha256(b"").digest()
EXTEND_HEIGHT = 12
EXTEND_CHUNK = 1 << EXTEND_HEIGHT


def leaf_hash(data: bytes) -> bytes:
    """The RFC 6962 leaf hash SHA-256(0x00 || data)."""
    return hashlib.sha256(LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """The RFC 6962 interior node hash SHA-256(0x01 || left || right)."""
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly smaller than `n` (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def root(leaf_hashes: Sequence[bytes]) -> bytes:
    """The Merkle tree hash MTH of the leaves whose hashes are given, in order."""
    if not leaf_hashes:
        return EMPTY_ROOT
    # Pairing level by level and promoting a lone last node unchanged builds exactly the
    # RFC's left-balanced tree (split at the largest power of two), without recursion.
    level = list(leaf_hashes)
    sha256 = hashlib.sha256
    while len(level) > 1:
        odd = level[-1] if len(level) % 2 else None
        level = [
            sha256(NODE_PREFIX + level[i] + level[i + 1]).digest()
            for i in range(0, len(level) - 1, 2)
        ]
        if odd is not None:
            level.append(odd)
    return level[0]


def inclusion_proof(index: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """The audit path PATH(index, D[n]) of RFC 6962 section 2.1.1, leaf level first."""
    n = len(leaf_hashes)
    if not 0 <= index < n:
        raise ValueError(f"leaf index {index} is outside a tree of size {n}")
    path: list[bytes] = []
    start, end, m = 0, n, index
    while end - start > 1:
        k = _split(end - start)
        if m < k:
            path.append(root(leaf_hashes[start + k : end]))
            end = start + k
        else:
            path.append(root(leaf_hashes[start : start + k]))
            start += k
            m -= k
    # The descent collects the siblings from the top down; the RFC lists them bottom up.
    path.reverse()
    return path


def consistency_proof(m: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """The proof PROOF(m, D[n]) of RFC 6962 section 2.1.2 that D[0:m] is a prefix of D[n]."""
    n = len(leaf_hashes)
    if not 0 <= m <= n:
        raise ValueError(f"size {m} is outside 0..{n}")
    if m in (0, n):
        return []
    proof: list[bytes] = []
    start, end, size, whole = 0, n, m, True
    while size != end - start:
        k = _split(end - start)
        if size <= k:
            proof.append(root(leaf_hashes[start + k : end]))
            end = start + k
        else:
            proof.append(root(leaf_hashes[start : start + k]))
            start += k
            size -= k
            whole = False
    if not whole:
        proof.append(root(leaf_hashes[start:end]))
    proof.reverse()
    return proof


# -- stored subtrees --------------------------------------------------------------------
#
# A log that keeps its tree in the database stores the hash of every complete subtree (a
# perfect binary tree of 2^level leaves starting at a multiple of 2^level) under one integer
# key, its in-order position: 2 * start + 2^level - 1. Leaves are the even keys, and the
# largest key of a tree of n leaves is its last leaf, 2 * (n - 1). Any range the RFC's
# recursion visits is a run of such subtrees of strictly decreasing size, so its hash, and
# so every proof, reads O(log n) stored rows.


def node_key(level: int, start: int) -> int:
    """The storage key of the complete subtree of 2^level leaves from leaf `start`."""
    return 2 * start + (1 << level) - 1


def size_of_last_key(key: int | None) -> int:
    """The number of leaves of a tree whose largest stored key is `key` (None: empty)."""
    return 0 if key is None else key // 2 + 1


def subtrees(start: int, end: int) -> list[tuple[int, int]]:
    """The complete subtrees (level, start) that tile leaves [start, end), largest first."""
    parts: list[tuple[int, int]] = []
    while start < end:
        level = (end - start).bit_length() - 1
        if start:
            level = min(level, (start & -start).bit_length() - 1)
        parts.append((level, start))
        start += 1 << level
    return parts


def fold_subtrees(hashes: Sequence[bytes]) -> bytes:
    """MTH of a range from the hashes of its `subtrees` (strictly decreasing sizes)."""
    if not hashes:
        return EMPTY_ROOT
    r = hashes[-1]
    for h in reversed(hashes[:-1]):
        r = node_hash(h, r)
    return r


def inclusion_ranges(index: int, n: int) -> list[tuple[int, int]]:
    """The leaf ranges whose hashes make PATH(index, D[n]), in proof order."""
    if not 0 <= index < n:
        raise ValueError(f"leaf index {index} is outside a tree of size {n}")
    ranges: list[tuple[int, int]] = []
    start, end, m = 0, n, index
    while end - start > 1:
        k = _split(end - start)
        if m < k:
            ranges.append((start + k, end))
            end = start + k
        else:
            ranges.append((start, start + k))
            start += k
            m -= k
    ranges.reverse()
    return ranges


def consistency_ranges(m: int, n: int) -> list[tuple[int, int]]:
    """The leaf ranges whose hashes make PROOF(m, D[n]), in proof order."""
    if not 0 <= m <= n:
        raise ValueError(f"size {m} is outside 0..{n}")
    if m in (0, n):
        return []
    ranges: list[tuple[int, int]] = []
    start, end, size, whole = 0, n, m, True
    while size != end - start:
        k = _split(end - start)
        if size <= k:
            ranges.append((start + k, end))
            end = start + k
        else:
            ranges.append((start, start + k))
            start += k
            size -= k
            whole = False
    if not whole:
        ranges.append((start, end))
    ranges.reverse()
    return ranges


def _valid_hashes(*hashes: bytes) -> bool:
    return all(isinstance(h, bytes) and len(h) == HASH_SIZE for h in hashes)


def verify_inclusion(
    leaf_hash: bytes, index: int, tree_size: int, proof: Sequence[bytes], root: bytes
) -> bool:
    """Whether `proof` shows the leaf at `index` is in the tree of `tree_size` with `root`.

    The algorithm of RFC 9162 section 2.1.3.2.
    """
    if not 0 <= index < tree_size or not _valid_hashes(leaf_hash, root, *proof):
        return False
    fn, sn = index, tree_size - 1
    r = leaf_hash
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(
    m: int, n: int, root_m: bytes, root_n: bytes, proof: Sequence[bytes]
) -> bool:
    """Whether `proof` shows the tree of size `m` and `root_m` is a prefix of size `n`.

    The algorithm of RFC 9162 section 2.1.4.2, plus its trivial cases (m = 0, m = n).
    """
    if not 0 <= m <= n or not _valid_hashes(root_m, root_n, *proof):
        return False
    if m == 0:
        # Every tree extends the empty tree, whose root is fixed; a non-empty proof is
        # malformed, and an "empty" root that is not the empty root is a different tree.
        return not proof and root_m == EMPTY_ROOT and (n > 0 or root_n == EMPTY_ROOT)
    if m == n:
        return not proof and root_m == root_n
    if not proof:
        return False
    path = list(proof)
    if m & (m - 1) == 0:
        # A first tree of power-of-two size is a complete subtree: its root starts the path.
        path.insert(0, root_m)
    fn, sn = m - 1, n - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == root_m and sr == root_n and sn == 0


class TreeAccumulator:
    """An append-only Merkle tree that keeps only the peaks (a compact range from 0).

    Appending costs amortised O(1) hashes and the root at the current size O(log n),
    which lets a verifier check signed heads at many sizes in one pass over the leaves.
    """

    def __init__(self) -> None:
        self._peaks: list[tuple[int, bytes]] = []  # (height, hash), tallest first
        self._size = 0

    @classmethod
    def from_peaks(cls, size: int, peaks: Sequence[bytes]) -> TreeAccumulator:
        """The accumulator of a tree of `size` leaves from the hashes of `subtrees(0, size)`."""
        levels = [level for level, _ in subtrees(0, size)]
        if len(levels) != len(peaks):
            raise ValueError(f"a tree of size {size} has {len(levels)} peaks, not {len(peaks)}")
        tree = cls()
        tree._peaks = list(zip(levels, peaks, strict=True))
        tree._size = size
        return tree

    def copy(self) -> TreeAccumulator:
        """An independent accumulator at the same size (O(log n))."""
        tree = TreeAccumulator()
        tree._peaks = list(self._peaks)
        tree._size = self._size
        return tree

    @property
    def size(self) -> int:
        """The number of leaves appended so far."""
        return self._size

    def append_nodes(self, leaf_hash: bytes) -> list[tuple[int, bytes]]:
        """Add the next leaf; returns (node key, hash) of it and of each subtree it completes."""
        return [(node_key(0, self._size), leaf_hash), *self._push_subtree(0, leaf_hash)]

    def append(self, leaf_hash: bytes) -> None:
        """Add the next leaf (given by its leaf hash)."""
        self._push_subtree(0, leaf_hash)

    def extend(self, leaf_hashes: Sequence[bytes]) -> None:
        """Add several leaves in order."""
        # Aligned runs of EXTEND_CHUNK leaves are hashed level by level (`root`), which
        # costs far less interpreter time per node than growing the peaks leaf by leaf.
        position, count = 0, len(leaf_hashes)
        while position < count:
            if not self._size % EXTEND_CHUNK and count - position >= EXTEND_CHUNK:
                chunk = leaf_hashes[position : position + EXTEND_CHUNK]
                self._push_subtree(EXTEND_HEIGHT, root(chunk))
                position += EXTEND_CHUNK
            else:
                self._push_subtree(0, leaf_hashes[position])
                position += 1

    def _push_subtree(self, height: int, h: bytes) -> list[tuple[int, bytes]]:
        # A complete subtree of 2^height leaves (the size so far is a multiple of it);
        # returns (node key, hash) of each larger subtree it completes.
        start = self._size
        self._size += 1 << height
        completed: list[tuple[int, bytes]] = []
        while self._peaks and self._peaks[-1][0] == height:
            _, left = self._peaks.pop()
            h = node_hash(left, h)
            start -= 1 << height
            height += 1
            completed.append((node_key(height, start), h))
        self._peaks.append((height, h))
        return completed

    def root(self) -> bytes:
        """The Merkle tree hash of all leaves appended so far."""
        if not self._peaks:
            return EMPTY_ROOT
        # MTH of a size 2^a + 2^b + ... (a > b > ...) is node(peak_a, MTH(rest)).
        r = self._peaks[-1][1]
        for _, peak in reversed(self._peaks[:-1]):
            r = node_hash(peak, r)
        return r


def stored_nodes(leaf_hashes: Iterable[bytes]) -> Iterator[tuple[int, bytes]]:
    """Every (node key, hash) of the tree over `leaf_hashes`, streamed in O(log n) memory:
    the rows a log appending them one by one would have stored (a backfill, a bulk build)."""
    tree = TreeAccumulator()
    source = iter(leaf_hashes)
    while chunk := list(islice(source, EXTEND_CHUNK)):
        if len(chunk) < EXTEND_CHUNK or tree.size % EXTEND_CHUNK:
            for h in chunk:
                yield from tree.append_nodes(h)
            continue
        # A whole aligned chunk: its subtrees level by level, then what it completes above.
        start, level, height = tree.size, chunk, 0
        yield from ((node_key(0, start + i), h) for i, h in enumerate(level))
        while len(level) > 1:
            level = [node_hash(level[i], level[i + 1]) for i in range(0, len(level), 2)]
            height += 1
            yield from ((node_key(height, start + (i << height)), h) for i, h in enumerate(level))
        yield from tree._push_subtree(height, level[0])
