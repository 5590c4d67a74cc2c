"""featclust.search: exact cosine top-k, near-duplicate groups, byte-identical groups (issue 13).

Unit tests on arrays (no model): the results against a brute-force reference,
independence of the block size, memory-mapped input read block by block.
"""

import tracemalloc

import numpy as np
import pytest

from featclust import UsageError
from featclust.search import (
    NEAR_DUPLICATE,
    exact_duplicate_groups,
    near_duplicate_groups,
    top_similar,
)


def features(n=1000, d=32, seed=0):
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


def brute_force(F, Q, top):
    U = F / np.linalg.norm(F, axis=1, keepdims=True)
    V = Q / np.linalg.norm(Q, axis=1, keepdims=True)
    S = V.astype(np.float64) @ U.T.astype(np.float64)
    idx = np.stack([np.lexsort((np.arange(len(F)), -row))[:top] for row in S])
    return idx, np.take_along_axis(S, idx, axis=1)


@pytest.mark.parametrize("block_rows", [7, 100, 5000])
def test_top_similar_matches_brute_force_whatever_the_block_size(block_rows):
    F = features()
    Q = np.concatenate([F[[5, 17]], features(3, seed=1)])
    idx, sims = top_similar(F, Q, top=12, block_rows=block_rows)
    ref_idx, ref_sims = brute_force(F, Q, 12)
    assert idx.shape == sims.shape == (5, 12)
    assert idx.dtype == np.int64 and sims.dtype == np.float32
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_allclose(sims, ref_sims, atol=1e-6)


def test_a_row_finds_itself_first_with_similarity_exactly_one():
    F = features(500, 512)
    idx, sims = top_similar(F, F[:50], top=3, block_rows=64)
    np.testing.assert_array_equal(idx[:, 0], np.arange(50))
    assert np.all(sims[:, 0] == 1.0)
    assert np.all(np.diff(sims, axis=1) <= 0)


def test_ties_go_to_the_lower_row_and_top_is_capped_at_the_rows():
    F = np.tile(features(1, 8), (6, 1))
    F[2] *= 3  # same direction: cosine 1
    idx, sims = top_similar(F, F[4], top=10, block_rows=4)
    assert idx.tolist() == [[0, 1, 2, 3, 4, 5]]
    assert np.all(sims == 1.0)


def test_zero_vectors_are_similar_to_nothing():
    F = features(10, 4)
    F[3] = 0
    idx, sims = top_similar(F, F[3], top=10)
    assert np.all(sims == 0)
    _, sims = top_similar(F, F[0], top=10)
    assert sims[0, -1] >= -1


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda F: top_similar(F, F[0], top=0), "top=0"),
        (lambda F: top_similar(F, F[0, :3], top=1), "3 columns"),
        (lambda F: top_similar(F[:0], F[0], top=1), "no rows"),
        (lambda F: top_similar(np.where(F > 2, np.nan, F), F[0], top=1), "NaN"),
        (lambda F: near_duplicate_groups(F, threshold=1.5), "threshold=1.5"),
        (lambda F: near_duplicate_groups(F, threshold=0), "threshold=0"),
        (lambda F: near_duplicate_groups(F[0]), "2-D"),
        (lambda F: exact_duplicate_groups("abc"), "one string"),
    ],
)
def test_bad_arguments_are_usage_errors_naming_them(call, match):
    with pytest.raises(UsageError, match=match):
        call(features(50, 8))


def test_memory_mapped_features_are_read_block_by_block(tmp_path):
    n, d = 20000, 64  # 5 MB of float32
    path = tmp_path / "f.npy"
    np.save(path, features(n, d))
    F = np.load(path, mmap_mode="r")
    tracemalloc.start()
    idx, _ = top_similar(F, F[:4], top=5, block_rows=1000)
    near_duplicate_groups(F, 0.99, block_rows=1000)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    np.testing.assert_array_equal(idx[:, 0], np.arange(4))
    # Blocks of 1000 rows (256 KB; the 1000 x 1000 similarities 4 MB), never the 5 MB matrix
    # as a float copy plus its products.
    assert peak < 9 << 20, peak


def planted(n=3000, d=64, seed=0):
    """Random rows plus planted near-copies: groups {10, 2000, 2999}, {7, 8} and exact {50, 51}."""
    rng = np.random.default_rng(seed)
    F = features(n, d, seed)
    F[2000] = F[10] + 0.02 * rng.standard_normal(d)
    F[2999] = F[10] * 2 + 0.02 * rng.standard_normal(d)  # scale does not matter (cosine)
    F[8] = F[7] + 0.03 * rng.standard_normal(d)
    F[51] = F[50]
    return F


@pytest.mark.parametrize("block_rows", [64, 1000, 4000])
def test_near_duplicate_groups_finds_the_planted_groups_and_nothing_else(block_rows):
    F = planted()
    groups = near_duplicate_groups(F, 0.99, block_rows=block_rows)
    assert [sorted(r for r, _ in g) for g in groups] == [[7, 8], [10, 2000, 2999], [50, 51]]
    for g in groups:
        first, rest = g[0], g[1:]
        assert first[1] == 1.0
        sims = [s for _, s in rest]
        assert sims == sorted(sims, reverse=True) and all(0.99 <= s <= 1 for s in sims)
        U = F[[r for r, _ in g]] / np.linalg.norm(F[[r for r, _ in g]], axis=1, keepdims=True)
        np.testing.assert_allclose(sims, U[1:] @ U[0], atol=1e-6)
    # the representative is the row linked to most others: 10 (linked to both copies;
    # 2000 and 2999 are also linked to each other, so all have degree 2: the lowest row)
    assert groups[1][0][0] == 10
    assert groups[2] == [(50, 1.0), (51, 1.0)]


def test_groups_are_connected_sets_and_the_representative_is_the_hub():
    base = features(1, 16)[0]
    rng = np.random.default_rng(3)
    far = features(5, 16, seed=9)
    # 1 is near 0 and near 2; 0 and 2 are further apart than the threshold
    u = rng.standard_normal(16).astype(np.float32)
    u -= u @ base / (base @ base) * base
    u *= 0.1 * np.linalg.norm(base) / np.linalg.norm(u)
    F = np.stack([base - u, base, base + u, *far])
    sims = F[:3] @ F[:3].T / np.outer(*[np.linalg.norm(F[:3], axis=1)] * 2)
    t = (sims[0, 1] + sims[0, 2]) / 2
    assert sims[0, 2] < t <= sims[0, 1]
    groups = near_duplicate_groups(F, t)
    assert len(groups) == 1 and groups[0][0] == (1, 1.0)
    assert sorted(r for r, _ in groups[0]) == [0, 1, 2]


def test_no_groups_in_distinct_rows_and_the_default_threshold():
    assert near_duplicate_groups(features(300, 64)) == []
    assert near_duplicate_groups(np.zeros((0, 8), np.float32)) == []
    assert 0 < NEAR_DUPLICATE <= 1


def test_identical_rows_form_one_group():
    F = np.tile(features(1, 8), (5, 1))
    assert near_duplicate_groups(F) == [[(r, 1.0) for r in range(5)]]


def test_exact_duplicate_groups_by_hash():
    hashes = ["a", "b", "a", "", None, "b", "c", "a", None]
    assert exact_duplicate_groups(hashes) == [[0, 2, 7], [1, 5]]
    assert exact_duplicate_groups([]) == []
    assert exact_duplicate_groups(np.array(["x", "y", "x"])) == [[0, 2]]
