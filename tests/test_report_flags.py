"""Doubtful clusters are flagged, with the reason, everywhere a person looks (issue 22).

"A cluster of mixed shapes with silhouette 0.08 had an empty flags column in
clusters.csv; stability 0.43 was printed without a word." Each flag
(:data:`featclust.flags.FLAGS`) is defined once in featclust.flags, written
to clusters.csv, printed by the sort's summary and shown on the report with
the ready command that splits the cluster. Stand-in features: groups on a
ring, sorted with fewer clusters than groups, so some clusters are mixtures.
"""

import json
import re

import numpy as np
import pytest
from test_report_pages import Page, make_sorted

from featclust import report
from featclust.cli import _print_judgement
from featclust.cluster import FeatureKMeans
from featclust.flags import FLAGS, LOW_SILHOUETTE, OUTLIER_SHARE, UNSTABLE_BELOW, cluster_table
from featclust.scores import cluster_stabilities, judge
from featclust.tables import COLUMNS, clusters_csv


def ring(n=120, groups=6, noise=2.5, seed=0):
    """``groups`` blobs on a ring, touching when ``noise`` is large."""
    rng = np.random.default_rng(seed)
    angle = np.arange(groups) * 2 * np.pi / groups
    centres = np.zeros((groups, 16))
    centres[:, 0], centres[:, 1] = 6 * np.cos(angle), 6 * np.sin(angle)
    truth = np.arange(n) % groups
    return (centres[truth] + rng.normal(0, noise, (n, 16))).astype(np.float32)


def blobs_in_a_row(n=100, noise=1.3, seed=0):
    """Three blobs in a row (k-means at k=4 cuts across them) and two far away."""
    rng = np.random.default_rng(seed)
    centres = np.zeros((5, 16))
    centres[0, 0], centres[1, 1], centres[3, 0], centres[4, 0] = 30, 30, 3, 6
    truth = np.arange(n) % 5
    return (centres[truth] + rng.normal(0, noise, (n, 16))).astype(np.float32)


def test_cluster_table_flags_each_doubt_with_its_figures_and_threshold():
    labels = np.repeat([0, 1, 2, 3, 4], [30, 30, 30, 30, 2])
    dists = np.ones(len(labels))
    dists[labels == 3] = 3.0  # loose: 3 times the median spread
    outliers = np.zeros(len(labels), bool)
    outliers[np.flatnonzero(labels == 2)[:9]] = True  # 30% beyond the threshold
    rows = cluster_table(
        labels,
        dists,
        5,
        silhouettes=[0.6, 0.08, 0.5, 0.4, None],
        stabilities=[0.95, 0.43, 0.9, 0.9, None],
        outliers=outliers,
    )
    assert [r["flags"] for r in rows] == [
        [],
        ["low_silhouette", "unstable"],
        ["outliers"],
        ["loose"],
        ["tiny"],
    ]
    assert "silhouette 0.08" in rows[1]["reasons"]["low_silhouette"]
    assert f"below {LOW_SILHOUETTE:g}" in rows[1]["reasons"]["low_silhouette"]
    assert "0.43" in rows[1]["reasons"]["unstable"]
    assert f"below {UNSTABLE_BELOW:g}" in rows[1]["reasons"]["unstable"]
    assert "9 of 30" in rows[2]["reasons"]["outliers"]
    assert f"{OUTLIER_SHARE:.0%}" in rows[2]["reasons"]["outliers"]
    assert "2 of 122 images" in rows[4]["reasons"]["tiny"]
    assert list(FLAGS) == ["tiny", "loose", "low_silhouette", "unstable", "outliers"]
    csv = clusters_csv(rows).splitlines()
    assert tuple(csv[0].split(",")) == COLUMNS["clusters.csv"]
    row = dict(zip(COLUMNS["clusters.csv"], csv[2].split(",")))
    assert (row["silhouette"], row["stability"]) == ("0.080", "0.430")
    assert row["flags"] == "low_silhouette;unstable"


