"""The report's pages: escaping, the header in words, random weights, galleries, the parent
sort, the near-duplicates page, the k-scan threshold line, the thumbnail map's title.

These build a sort-like output folder directly (real files: images, labels.csv,
model.npz, featclust.json) with synthetic features, so no network is loaded;
the end-to-end runs with the real Keras model are in test_report.py and
test_report_map.py.
"""

import io
import json
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
import pytest
from PIL import Image

from featclust import report
from featclust.cluster import FeatureKMeans
from featclust.output import LABELS_CSV, MODEL_NPZ, OutputFolder, RunRecord
from featclust.tables import labels_csv


def make_sorted(root, n=24, k=3, names=None, record_extra=None, seed=0, features=None):
    """A folder as ``sort`` leaves it, for ``n`` tiny images in ``k`` groups.

    ``features``: stand-in features to sort instead of ``k`` well-separated groups.
    Returns ``(out_dir, features, model, paths)``.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, (k, 16))
    if features is not None:
        n = len(features)
    truth = np.arange(n) % k
    X = (centres[truth] + rng.normal(0, 0.3, (n, 16))).astype(np.float32)
    if features is not None:
        X = np.asarray(features, np.float32)
    image_dir = root / "images"
    image_dir.mkdir(parents=True)
    paths = names or [f"img_{i:03d}.png" for i in range(n)]
    for i, rel in enumerate(paths):
        shade = int(40 + 200 * truth[i] / max(k - 1, 1))
        (image_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", (20, 12), shade).save(image_dir / rel, format="PNG")
    model = FeatureKMeans(n_clusters=k, random_state=0, n_init=1).fit(X)
    outliers = model.distances_ > model.thresholds_[model.labels_]
    out = OutputFolder(root / "out", image_dir)
    folders = [f"cluster_{c:02d}" for c in range(k)]
    copies = [f"{folders[c]}/{p}" for p, c in zip(paths, model.labels_)]
    record = RunRecord(
        command="sort",
        image_dir=str(image_dir),
        feature_settings={},
        clustering={**model.get_params(), "pca_components": None},
        embedder={"weights": "imagenet", "pooling": "max", "layer": "block4"},
        counts={"images": n, "bad_files": 0},
        **(record_extra or {}),
    )
    out.claim([LABELS_CSV, MODEL_NPZ, *copies], record)
    out.write_text(LABELS_CSV, labels_csv(paths, model.labels_, model.distances_, outliers))
    buf = io.BytesIO()
    model.save(buf)
    out.write_bytes(MODEL_NPZ, buf.getvalue())
    for rel, copy in zip(paths, copies):
        out.write_bytes(copy, (image_dir / rel).read_bytes())
    out.write_marker(None, "complete")
    return out.path, X, model, paths


def tamper(out, **fields):
    """Set fields of ``featclust.json`` as a hand edit would."""
    marker = out / "featclust.json"
    data = json.loads(marker.read_text())
    data.update(fields)
    marker.write_text(json.dumps(data))


class Page(HTMLParser):
    """Tags, attributes and text of a page."""

    def __init__(self, path):
        super().__init__()
        self.path, self.tags, self.text, self.refs = Path(path), [], [], []
        self.feed(self.path.read_text(encoding="utf-8"))

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        for name in ("src", "href"):
            if dict(attrs).get(name):
                self.refs.append(dict(attrs)[name])

    def handle_data(self, data):
        self.text.append(data)

    @property
    def words(self):
        return " ".join(" ".join(self.text).split())

    def target(self, ref):
        assert not urlsplit(ref).scheme, ref
        return (self.path.parent / unquote(urlsplit(ref).path)).resolve()


EVIL = '<b id="evil">x</b>'


def test_every_value_from_featclust_json_is_escaped_and_odd_types_do_not_crash(tmp_path):
    out, X, model, _ = make_sorted(tmp_path)
    tamper(
        out,
        scores={"silhouette": EVIL, "inertia": [EVIL], "stability": {"a": EVIL}},
        truth={"ari": EVIL, "nmi": {"x": EVIL}},
        counts={"bad_files": EVIL, "images": EVIL},
        flags={"tiny": 5, "loose": EVIL},
        kscan={"suggested_k": EVIL, "reason": EVIL},
        clustering={
            "n_clusters": 3,
            "method": EVIL,
            "pca": EVIL,
            "normalize": EVIL,
            "random_state": EVIL,
            "pca_components": EVIL,
        },
        embedder={"weights": EVIL, "pooling": EVIL, "layer": EVIL},
        created=EVIL,
        image_dir=str(tmp_path / "images") + EVIL,
    )
    result = report.write_report(out, features=X, model=model)
    page = Page(result.index)
    assert not [a for _, a in page.tags if a.get("id") == "evil"]
    assert ("b", {"id": "evil"}) not in page.tags
    assert EVIL not in result.index.read_text()
    assert "&lt;b id=&quot;evil&quot;&gt;" in result.index.read_text()
    for html in (out / "report" / "clusters").glob("*.html"):
        assert EVIL not in html.read_text()


def test_header_in_words_and_random_weights_flagged_on_every_page(tmp_path):
    out, X, model, _ = make_sorted(tmp_path)
    tamper(
        out,
        embedder={"weights": "none", "pooling": "max", "layer": "block4"},
        clustering={**model.get_params(), "pca": 8, "pca_components": 8, "normalize": True},
    )
    result = report.write_report(out, features=X, model=model)
    text = result.index.read_text()
    words = Page(result.index).words
    for repr_like in ("pca=", "normalize=", "seed=", "None", "True", "False"):
        assert repr_like not in words, repr_like
    assert "k-means into 3 clusters" in words
    assert "reduced to 8 dimensions by PCA" in words
    assert "scaled to unit length" in words
    assert "VGG16 with random weights (not pretrained), output of block4, max pooling" in words
    assert re.search(r'<p class="random">[^<]*random weights', text)
    for html in (out / "report" / "clusters").glob("*.html"):
        assert 'class="random"' in html.read_text()
    # pretrained weights: no flag
    tamper(out, embedder={"weights": "imagenet", "pooling": "avg", "layer": "block5"})
    result = report.write_report(out, features=X, model=model)
    assert 'class="random"' not in result.index.read_text()
    assert (
        "VGG16 with ImageNet weights, output of block5, average pooling" in Page(result.index).words
    )


def test_each_cluster_has_a_gallery_in_distance_order_linking_to_the_copies(tmp_path):
    names = [f"sub/img {i:03d}&'x.png" for i in range(24)]
    out, X, model, paths = make_sorted(tmp_path, names=names)
    result = report.write_report(out, features=X, model=model)
    index = Page(result.index)
    galleries = [r for r in index.refs if r.startswith("clusters/")]
    assert len(galleries) == 3
    marker = set(json.loads((out / "featclust.json").read_text())["files"])
    outliers = model.distances_ > model.thresholds_[model.labels_]
    assert outliers.any()
    for c in range(3):
        rel = f"report/clusters/cluster_{c:02d}.html"
        assert rel in marker and rel in result.files
        assert any(index.target(r) == (out / rel).resolve() for r in galleries)
        page = Page(out / rel)
        figures = re.findall(
            r"<figure( class=\"out\")?>.*?<figcaption>(.*?)<br>distance "
            r"([0-9.e+-]+)( <span class=\"flag\">outlier</span>)?",
            (out / rel).read_text(),
        )
        members = np.flatnonzero(model.labels_ == c)
        members = members[np.argsort(model.distances_[members], kind="stable")]
        from html import unescape

        names_shown = [unescape(re.sub(r"<[^>]+>", "", f[1])) for f in figures]
        assert names_shown == [paths[i] for i in members]
        dists = [float(f[2]) for f in figures]
        assert dists == sorted(dists)
        assert [bool(f[3]) for f in figures] == list(outliers[members])
        assert [bool(f[0]) for f in figures] == list(outliers[members])
        imgs = [a["src"] for t, a in page.tags if t == "img"]
        assert [page.target(s) for s in imgs] == [
            (out / f"cluster_{c:02d}" / paths[i]).resolve() for i in members
        ]
        assert all(page.target(s).is_file() for s in imgs)
        back = [r for r in page.refs if "index.html" in r]
        assert back and page.target(back[0]) == result.index.resolve()
    # the montage PNGs stay
    assert (out / "report" / "montages" / "cluster_00.png").is_file()


def test_a_sub_clustering_links_back_to_the_parent_report(tmp_path):
    parent_out, X, model, _ = make_sorted(tmp_path / "parent")
    report.write_report(parent_out, features=X, model=model)
    out, X2, model2, _ = make_sorted(tmp_path / "deep" / "child", seed=1)
    tamper(out, parent={"out_dir": str(parent_out), "cluster": "cluster_01"})
    result = report.write_report(out, features=X2, model=model2)
    page = Page(result.index)
    assert "refines cluster cluster_01 of an earlier sort" in page.words
    links = [r for r in page.refs if "index.html" in r]
    assert links and all(not r.startswith("/") for r in links)
    assert page.target(links[0]) == (parent_out / "report" / "index.html").resolve()
    assert urlsplit(links[0]).fragment == "cluster_01"
    # a hostile parent in a hand-edited record is escaped, a wrong type ignored
    tamper(out, parent={"out_dir": str(parent_out), "cluster": EVIL})
    assert EVIL not in report.write_report(out, features=X2, model=model2).index.read_text()
    tamper(out, parent={"out_dir": 5})
    assert "refines" not in report.write_report(out, features=X2, model=model2).index.read_text()


def test_duplicates_page_shows_each_group_side_by_side(tmp_path):
    image_dir = tmp_path / "pics"
    names = ["a.png", "sub/a copy.png", "b<i>.png", "c.png", "c2.png"]
    for rel in names:
        (image_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", (8, 8), 128).save(image_dir / rel)
    out_dir = tmp_path / "dups"
    out_dir.mkdir()
    groups = [
        [("a.png", 1.0), ("sub/a copy.png", 0.9876), ("b<i>.png", 0.95)],
        [("c.png", 1.0), ("c2.png", 0.97)],
    ]
    html = report.duplicates_html(
        groups, out_dir, image_dir, exact_groups=[["c.png", "c2.png"]], threshold=0.95
    )
    assert "<i>" not in html and "b&lt;i&gt;.png" in html
    (out_dir / "duplicates.html").write_text(html)
    page = Page(out_dir / "duplicates.html")
    rows = re.findall(r'<div class="dup">(.*?)</div>', html, re.S)
    assert len(rows) == 3
    first = re.findall(r'<img src="([^"]+)"', rows[0])
    assert [page.target(s) for s in first] == [(image_dir / n).resolve() for n in names[:3]]
    assert "similarity 0.9876" in rows[0] and "similarity 0.95" in rows[0]
    assert all(page.target(r).is_file() for r in page.refs)
    assert "2 groups" in page.words and "at least 0.95" in page.words


def test_kscan_plot_draws_the_stability_threshold_the_rule_uses():
    from featclust.kscan import MIN_STABILITY

    ks = np.arange(2, 7)
    scores = {
        "k": ks,
        "inertia": 10.0 / ks,
        "silhouette": np.full(5, 0.3),
        "davies_bouldin": np.ones(5),
        "calinski_harabasz": ks * 1.0,
        "stability": np.linspace(0.5, 1, 5),
    }
    fig = report.render.kscan_figure(scores, 3)
    ax = next(a for a in fig.axes if a.get_title().startswith("stability"))
    flat = [ln for ln in ax.get_lines() if np.allclose(ln.get_ydata(), MIN_STABILITY)]
    assert flat, "no line at the stability threshold"
    others = [a for a in fig.axes if not a.get_title().startswith("stability")]
    assert not any(
        np.allclose(ln.get_ydata(), MIN_STABILITY)
        for a in others
        for ln in a.get_lines()
        if len(ln.get_ydata()) == 2
    )
    buf = io.BytesIO()
    report.plot_kscan(scores, 3, buf)
    assert buf.getvalue()[:4] == b"\x89PNG"


def test_thumbnail_map_has_a_title(tmp_path):
    out, X, model, _ = make_sorted(tmp_path)
    report.write_report(out, features=X, model=model, map_method="pca")
    with Image.open(out / "report" / "map_thumbnails.png") as im:
        w, h = im.size
        strip = np.asarray(im.convert("L").crop((0, 0, w, 30)))
    assert h > w, "the title sits above the square map"
    assert (strip < 80).sum() > 200, "no title text at the top"


def _run(code, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env=env,
    )


def test_identical_features_never_kill_the_process(tmp_path):
    """A folder of identical images: the map is left out with a note (the t-SNE of
    scikit-learn segfaulted on zero variance), in a subprocess so a crash fails here."""
    out, X, model, _ = make_sorted(tmp_path)
    code = f"""
