"""The report: montages, overview, 2-D map and index.html, written by sort and by `report`."""

import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
import pytest
from conftest import read_csv
from PIL import Image

from featclust import report, sort_folder
from featclust.cli import main
from featclust.demo import demo_images
from featclust.errors import UnsafeOutputError


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.links, self.ids = [], [], set()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if tag == "img":
            self.images.append(attrs["src"])
        if tag == "a":
            self.links.append(attrs["href"])
        for name in ("src", "href"):
            value = attrs.get(name) or ""
            assert not urlsplit(value).scheme, f"page must not load {value!r} from elsewhere"


def _parse(index):
    p = _Links()
    p.feed(index.read_text(encoding="utf-8"))
    return p


def _target(index, ref):
    return (index.parent / unquote(urlsplit(ref).path)).resolve()


def _marker_files(out):
    return set(json.loads((out / "featclust.json").read_text())["files"])


N_DEMO = 16


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory):
    """`featclust demo` with random weights, run once.

    The sample folder is written beforehand with 4 images per family instead
    of 12 (demo re-uses a complete sample folder), to keep the test fast.
    """
    tmp = tmp_path_factory.mktemp("demo")
    out = tmp / "out"
    demo_images(tmp / "images", n_per_family=N_DEMO // 4)
    rc = main(
        [
            "demo",
            str(out),
            "--weights",
            "none",
            "--images",
            str(tmp / "images"),
            "--store",
            str(tmp / "store"),
            "--batch-size",
            "16",
            "-q",
        ]
    )
    assert rc == 0
    assert len(list((tmp / "images").glob("*.png"))) == N_DEMO
    return out


@pytest.fixture(scope="module")
def store_root(tmp_path_factory):
    """One feature store for the tests that sort the two-family folder."""
    return tmp_path_factory.mktemp("store")


def test_demo_writes_a_page_whose_every_reference_exists(demo_out):
    index = demo_out / "report" / "index.html"
    page = _parse(index)
    clusters = read_csv(demo_out / "report" / "summary.csv")
    assert len(clusters) == 4
    assert sum(int(c["size"]) for c in clusters) == N_DEMO
    for c in clusters:
        assert -1 <= float(c["silhouette"]) <= 1
    # the page shows the sort's scores as recorded in the marker
    scores = json.loads((demo_out / "featclust.json").read_text())["scores"]
    assert f"<dd>{scores['silhouette']:.3g}</dd>" in index.read_text()
    # the overview, both maps and one montage per cluster are on the page ...
    expected = {"overview.png", "map.png", "map_thumbnails.png"} | {
        f"montages/{c['folder']}.png" for c in clusters
    }
    assert set(page.images) == expected
    # ... every image and link resolves to a file or folder on disk ...
    for ref in page.images + page.links:
        if ref.startswith("#"):
            assert ref[1:] in page.ids
            continue
        assert _target(index, ref).exists(), ref
    for ref in page.images:
        with Image.open(_target(index, ref)) as im:
            im.verify()
    # ... the links reach the cluster folders, which hold only the user's images
    folders = {_target(index, ref) for ref in page.links if ref.endswith("/")}
    assert folders == {(demo_out / c["folder"]).resolve() for c in clusters}
    for folder in folders:
        assert {p.suffix for p in folder.rglob("*") if p.is_file()} == {".png"}
        assert len(list(folder.rglob("*.png"))) == int(
            next(c["size"] for c in clusters if c["folder"] == folder.name)
        )
    # every report file is featclust's own, recorded in the marker
    written = {
        p.relative_to(demo_out).as_posix() for p in (demo_out / "report").rglob("*") if p.is_file()
    }
    assert written <= _marker_files(demo_out)
    coords = read_csv(demo_out / "report" / "map.csv")
    assert len(coords) == N_DEMO and all(np.isfinite(float(r["x"])) for r in coords)


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.mark.skipif(_chromium() is None, reason="no Chromium on this machine")
def test_page_renders_in_headless_chromium_with_every_image_loaded(demo_out, tmp_path):
    index = (demo_out / "report" / "index.html").resolve()
    n_images = len(_parse(index).images)
    harness = tmp_path / "harness.html"
    harness.write_text(
        '<!DOCTYPE html><html><body><pre id="r">pending</pre>'
        f'<iframe id="f" src="{index.as_uri()}" width="1400" height="900"></iframe><script>'
        'document.getElementById("f").addEventListener("load", function () {'
        "  var imgs = Array.from(this.contentDocument.images);"
        '  document.getElementById("r").textContent = "RESULT=" + JSON.stringify('
        "    imgs.map(function (i) {"
        '      return [i.getAttribute("src"), i.complete, i.naturalWidth]; }));'
        "});</script></body></html>",
        encoding="utf-8",
    )
    proc = subprocess.run(
        [
            _chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--allow-file-access-from-files",
            "--virtual-time-budget=15000",
            "--dump-dom",
            harness.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    line = next((ln for ln in proc.stdout.splitlines() if "RESULT=[" in ln), None)
    assert line, proc.stderr[-2000:]
    loaded = json.loads(line.split("RESULT=", 1)[1].split("</pre>")[0].replace("&quot;", '"'))
    assert len(loaded) == n_images
    for src, complete, width in loaded:
        assert complete and width > 0, f"{src} did not load"


def test_report_is_recreated_without_touching_foreign_files(demo_out, capsys):
    mine = demo_out / "report" / "my_notes.txt"
    mine.write_text("keep me")
    (demo_out / "notes.txt").write_text("keep me too")
    first = (demo_out / "report" / "montages" / "cluster_00.csv").read_text()
    (demo_out / "report" / "montages" / "cluster_00.png").unlink()
    before = _marker_files(demo_out)

    assert main(["report", str(demo_out), "--map", "pca", "-q"]) == 0
    assert capsys.readouterr().err == ""
    assert mine.read_text() == "keep me"
    assert (demo_out / "notes.txt").read_text() == "keep me too"
    assert (demo_out / "report" / "montages" / "cluster_00.png").is_file()
    assert (demo_out / "report" / "montages" / "cluster_00.csv").read_text() == first
    assert "PCA to 2 dimensions" in (demo_out / "report" / "index.html").read_text()
    assert _marker_files(demo_out) == before
    assert json.loads((demo_out / "featclust.json").read_text())["status"] == "complete"

    # The t-SNE map is cached in the store root: a new report re-uses it.
    info = json.loads((demo_out / "featclust.json").read_text())
    cached = list((Path(info["store_root"]) / "maps").glob("tsne-*.npy"))
    assert len(cached) == 1
    xy = np.load(cached[0])
    np.save(cached[0], xy + [1000.0, 0.0])
    assert main(["report", str(demo_out), "-q"]) == 0
    xs = [float(r["x"]) for r in read_csv(demo_out / "report" / "map.csv")]
    assert min(xs) > 900

    # A k-scan written into the folder afterwards shows up in the next report.
    assert (
        main(
            [
                "scan-k",
                info["image_dir"],
                "--k",
                "2:4",
                "--weights",
                "none",
                "--store",
                info["store_root"],
                "--out",
                str(demo_out),
                "-q",
            ]
        )
        == 0
    )
    assert main(["report", str(demo_out), "-q"]) == 0
    page = _parse(demo_out / "report" / "index.html")
    assert "kscan.png" in page.images and (demo_out / "report" / "kscan.png").is_file()
    assert mine.read_text() == "keep me"
    capsys.readouterr()

    # Without the feature store, the report says so and leaves the map out.
    store = json.loads((demo_out / "featclust.json").read_text())["store"]
    shutil.rmtree(store)
    assert main(["report", str(demo_out), "-q"]) == 0
    err = capsys.readouterr().err
    assert "no longer exists" in err and "no 2-D map" in err and len(err.splitlines()) == 1
    page = (demo_out / "report" / "index.html").read_text()
    assert "no longer exists" in page and "map.png" not in page
    assert not (demo_out / "report" / "map.png").exists()
    assert "report/map.png" not in _marker_files(demo_out)
    assert mine.read_text() == "keep me"
    assert not Path(store).exists(), "the report must not re-create an empty store"


def _nearest_source(tile, sources):
    """Which source image (name -> 96x96 grey array) a montage tile shows."""
    grey = np.asarray(tile.convert("L"), np.float32)
    return min(sources, key=lambda name: float(np.mean((sources[name] - grey) ** 2)))


def test_montages_hold_their_cluster_in_order_of_distance(
    tmp_path, two_families, embedder, store_root
):
    folder, truth = two_families
    result = sort_folder(
        folder, tmp_path / "out", n_clusters=2, embedder=embedder, store=store_root, random_state=0
    )
    model, emb = result.model, result.embed
    # Measured before the PCA, to the members' mean there (FeatureKMeans.distances_).
    F = model.reducer_.prepare(emb.features)
    dist = {
        p: float(np.linalg.norm(f - model.feature_centers_[c]))
        for p, f, c in zip(emb.paths, F, model.labels_)
    }
    label = dict(zip(emb.paths, model.labels_))
    sources = {}
    for p in truth:
        with Image.open(folder / p) as im:
            sources[p] = np.asarray(
                im.convert("L").resize((report.MONTAGE_TILE,) * 2, Image.Resampling.BILINEAR),
                np.float32,
            )
    families = set()
    for c in range(2):
        rows = read_csv(tmp_path / "out" / "report" / "montages" / f"cluster_0{c}.csv")
        shown = [r["path"] for r in rows]
        # every member of the cluster, nothing else, closest to the centre first
        assert sorted(shown) == sorted(p for p in emb.paths if label[p] == c)
        assert shown == result.report.members[c]
        recorded = [float(r["distance"]) for r in rows]
        assert recorded == sorted(recorded)
        # labels.csv distances come from float32 arithmetic: equal to ~1e-3
        assert recorded == pytest.approx([dist[p] for p in shown], rel=2e-3)
        for a, b in zip(shown, shown[1:]):
            assert dist[a] <= dist[b] * (1 + 2e-3)
        families |= {truth[p] for p in shown} if len({truth[p] for p in shown}) == 1 else {"mix"}
        # and the picture shows those images, in that order
        with Image.open(tmp_path / "out" / "report" / "montages" / f"cluster_0{c}.png") as im:
            for slot, p in enumerate(shown):
                assert _nearest_source(im.crop(report.montage_tile_box(slot)), sources) == p
    assert families == set(truth.values()), "each montage holds exactly one family"


def test_montage_of_a_large_cluster_spans_closest_to_farthest():
    ranks = report.montage_ranks(1000)
    assert len(ranks) == report.MONTAGE_MAX
    assert ranks[0] == 0 and ranks[-1] == 999 and np.all(np.diff(ranks) > 0)
    assert list(report.montage_ranks(5)) == [0, 1, 2, 3, 4]


def test_report_refuses_to_overwrite_a_foreign_file(
    tmp_path, two_families, embedder, capsys, store_root
):
    folder, _ = two_families
    out = tmp_path / "out"
    result = sort_folder(
        folder, out, n_clusters=2, embedder=embedder, store=store_root, report=False
    )
    assert result.report is None and not (out / "report").exists()
    capsys.readouterr()  # the sort's own output is not what this test is about
    (out / "report").mkdir()
    (out / "report" / "index.html").write_text("my own page")
    with pytest.raises(UnsafeOutputError, match="index.html"):
        report.write_report(out)
    assert main(["report", str(out), "-q"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("featclust: error:") and len(err.splitlines()) == 1
    assert (out / "report" / "index.html").read_text() == "my own page"
    assert not (out / "report" / "overview.png").exists()


def test_report_of_a_folder_that_is_no_sort_output(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "not a featclust output folder" in err and len(err.splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_embed_2d_small_and_degenerate_sets():
    rng = np.random.default_rng(0)
    for n in (1, 2, 4):
        xy = report.embed_2d(rng.normal(size=(n, 8)), "tsne")
        assert xy.shape == (n, 2) and np.isfinite(xy).all()
    X = np.vstack([rng.normal(0, 0.1, (8, 20)), rng.normal(5, 0.1, (8, 20))])
    for method in ("tsne", "pca"):
        xy = report.embed_2d(X, method)
        a, b = xy[:8], xy[8:]
        gap = np.linalg.norm(a.mean(0) - b.mean(0))
        assert gap > 3 * max(a.std(0).max(), b.std(0).max()), method
