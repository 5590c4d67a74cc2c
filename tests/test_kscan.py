"""The k scan, the scores and the judging of a clustering, on synthetic features.

No images and no Keras here: the scan works on feature arrays, so blobs of
known groups stand in for stored features. The CLI on real images is in
tests/test_assign.py, which shares one sorted folder.
"""

import math

import numpy as np
import pytest
from sklearn.datasets import make_blobs
from sklearn.metrics import calinski_harabasz_score, davies_bouldin_score, silhouette_score

from featclust import FeatureKMeans, UsageError
from featclust.errors import UnsafeOutputError
from featclust.flags import FLAGS, cluster_table
from featclust.kscan import KScan, choose_k, parse_k_range, suggest_k
from featclust.output import save_kscan
from featclust.report.render import kscan_png
from featclust.scores import (
    SilhouetteSample,
    cluster_scores,
    cluster_silhouettes,
    compare_with_truth,
    judge,
    stability,
)
from featclust.tables import kscan_csv, kscan_table, read_truth_csv, truth_csv


def blobs(n=600, dim=32, groups=4, seed=0, std=1.0):
    X, y = make_blobs(
        n_samples=n, n_features=dim, centers=groups, cluster_std=std, random_state=seed
    )
    return X.astype(np.float32), y


def test_scores_agree_with_scikit_learn():
    X, y = blobs(n=500, groups=5, std=3.0)
    got = cluster_scores(X, y, SilhouetteSample(X, size=1000))
    assert got["silhouette"] == pytest.approx(silhouette_score(X, y), abs=1e-5)
    assert got["davies_bouldin"] == pytest.approx(davies_bouldin_score(X, y), rel=1e-5)
    assert got["calinski_harabasz"] == pytest.approx(calinski_harabasz_score(X, y), rel=1e-5)
    means = np.array([X[y == c].mean(axis=0) for c in range(5)])
    assert got["inertia"] == pytest.approx(float(np.sum((X - means[y]) ** 2)), rel=1e-5)


def test_silhouette_uses_a_fixed_sample_of_the_requested_size():
    X, y = blobs(n=3000, groups=3)
    sample = SilhouetteSample(X, size=200, random_state=1)
    assert len(sample.index) == 200
    assert np.array_equal(sample.index, SilhouetteSample(X, size=200, random_state=1).index)
    assert sample.score(y) == pytest.approx(
        silhouette_score(X[sample.index], y[sample.index]), abs=1e-5
    )
    assert math.isnan(sample.score(np.zeros(len(X), int)))


def test_stability_is_one_for_relabelled_copies_and_low_for_chance():
    a = np.repeat([0, 1, 2], 50)
    assert stability([a, (a + 1) % 3, a]) == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    assert stability([rng.integers(0, 3, 150) for _ in range(3)]) < 0.1


@pytest.mark.parametrize("groups", [3, 6])
def test_suggested_k_is_the_true_number_of_groups(groups):
    X, _ = blobs(groups=groups, seed=groups)
    scan = KScan(ks=range(2, 11)).fit(X)
    assert scan.ks_ == list(range(2, 11))
    assert list(scan.scores_["k"]) == scan.ks_
    assert scan.suggested_k_ == groups
    row = {c: v[groups - 2] for c, v in scan.scores_.items()}
    assert row["stability"] > 0.95
    assert row["silhouette"] == max(scan.scores_["silhouette"])
    assert "silhouette" in scan.reason_ and "reproducible" in scan.reason_


def test_fast_path_pca_and_subsamples_keeps_the_answer():
    # More rows than fit_size and more dimensions than fit_dims: k-means runs
    # on PCA components of subsamples, the scores on all rows and dimensions.
    X, y = blobs(n=2000, dim=64, groups=5, seed=3, std=2.0)
    scan = KScan(
        ks=range(2, 9), fit_size=400, fit_dims=8, sample_size=300, pca=None, normalize=False
    ).fit(X)
    assert scan.suggested_k_ == 5
    from sklearn.metrics import adjusted_rand_score

    assert adjusted_rand_score(y, scan.scan_labels_[scan.ks_.index(5)]) > 0.99
    full = cluster_scores(X, scan.scan_labels_[scan.ks_.index(5)], SilhouetteSample(X, size=300))
    assert scan.scores_["inertia"][3] == pytest.approx(full["inertia"])


