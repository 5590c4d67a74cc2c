"""Learning from the corrections (issue 22 point 2): re-sort the rest, doubt scores.

Synthetic features whose groups are known: long parallel strips, which k-means
cuts across (its draft mixes the strips) and a neighbour graph follows.
"""

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score

from featclust.errors import FeatclustError, UsageError
from featclust.relabel import doubt, resort_labels


def strips(n_per=80, k=3, seed=0):
    """``(X, truth)``: k long thin parallel strips in 2-D, padded with 2 noise dimensions."""
    rng = np.random.default_rng(seed)
    xs = rng.uniform(0, 12, (k, n_per))
    X = np.concatenate(
        [
            np.column_stack(
                [xs[c], np.full(n_per, 2.0 * c) + rng.normal(0, 0.12, n_per)]
                + [rng.normal(0, 0.05, n_per) for _ in range(2)]
            )
            for c in range(k)
        ]
    )
    return X.astype(np.float32), np.repeat(np.arange(k), n_per)


def draft(X, k):
    return KMeans(k, n_init=4, random_state=0).fit_predict(X)


def corrected(truth, labels, n_fixed, seed=0):
    """Move ``n_fixed`` random images to their true class's number: (labels, fixed)."""
    rng = np.random.default_rng(seed)
    fixed = np.zeros(len(truth), bool)
    fixed[rng.choice(len(truth), n_fixed, replace=False)] = True
    moved = labels.copy()
    moved[fixed] = truth[fixed]
    return moved, fixed


def test_resort_with_clamped_corrections_recovers_the_groups_kmeans_cut_across():
    X, truth = strips()
    labels = draft(X, 3)
    assert adjusted_rand_score(truth, labels) < 0.3  # k-means cuts the strips across
    moved, fixed = corrected(truth, labels, 60)  # a quarter of the images
    before = adjusted_rand_score(truth, moved)
    new = resort_labels(X, moved, fixed, random_state=0)
    assert adjusted_rand_score(truth, new) > 0.9 > before + 0.7
    np.testing.assert_array_equal(new[fixed], moved[fixed])
    assert new.dtype == np.int64 and new.shape == labels.shape


@pytest.mark.parametrize("n_fixed", [1, 5, 40, 200])
def test_fixed_labels_never_change_and_clusters_with_a_fixed_member_stay(n_fixed):
    X, truth = strips(seed=n_fixed)
    labels = draft(X, 3)
    rng = np.random.default_rng(n_fixed)
    fixed = np.zeros(len(X), bool)
    fixed[rng.choice(len(X), n_fixed, replace=False)] = True
    # the person may fix any cluster for any image, even against the features
    labels = labels.copy()
    labels[fixed] = rng.integers(0, 3, n_fixed)
    new = resort_labels(X, labels, fixed)
    np.testing.assert_array_equal(new[fixed], labels[fixed])
    assert set(labels[fixed]) <= set(new)


@pytest.mark.parametrize("seed", range(4))
def test_the_resort_learns_more_than_the_moves_alone(seed):
    X, truth = strips(seed=seed)
    labels = draft(X, 3)
    moved, fixed = corrected(truth, labels, 30, seed=seed)
    new = resort_labels(X, moved, fixed)
    assert adjusted_rand_score(truth, new) > adjusted_rand_score(truth, moved) + 0.2


def test_more_corrections_do_better():
    X, truth = strips(seed=3)
    labels = draft(X, 3)
    scores = [
        adjusted_rand_score(truth, resort_labels(X, *corrected(truth, labels, n, seed=3)))
        for n in (15, 60)
    ]
    assert scores[1] > scores[0] + 0.2
    assert scores[1] > 0.9


def test_set_aside_images_stay_aside_and_take_no_part():
    X, truth = strips()
    labels = draft(X, 3)
    moved, fixed = corrected(truth, labels, 60)
    aside = np.zeros(len(X), bool)
    aside[np.flatnonzero(~fixed)[:10]] = True
    moved[aside] = -1
    new = resort_labels(X, moved, fixed)
    assert np.all(new[aside] == -1)
    assert np.all(new[~aside] >= 0)
    assert adjusted_rand_score(truth[~aside], new[~aside]) > 0.9