import numpy as np
from featclust import report
out = {str(out)!r}
Z = np.ones((24, 16), np.float32)
xy = report.embed_2d(Z, "tsne")
assert xy.shape == (24, 2) and np.isfinite(xy).all()
assert np.isfinite(report.embed_2d(np.zeros((30, 512), np.float32), "tsne")).all()
from featclust.output import open_sorted
m = open_sorted(out).model
res = report.write_report(out, features=Z, model=m, map_method="tsne")
print("METHOD", res.map_method, "NOTE", res.map_note)
"""
    proc = _run(code, tmp_path)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-3000:])
    assert "METHOD None" in proc.stdout and "identical features" in proc.stdout
    page = (out / "report" / "index.html").read_text()
    assert "identical features" in page and "map.png" not in page
    assert not (out / "report" / "map.png").exists()


def test_too_few_distinct_images_get_the_pca_map_with_a_note(tmp_path):
    out, X, model, _ = make_sorted(tmp_path, n=12)
    Z = np.repeat(np.eye(3, 16, dtype=np.float32), 4, axis=0)
    result = report.write_report(out, features=Z, model=model, map_method="auto")
    assert result.map_method == "pca"
    assert "3 distinct feature vectors" in result.map_note
    page = Page(result.index)
    assert "3 distinct feature vectors" in page.words and "map.png" in page.refs
    # and t-SNE on duplicates maps identical rows to one place
    rng = np.random.default_rng(0)
    U = rng.normal(size=(40, 16)).astype(np.float32)
    xy = report.embed_2d(np.vstack([U, U[:10]]), "tsne")
    assert np.array_equal(xy[40:], xy[:10])


@pytest.mark.parametrize("bad", ["nan", "inf"])
def test_non_finite_features_leave_the_map_out(tmp_path, bad):
    out, X, model, _ = make_sorted(tmp_path)
    X = X.copy()
    X[3, 2] = float(bad)
    method, note = report.map_plan(X, "auto")
    assert method is None and "not finite" in note


def test_duplicates_page_numbers_groups_as_the_csv_does(tmp_path):
    """Issue 21 case 16: duplicates.html numbered groups from 0, duplicates.csv from 1."""
    from featclust.tables import duplicates_csv

    image_dir = tmp_path / "pics"
    image_dir.mkdir()
    for name in ("a.png", "b.png", "c.png", "d.png"):
        Image.new("L", (8, 8), 128).save(image_dir / name)
    groups = [[("a.png", 1.0), ("b.png", 0.97)], [("c.png", 1.0), ("d.png", 0.96)]]
    html = report.duplicates_html(groups, tmp_path, image_dir, exact_groups=[["a.png", "b.png"]])
    csv_groups = {}
    for row in duplicates_csv(groups).splitlines()[1:]:
        csv_groups.setdefault(int(row.split(",")[0]), []).append(row.split(",")[1])
    page_groups = {
        int(n): re.findall(r"<figcaption>(.*?)<br>", body)
        for n, body in re.findall(
            r"<h3 id=\"group-\d+\">Group (\d+):.*?</h3>(.*?)</div>", html, re.S
        )
    }
    page_groups = {n: [re.sub(r"<[^>]+>", "", x) for x in v] for n, v in page_groups.items()}
    assert page_groups == csv_groups == {1: ["a.png", "b.png"], 2: ["c.png", "d.png"]}
    assert "Identical 1: 2 files" in html


def test_file_names_never_wrap_inside_the_extension():
    html = report.gallery.file_name("sub/a_very_long-name.of a picture.jpeg")
    assert html.endswith('<span class="ext">.jpeg</span>')
    assert "<wbr>" in html and "sub/<wbr>" in html
    assert report.gallery.file_name("<b>.png") == '&lt;b&gt;<span class="ext">.png</span>'
    assert report.gallery.file_name(".hidden") == ".<wbr>hidden"


def _system_chromium():
    import shutil

    return next(
        (shutil.which(n) for n in ("chromium", "chromium-browser") if shutil.which(n)), None
    )


@pytest.mark.skipif(_system_chromium() is None, reason="no Chromium on this machine")
def test_gallery_names_wrap_between_words_not_inside_the_extension_in_chromium(tmp_path):
    """Issue 21 case 16: captions broke in the middle of ``.png``; laid out by Chromium."""
    sync_api = pytest.importorskip("playwright.sync_api")
    names = [
        "holiday_photos_2024_beach_sunset_panorama_final_version_edited.png",
        "IMG20240101123456789012345678901234567890.jpeg",
        "scan-of-an-old-letter-from-grandmother-page-three.png",
    ] + [f"img_{i:03d}.png" for i in range(21)]
    out, X, model, _ = make_sorted(tmp_path, names=names)
    report.write_report(out, features=X, model=model)
    pages = sorted((out / "report" / "clusters").glob("*.html"))
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_system_chromium(), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 900, "height": 900})
            checked = 0
            for gallery in pages:
                page.goto(gallery.as_uri())
                spans = page.eval_on_selector_all(
                    "figcaption .ext",
                    "els => els.map(e => [e.textContent, e.getClientRects().length, "
                    "e.closest('figure').getBoundingClientRect().width, "
                    "e.getBoundingClientRect().right - "
                    "e.closest('figure').getBoundingClientRect().right])",
                )
                for ext, rects, width, overflow in spans:
                    assert rects == 1, f"{ext} is broken across lines"
                    assert overflow <= 1, f"{ext} sticks out of its {width}px caption"
                    checked += 1
                if any(n in gallery.read_text() for n in ("holiday_photos", "IMG2024")):
                    page.screenshot(path=str(tmp_path / f"{gallery.stem}.png"), full_page=True)
            assert checked == len(names)
        finally:
            browser.close()