def test_cluster_stability_finds_a_cluster_split_differently_by_every_run():
    labels = np.repeat([0, 1, 2], 20)
    runs = [labels.copy(), labels.copy()]
    runs[0][40:50] = 1  # half of cluster 2 goes to cluster 1 in one run ...
    runs[1][50:60] = 0  # ... the other half to cluster 0 in the other
    stab = cluster_stabilities(labels, runs, 4)
    assert stab[3] is None
    assert stab[2] == pytest.approx(0.5)
    assert stab[0] > 0.6 and stab[1] > 0.6


@pytest.fixture(scope="module")
def mixed():
    X = ring()
    model = FeatureKMeans(n_clusters=4, random_state=0).fit(X)
    return X, model, judge(model, X)


def test_sort_flags_the_mixed_clusters_in_clusters_csv_and_the_summary(mixed, capsys):
    X, model, judged = mixed
    low = [r["cluster"] for r in judged.clusters if r["silhouette"] < LOW_SILHOUETTE]
    assert low, "the stand-in set must hold a mixed cluster"
    rows = {int(r.split(",")[0]): r for r in clusters_csv(judged.clusters).splitlines()[1:]}
    for c in range(4):
        assert ("low_silhouette" in rows[c]) == (c in low)
    info = judged.info()
    assert info["flags"]["low_silhouette"] == low
    assert len(info["scores"]["cluster_stability"]) == 4
    json.dumps(info, allow_nan=False)
    _print_judgement(judged, len(X))
    err = capsys.readouterr().err
    for c in low:
        assert re.search(rf"warning: cluster {c} has a low silhouette \(silhouette 0\.\d\d", err)
    assert judged.scores["stability"] < 0.8
    assert "the clustering is unstable: repeated k-means runs agree with an adjusted Rand " in err
    assert f"only {judged.scores['stability']:.2f}" in err


def test_report_flags_a_doubtful_cluster_with_the_ready_split_command(mixed, tmp_path, monkeypatch):
    out, X, model, _ = make_sorted(tmp_path, k=4, features=blobs_in_a_row())
    (tmp_path / "my sorted").mkdir()
    moved = tmp_path / "my sorted" / "it's here"
    out.rename(moved)
    monkeypatch.chdir(tmp_path)
    given = "my sorted/it's here"
    result = report.write_report(given, features=X, model=model)
    flagged = {c: f for c, f in enumerate(result.flags) if f}
    low = {c for c, f in flagged.items() if "low_silhouette" in f}
    assert low and len(flagged) < 4
    words = Page(moved / "report" / "index.html").words
    for c in range(4):
        command = f"""featclust split 'my sorted/it'"'"'s here' {c}"""
        assert (command in words) == (c in flagged), c
    assert re.search(rf"low silhouette ?: silhouette -?0\.\d+, below {LOW_SILHOUETTE:g}", words)
    summary = (moved / "report" / "summary.csv").read_text().splitlines()
    assert summary[0].endswith(",flags")
    for c in range(4):
        assert ("low_silhouette" in summary[c + 1]) == (c in low)


def test_an_unstable_clustering_is_said_on_the_page_beside_its_stability(tmp_path):
    """Issue 22: "stability 0.43 was printed without a word"."""
    out, X, model, _ = make_sorted(tmp_path, record_extra={"scores": {"stability": 0.43}})
    result = report.write_report(out, features=X, model=model)
    words = Page(result.index).words
    assert "the clustering is unstable" in words and "only 0.43" in words
    assert not any("unstable" in w for w in result.warnings)  # not a stderr warning each time
    (tmp_path / "b").mkdir()
    out, X, model, _ = make_sorted(tmp_path / "b", record_extra={"scores": {"stability": 0.95}})
    page = Page(report.write_report(out, features=X, model=model).index)
    assert "the clustering is unstable" not in page.words
