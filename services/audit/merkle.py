"""RFC 6962 / RFC 9162 Merkle tree hashes, inclusion and consistency proofs (SHA-256)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

HASH_SIZE = 32
LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
EMPTY_ROOT = hashlib.sha256(b"").digest()


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

    @property
    def size(self) -> int:
        """The number of leaves appended so far."""
        return self._size

    def append(self, leaf_hash: bytes) -> None:
        """Add the next leaf (given by its leaf hash)."""
        height, h = 0, leaf_hash
        while self._peaks and self._peaks[-1][0] == height:
            _, left = self._peaks.pop()
            h = node_hash(left, h)
            height += 1
        self._peaks.append((height, h))
        self._size += 1

    def extend(self, leaf_hashes: Sequence[bytes]) -> None:
        """Add several leaves in order."""
        for h in leaf_hashes:
            self.append(h)

    def root(self) -> bytes:
        """The Merkle tree hash of all leaves appended so far."""
        if not self._peaks:
            return EMPTY_ROOT
        # MTH of a size 2^a + 2^b + ... (a > b > ...) is node(peak_a, MTH(rest)).
        r = self._peaks[-1][1]
        for _, peak in reversed(self._peaks[:-1]):
            r = node_hash(peak, r)
        return r