def test_no_fixed_image_leaves_the_labels_as_they_are():
    X, truth = strips()
    labels = draft(X, 3)
    new = resort_labels(X, labels, np.zeros(len(X), bool))
    np.testing.assert_array_equal(new, labels)
    assert new is not labels


def test_an_empty_cluster_number_and_a_single_image_work():
    X, truth = strips(n_per=20)
    labels = np.where(truth == 2, 3, truth)  # cluster 2 empty (after a merge)
    fixed = np.zeros(len(X), bool)
    fixed[[0, 25]] = True
    new = resort_labels(X, labels, fixed)
    assert set(new) <= {0, 1, 2, 3} and 0 in new and 1 in new
    one = resort_labels(X[:1], np.array([0]), np.array([True]))
    np.testing.assert_array_equal(one, [0])


def test_doubt_is_highest_for_images_between_or_across_clusters():
    centres = np.array([[0.0, 0.0], [4.0, 0.0]])
    X = np.array([[0.1, 0.0], [1.9, 0.0], [3.0, 0.0], [4.0, 0.1]])
    labels = np.array([0, 0, 0, 1])
    d = doubt(X, labels, centres)
    assert d.shape == (4,) and d.dtype == np.float64
    assert list(np.argsort(-d)[:2]) == [2, 1]
    assert d[2] > 1 > d[1]  # row 2 lies nearer the other centre
    np.testing.assert_allclose(d[0], 0.1 / 3.9)


def test_doubt_of_set_aside_images_and_of_a_lone_or_empty_cluster():
    X = np.array([[0.0, 0.0], [1.0, 0.0], [5.0, 0.0]])
    centres = np.array([[0.0, 0.0], [np.nan, np.nan], [5.0, 0.0]])
    d = doubt(X, np.array([0, -1, 2]), centres)
    assert d[1] == 0.0 and d[0] == 0.0 and d[2] == 0.0
    assert np.all(doubt(X, np.array([0, 0, 0]), centres[:1]) == 0.0)


def test_resort_then_doubt_orders_the_wrongly_sorted_first():
    X, truth = strips(seed=5)
    labels = draft(X, 3)
    centres = np.array([X[labels == c].mean(axis=0) for c in range(3)])
    wrong = labels.copy()
    wrong[:5] = (labels[:5] + 1) % 3  # five images put in a cluster far from them
    d = doubt(X, wrong, centres)
    assert set(np.argsort(-d)[:5]) == set(range(5))


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda X, y, f: resort_labels(X[0], y, f), r"X of shape \(4,\) must be a 2-D array"),
        (lambda X, y, f: resort_labels([["a", "b"]], y, f), r"X of shape \(1, 2\) must be"),
        (lambda X, y, f: resort_labels(X * np.nan, y, f), "X holds values that are not finite"),
        (lambda X, y, f: resort_labels(X, y[:3], f), r"labels of shape \(3,\) must be one"),
        (lambda X, y, f: resort_labels(X, y - 2, f), "smallest -2"),
        (lambda X, y, f: resort_labels(X, y * 1.0, f), "got dtype float64"),
        (lambda X, y, f: resort_labels(X, y, f.astype(int)), "fixed of shape .* dtype int"),
        (lambda X, y, f: resort_labels(X, y, f[:2]), r"fixed of shape \(2,\)"),
        (
            lambda X, y, f: resort_labels(X, np.where(f, -1, y), f),
            r"fixed marks \d+ image\(s\) set aside",
        ),
        (
            lambda X, y, f: resort_labels(X, y, f, random_state="x"),
            "random_state='x' must be an integer",
        ),
        (lambda X, y, f: doubt(X, y, np.zeros((3, 5))), r"centres of shape \(3, 5\) must be"),
        (lambda X, y, f: doubt(X, y, np.zeros((2, 4))), "labels has cluster 2 but centres has 2"),
    ],
)
def test_bad_inputs_are_usage_errors_naming_the_parameter_and_value(call, message):
    X, truth = strips(n_per=10)
    fixed = np.zeros(len(X), bool)
    fixed[:3] = True
    with pytest.raises(UsageError, match=message) as err:
        call(X, truth, fixed)
    assert isinstance(err.value, FeatclustError)