def test_scan_in_the_space_sort_clusters_in():
    X, _ = blobs(groups=4, dim=16)
    plain = {c: v[0] for c, v in KScan(ks=[4], pca=None, normalize=False).fit(X).scores_.items()}
    reduced = {c: v[0] for c, v in KScan(ks=[4], pca=2, normalize=True).fit(X).scores_.items()}
    model = FeatureKMeans(4, pca=2, normalize=True).fit(X)
    Z = model.reduce(X)
    assert reduced["inertia"] < 4 * len(X)  # unit vectors in 2-D: far below the raw inertia
    assert reduced["inertia"] == pytest.approx(
        cluster_scores(Z, model.labels_)["inertia"], rel=1e-3
    )
    assert plain["inertia"] > 10 * reduced["inertia"]


def test_ks_beyond_the_number_of_images_are_left_out():
    X, _ = blobs(n=8, groups=2)
    scan = KScan(ks=range(2, 31)).fit(X)
    assert scan.ks_ == list(range(2, 8))
    with pytest.raises(UsageError, match="k=9 needs at least 10 images"):
        KScan(ks=[9, 12]).fit(X)


@pytest.mark.parametrize(
    "params, match",
    [
        ({"ks": [1, 2]}, "ks="),
        ({"ks": []}, "ks="),
        ({"ks": ["a"]}, "ks="),
        ({"n_runs": 1}, "n_runs=1"),
        ({"n_init": 0}, "n_init=0"),
        ({"min_stability": 2}, "min_stability=2"),
    ],
)
def test_invalid_parameters_are_named(params, match):
    with pytest.raises(UsageError, match=match):
        KScan(**params).fit(np.zeros((10, 3), np.float32))


def test_parse_k_range():
    assert parse_k_range("2:30") == list(range(2, 31))
    assert parse_k_range("2:10", step=4) == [2, 6, 10]
    assert parse_k_range("5") == [5]
    for bad in ("1:5", "5:2", "a:b", "2:3:4", ""):
        with pytest.raises(UsageError, match="k range"):
            parse_k_range(bad)


def test_suggestion_without_any_reproducible_k_says_so():
    scores = {
        "k": np.array([2, 3, 4]),
        "silhouette": np.array([0.1, 0.3, 0.2]),
        "stability": np.array([0.5, 0.4, 0.6]),
    }
    k, reason = suggest_k(scores)
    assert k == 3
    assert "no k is reproducible" in reason and "k=4" in reason
    scores["stability"][0] = 0.9
    assert suggest_k(scores)[0] == 2


def test_table_and_csv_mark_the_suggestion():
    X, _ = blobs(groups=3, seed=1)
    scan = KScan(ks=range(2, 6)).fit(X)
    table = kscan_table(scan.scores_, scan.suggested_k_).splitlines()
    assert table[0].split()[:3] == ["k", "inertia", "silhouette"]
    marked = [line for line in table if "<- suggested" in line]
    assert len(marked) == 1 and marked[0].split()[0] == "3"
    csv_lines = kscan_csv(scan.scores_, scan.suggested_k_).splitlines()
    assert csv_lines[0] == (
        "k,inertia,silhouette,davies_bouldin,calinski_harabasz,stability,suggested"
    )
    assert [line.split(",")[-1] for line in csv_lines[1:]] == ["0", "1", "0", "0"]


def test_save_kscan_writes_csv_and_png_and_never_overwrites_foreign_files(tmp_path):
    X, _ = blobs(groups=3, seed=2)
    scan = KScan(ks=range(2, 5)).fit(X)
    out = tmp_path / "scan"
    png = kscan_png(scan.scores_, scan.suggested_k_)
    csv_path, png_path = save_kscan(out, scan, png=png)
    assert csv_path.read_text().count("\n") == 4
    assert png_path.read_bytes() == png and png[:8] == b"\x89PNG\r\n\x1a\n"
    save_kscan(out, scan, png=png)  # its own files may be rewritten
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "kscan.csv").write_text("precious")
    with pytest.raises(UnsafeOutputError):
        save_kscan(foreign, scan, png=png)
    assert (foreign / "kscan.csv").read_text() == "precious"


def test_cluster_table_flags_tiny_and_loose_clusters():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2, 3], [50, 40, 30, 2])
    distances = rng.uniform(0.9, 1.1, len(labels))
    distances[labels == 2] *= 3  # members far from their centre
    rows = cluster_table(labels, distances, 5)
    assert [r["size"] for r in rows] == [50, 40, 30, 2, 0]
    assert [r["tiny"] for r in rows] == [False, False, False, True, True]
    assert [r["loose"] for r in rows] == [False, False, True, False, False]
    assert rows[2]["p95_distance"] == pytest.approx(np.percentile(distances[labels == 2], 95))
    assert math.isnan(rows[4]["mean_distance"])


