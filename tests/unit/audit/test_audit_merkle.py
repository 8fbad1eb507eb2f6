"""RFC 6962 Merkle tree: known test vectors, a reference implementation, altered proofs."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.audit import merkle

# Test vectors of the Certificate Transparency / transparency-dev merkle test suite
# (proof/verify_test.go): leaves, roots of the trees of size 1..8, proofs.
VECTOR_LEAVES = [
    bytes.fromhex(h)
    for h in ("", "00", "10", "2021", "3031", "40414243", "5051525354555657",
              "606162636465666768696a6b6c6d6e6f")
]  # fmt: skip
VECTOR_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
# (leaf index, tree size, path); the Go suite numbers leaves from 1, these from 0.
VECTOR_INCLUSION = [
    (0, 1, []),
    (0, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (5, 8, ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (1, 5, ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
]  # fmt: skip
VECTOR_CONSISTENCY = [
    (1, 1, []),
    (1, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (6, 8, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 5, ["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
    (6, 7, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
]  # fmt: skip

VECTOR_HASHES = [merkle.leaf_hash(leaf) for leaf in VECTOR_LEAVES]


def hashes(n: int) -> list[bytes]:
    """Leaf hashes of `n` distinct leaves."""
    return [merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(n)]


# A direct transcription of RFC 6962 section 2.1, recursion and all, to check against.
def reference_mth(d: list[bytes]) -> bytes:
    if not d:
        return hashlib.sha256(b"").digest()
    if len(d) == 1:
        return d[0]
    k = 1
    while k * 2 < len(d):
        k *= 2
    return merkle.node_hash(reference_mth(d[:k]), reference_mth(d[k:]))


def reference_path(m: int, d: list[bytes]) -> list[bytes]:
    if len(d) == 1:
        return []
    k = 1
    while k * 2 < len(d):
        k *= 2
    if m < k:
        return reference_path(m, d[:k]) + [reference_mth(d[k:])]
    return reference_path(m - k, d[k:]) + [reference_mth(d[:k])]


def reference_subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    if m == len(d):
        return [] if b else [reference_mth(d)]
    k = 1
    while k * 2 < len(d):
        k *= 2
    if m <= k:
        return reference_subproof(m, d[:k], b) + [reference_mth(d[k:])]
    return reference_subproof(m - k, d[k:], False) + [reference_mth(d[:k])]


def flip(proof: list[bytes], position: int) -> list[bytes]:
    altered = list(proof)
    altered[position] = bytes([altered[position][0] ^ 0x10]) + altered[position][1:]
    return altered


def test_the_empty_tree_hashes_to_sha256_of_nothing() -> None:
    assert merkle.root([]).hex() == (
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )


@pytest.mark.parametrize("size", range(1, 9))
def test_roots_match_the_published_vectors(size: int) -> None:
    assert merkle.root(VECTOR_HASHES[:size]).hex() == VECTOR_ROOTS[size - 1]


@pytest.mark.parametrize(("index", "size", "path"), VECTOR_INCLUSION)
def test_inclusion_proofs_match_the_published_vectors(
    index: int, size: int, path: list[str]
) -> None:
    proof = merkle.inclusion_proof(index, VECTOR_HASHES[:size])
    assert [p.hex() for p in proof] == path
    root = bytes.fromhex(VECTOR_ROOTS[size - 1])
    assert merkle.verify_inclusion(VECTOR_HASHES[index], index, size, proof, root)


@pytest.mark.parametrize(("first", "second", "path"), VECTOR_CONSISTENCY)
def test_consistency_proofs_match_the_published_vectors(
    first: int, second: int, path: list[str]
) -> None:
    proof = merkle.consistency_proof(first, VECTOR_HASHES[:second])
    assert [p.hex() for p in proof] == path
    root1 = bytes.fromhex(VECTOR_ROOTS[first - 1])
    root2 = bytes.fromhex(VECTOR_ROOTS[second - 1])
    assert merkle.verify_consistency(first, second, root1, root2, proof)


@pytest.mark.parametrize("n", range(1, 41))
def test_roots_and_proofs_agree_with_the_rfc_text_for_every_size_up_to_40(n: int) -> None:
    leaves = hashes(n)
    root = reference_mth(leaves)
    assert merkle.root(leaves) == root
    accumulator = merkle.TreeAccumulator()
    accumulator.extend(leaves)
    assert accumulator.root() == root
    for index in range(n):
        proof = merkle.inclusion_proof(index, leaves)
        assert proof == reference_path(index, leaves)
        assert merkle.verify_inclusion(leaves[index], index, n, proof, root)
    for m in range(1, n + 1):
        proof = merkle.consistency_proof(m, leaves)
        assert proof == reference_subproof(m, leaves, True)
        assert merkle.verify_consistency(m, n, reference_mth(leaves[:m]), root, proof)


@pytest.mark.parametrize(("index", "n"), [(0, 2), (3, 7), (5, 8), (12, 13), (16, 40)])
def test_an_altered_inclusion_proof_fails(index: int, n: int) -> None:
    leaves = hashes(n)
    root = merkle.root(leaves)
    proof = merkle.inclusion_proof(index, leaves)
    leaf = leaves[index]
    assert merkle.verify_inclusion(leaf, index, n, proof, root)
    for position in range(len(proof)):
        assert not merkle.verify_inclusion(leaf, index, n, flip(proof, position), root)
    assert not merkle.verify_inclusion(leaf, index + 1, n, proof, root)
    assert not merkle.verify_inclusion(leaf, index - 1, n, proof, root)
    # A size off by one can give a tree of the same shape (the proof is then still
    # valid), so a wrong size means a different height, as in the CT test suite.
    assert not merkle.verify_inclusion(leaf, index, n * 2, proof, root)
    assert not merkle.verify_inclusion(leaf, index, n // 2, proof, root)
    assert not merkle.verify_inclusion(leaves[index - 1], index, n, proof, root)
    assert not merkle.verify_inclusion(leaf, index, n, proof[:-1], root)
    assert not merkle.verify_inclusion(leaf, index, n, [*proof, root], root)
    assert not merkle.verify_inclusion(leaf, index, n, [root, *proof], root)
    assert not merkle.verify_inclusion(leaf, index, n, proof, merkle.EMPTY_ROOT)


@pytest.mark.parametrize(("m", "n"), [(1, 2), (3, 7), (4, 8), (6, 8), (7, 13), (16, 40)])
def test_an_altered_consistency_proof_fails(m: int, n: int) -> None:
    leaves = hashes(n)
    root_m, root_n = merkle.root(leaves[:m]), merkle.root(leaves)
    proof = merkle.consistency_proof(m, leaves)
    assert merkle.verify_consistency(m, n, root_m, root_n, proof)
    for position in range(len(proof)):
        assert not merkle.verify_consistency(m, n, root_m, root_n, flip(proof, position))
    assert not merkle.verify_consistency(m - 1, n, root_m, root_n, proof)
    assert not merkle.verify_consistency(m + 1, n, root_m, root_n, proof)
    assert not merkle.verify_consistency(m, n * 2, root_m, root_n, proof)
    assert not merkle.verify_consistency(m, n // 2, root_m, root_n, proof)
    assert not merkle.verify_consistency(m, n, root_n, root_m, proof)
    assert not merkle.verify_consistency(m, n, root_m, root_n, [])
    assert not merkle.verify_consistency(m, n, root_m, root_n, proof[:-1])
    assert not merkle.verify_consistency(m, n, root_m, root_n, [*proof, root_m])
    assert not merkle.verify_consistency(m, n, root_m, root_n, [root_n, *proof])


def test_trivial_consistency_cases() -> None:
    leaves = hashes(5)
    root = merkle.root(leaves)
    assert merkle.verify_consistency(0, 5, merkle.EMPTY_ROOT, root, [])
    assert merkle.verify_consistency(5, 5, root, root, [])
    assert not merkle.verify_consistency(5, 5, root, merkle.EMPTY_ROOT, [])
    assert not merkle.verify_consistency(5, 5, root, root, [root])
    assert not merkle.verify_consistency(5, 4, root, root, [])


def test_the_empty_tree_is_consistent_only_with_its_own_root() -> None:
    other = hashes(1)[0]
    assert merkle.verify_consistency(0, 0, merkle.EMPTY_ROOT, merkle.EMPTY_ROOT, [])
    assert not merkle.verify_consistency(0, 0, merkle.EMPTY_ROOT, other, [])
    assert not merkle.verify_consistency(0, 0, other, merkle.EMPTY_ROOT, [])
    assert not merkle.verify_consistency(0, 0, other, hashes(2)[1], [])
    # a "size 0" tree claiming some other root is not the empty tree
    assert not merkle.verify_consistency(0, 5, other, merkle.root(hashes(5)), [])


def test_proofs_for_positions_outside_the_tree_are_refused() -> None:
    with pytest.raises(ValueError):
        merkle.inclusion_proof(3, hashes(3))
    with pytest.raises(ValueError):
        merkle.consistency_proof(4, hashes(3))
    assert not merkle.verify_inclusion(hashes(1)[0], 0, 0, [], merkle.EMPTY_ROOT)


@settings(max_examples=150, deadline=None)
@given(st.integers(min_value=1, max_value=300).flatmap(
    lambda n: st.tuples(st.just(n), st.integers(min_value=0, max_value=n))
))  # fmt: skip
def test_consistency_proofs_verify_for_any_sizes(sizes: tuple[int, int]) -> None:
    n, m = sizes
    leaves = hashes(n)
    proof = merkle.consistency_proof(m, leaves)
    assert merkle.verify_consistency(m, n, merkle.root(leaves[:m]), merkle.root(leaves), proof)
    if m:
        index = m - 1
        inclusion = merkle.inclusion_proof(index, leaves)
        assert merkle.verify_inclusion(leaves[index], index, n, inclusion, merkle.root(leaves))


@pytest.mark.parametrize("n", [1, 5, 64, merkle.EXTEND_CHUNK + 3, 3 * merkle.EXTEND_CHUNK - 1])
def test_the_stored_nodes_are_every_complete_subtree_and_nothing_else(n: int) -> None:
    leaves = hashes(n)
    nodes = dict(merkle.stored_nodes(iter(leaves)))
    expected = {}
    for level in range(n.bit_length()):
        width = 1 << level
        for start in range(0, n - width + 1, width):
            key = merkle.node_key(level, start)
            expected[key] = (
                leaves[start] if width == 1 else merkle.root(leaves[start : start + width])
            )
    assert nodes == expected
    assert merkle.size_of_last_key(max(nodes)) == n
    # the subtrees that tile [0, n) are the peaks an accumulator resumes from
    peaks = [nodes[merkle.node_key(level, start)] for level, start in merkle.subtrees(0, n)]
    assert merkle.TreeAccumulator.from_peaks(n, peaks).root() == reference_mth(leaves)


@given(st.lists(st.integers(min_value=1, max_value=merkle.EXTEND_CHUNK + 7), max_size=5))
@settings(max_examples=25, deadline=None)
def test_extending_in_any_pieces_gives_the_reference_root(pieces: list[int]) -> None:
    leaves = hashes(sum(pieces))
    accumulator, position = merkle.TreeAccumulator(), 0
    for piece in pieces:
        accumulator.extend(leaves[position : position + piece])
        position += piece
        assert accumulator.size == position
    assert accumulator.root() == merkle.root(leaves)
