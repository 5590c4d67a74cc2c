"""Degenerate data for k-means and the k scan (issue 11.2).

Identical images, fewer distinct images than k.
"""

import warnings

import numpy as np
import pytest

from featclust import FeatureKMeans, KScan, UsageError
from featclust.kscan import choose_k
from featclust.reduce import count_distinct


def copies(n_distinct, n=24, d=16, seed=0):
    rng = np.random.default_rng(seed)
    rows = rng.random((n_distinct, d), dtype=np.float32)
    return rows[np.arange(n) % n_distinct]


def test_count_distinct_counts_exactly_equal_rows_and_stops_early():
    X = copies(3)
    assert count_distinct(X) == 3
    assert count_distinct(X, stop=2) == 2
    Y = X.copy()
    Y[0, 0] = np.nextafter(Y[0, 0], np.float32(2))  # one ulp apart: distinct
    assert count_distinct(Y) == 4
    Z = np.zeros((4, 3), np.float32)
    Z[1, 0] = -0.0
    assert count_distinct(Z) == 1


@pytest.mark.parametrize("n_distinct", [1, 2])
def test_more_clusters_than_distinct_images_is_a_usage_error_naming_the_count(n_distinct):
    with pytest.raises(
        UsageError,
        match=rf"n_clusters=3 is larger than the number of distinct "
        rf"images.* 24 images have only {n_distinct} distinct",
    ):
        FeatureKMeans(3).fit(copies(n_distinct))


def test_as_many_clusters_as_distinct_images_works_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = FeatureKMeans(3).fit(copies(3))
    assert sorted(np.bincount(model.labels_)) == [8, 8, 8]
    assert np.all(model.distances_ < 1e-5)


def test_scan_of_identical_images_is_a_clear_usage_error():
    with pytest.raises(UsageError, match="all 24 images have identical features"):
        KScan(ks=range(2, 6)).fit(copies(1))
    with pytest.raises(UsageError, match="identical features"):
        choose_k(copies(1))  # what sort -k auto runs


def test_scan_leaves_out_the_ks_above_the_number_of_distinct_images():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no k-means ConvergenceWarning about empty clusters
        scan = KScan(ks=range(2, 8), n_runs=2).fit(copies(3))
    assert scan.ks_ == [2, 3]
    assert list(scan.scores_["k"]) == [2, 3]
    assert scan.suggested_k_ == 3


def test_scan_whose_smallest_k_exceeds_the_distinct_images_names_the_count():
    with pytest.raises(
        UsageError,
        match="k=4 is larger than the number of distinct images: the 24 images have only 3",
    ):
        KScan(ks=[4, 5]).fit(copies(3))