def test_thresholds_are_the_95th_percentile_and_survive_save_and_load(tmp_path):
    X, _ = blobs(groups=3)
    model = FeatureKMeans(3).fit(X)
    for c in range(3):
        d = model.distances_[model.labels_ == c]
        assert model.thresholds_[c] == pytest.approx(np.percentile(d, 95))
        assert 0.03 < np.mean(d > model.thresholds_[c]) <= 0.06
    model.save(tmp_path / "m.npz")
    loaded, _ = FeatureKMeans.load(tmp_path / "m.npz")
    assert np.array_equal(loaded.thresholds_, model.thresholds_)


def test_judge_scores_the_model_and_compares_with_truth():
    X, y = blobs(groups=3, seed=4)
    model = FeatureKMeans(3).fit(X)
    paths = [f"img_{i:03d}.png" for i in range(len(X))]
    truth = {p: f"class{c}" for p, c in zip(paths, y)}
    truth["not/clustered.png"] = "class0"
    judged = judge(model, X, paths, truth)
    assert judged.scores["k"] == 3 and judged.scores["stability"] > 0.95
    assert judged.scores["silhouette"] > 0.5
    assert judged.truth.ari == pytest.approx(1.0) and judged.truth.nmi == pytest.approx(1.0)
    assert judged.truth.n_labelled == len(X) and judged.truth.n_unknown == 1
    assert judged.truth.contingency.sum() == len(X)
    assert sorted(judged.truth.contingency.max(axis=1)) == sorted(np.bincount(y))
    assert judged.info()["truth"]["ari"] == pytest.approx(1.0)
    lines = truth_csv(judged.truth).splitlines()
    assert lines[0] == "label,cluster_0,cluster_1,cluster_2,total"
    assert lines[-1].startswith("total,") and lines[-1].endswith(f",{len(X)}")


def test_truth_must_name_clustered_images():
    with pytest.raises(UsageError, match="none of the 1 paths"):
        compare_with_truth(["a.png"], np.array([0]), {"b.png": "x"})


def test_read_truth_csv(tmp_path):
    good = tmp_path / "truth.csv"
    good.write_text("path,label\n./a.png,ring\nsub\\b.png,grid\n")
    assert read_truth_csv(good) == {"a.png": "ring", "sub/b.png": "grid"}
    bad = tmp_path / "bad.csv"
    bad.write_text("file,class\na.png,ring\n")
    with pytest.raises(UsageError, match="path,label"):
        read_truth_csv(bad)
    twice = tmp_path / "twice.csv"
    twice.write_text("path,label\na.png,ring\na.png,grid\n")
    with pytest.raises(UsageError, match="two labels"):
        read_truth_csv(twice)
    with pytest.raises(UsageError, match="cannot read"):
        read_truth_csv(tmp_path / "missing.csv")


def test_choose_k_for_sort_auto():
    X, _ = blobs(groups=5, seed=5)
    assert choose_k(X, ks=range(2, 9)).suggested_k_ == 5


def test_cluster_silhouettes_are_per_cluster_means_on_one_sample():
    from sklearn.metrics import silhouette_samples

    X, y = blobs(n=300, groups=3, std=3.0)
    got = cluster_silhouettes(X, y, 4)
    s = silhouette_samples(X, y)
    assert got[:3] == pytest.approx([s[y == c].mean() for c in range(3)], abs=1e-5)
    assert got[3] is None  # an empty cluster
    sample = SilhouetteSample(X, size=100, random_state=2)
    small = cluster_silhouettes(X, y, 3, sample_size=100, random_state=2)
    s = silhouette_samples(X[sample.index], y[sample.index])
    sub = y[sample.index]
    assert small == pytest.approx([s[sub == c].mean() for c in range(3)], abs=1e-5)
    assert cluster_silhouettes(X, np.zeros(len(X), int), 2) == [None, None]


def test_judgement_info_is_json_without_nan():
    import json

    X, _ = blobs(n=40, groups=2)
    model = FeatureKMeans(1).fit(X)  # one cluster: silhouette and stability undefined
    info = judge(model, X).info()
    assert info["scores"]["silhouette"] is None and info["scores"]["stability"] is None
    assert info["truth"] is None and set(info["flags"]) == set(FLAGS)
    json.dumps(info, allow_nan=False)
