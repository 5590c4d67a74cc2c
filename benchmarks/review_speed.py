"""How fast the review page is on a large folder: first load, one edit, the server's memory.

    python benchmarks/review_speed.py --images 32000 [--k 40] [--keep DIR]

Writes N tiny PNGs (24x24, a few dots), fills the feature store with stand-in
features (each image one of K random centres plus noise, of the dimension of
``Embedder(weights="none")``, written through the store's own API: no model
runs), sorts them with ``featclust sort --weights none --map pca`` (the report
gives the page its map), then starts ``featclust review OUT --no-browser`` as
a real process and measures:

* the server's start (reading the folder, the features for the doubt scores);
* the first page load: the page, its script and style, the overview (every
  cluster with its first 12 thumbnails, made now: the cache is cold), the map
  (N points) and one page of 200 thumbnails of a cluster, fetched by 6
  connections at a time as a browser does; and the same again warm;
* the same first load in headless Chromium (the system's), until every
  thumbnail in view has arrived (the others load when scrolled to), where
  Chromium and Playwright are there;
* one edit (3 images moved to another cluster: the files, labels.csv,
  clusters.csv, the record and model.npz rewritten), a second edit (one of
  them moved back: the features are read once per review) and the overview
  after them;
* the server's resident memory (VmRSS) and its peak (VmHWM);
* the report's refresh after the edit (``featclust.report.refresh_report``),
  where the report has one, in this process.

Prints the figures with the machine's description (see machine.py).
"""

from __future__ import annotations

import argparse
import http.client
import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from machine import describe
from PIL import Image, ImageDraw

from featclust import images, report
from featclust.embed import Embedder
from featclust.store import FeatureStore


def write_images(folder: Path, n: int, seed: int = 0) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        img = Image.new("L", (24, 24), 255)
        draw = ImageDraw.Draw(img)
        for x, y in rng.integers(2, 22, (4, 2)):
            draw.ellipse((x - 2, y - 2, x + 2, y + 2), fill=0)
        img.save(folder / f"img_{i:06d}.png")


def fill_store(image_dir: Path, root: Path, groups: int, seed: int = 0) -> int:
    """Stand-in features (one of ``groups`` centres plus noise) for every image."""
    embedder = Embedder(weights="none")
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(groups, embedder.dim))

    def embed_files(missing, batch=2000):
        for start in range(0, len(missing), batch):
            good = [(f, images.read_bytes(f)[1]) for f in missing[start : start + batch]]
            which = rng.integers(0, groups, len(good))
            noise = rng.normal(scale=0.6, size=(len(good), embedder.dim))
            yield good, (centres[which] + noise).astype(np.float32), []

    files, problems = images.scan(image_dir)
    assert not problems, problems
    with FeatureStore(image_dir, embedder.settings(), root) as st:
        _, bad, _ = st.update(files, embed_files)
        st.finish(files, bad)
    return len(files)


class Client:
    """Requests to the review server, with its token, from a pool of 6 connections."""

    def __init__(self, url: str):
        parts = urllib.parse.urlsplit(url)
        self.host, self.port = parts.hostname, parts.port
        self.token = urllib.parse.parse_qs(parts.query)["token"][0]

    def get(self, path: str) -> bytes:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=120)
        conn.request("GET", path, headers={"X-Featclust-Token": self.token})
        resp = conn.getresponse()
        body = resp.read()
        conn.close()
        if resp.status != 200:
            sys.exit(f"GET {path}: {resp.status} {body[:200]!r}")
        return body

    def post(self, request: dict) -> dict:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=600)
        body = json.dumps(request)
        headers = {"X-Featclust-Token": self.token, "Content-Type": "application/json"}
        conn.request("POST", "/api/edit", body, headers)
        resp = conn.getresponse()
        data = json.loads(resp.read())
        conn.close()
        if resp.status != 200:
            sys.exit(f"POST {request['op']}: {resp.status} {data}")
        return data

    def thumbs(self, paths: list) -> None:
        with ThreadPoolExecutor(6) as pool:
            q = urllib.parse.quote
            list(pool.map(lambda p: self.get(f"/thumb?path={q(p)}"), paths))


def first_load(client: Client) -> tuple[float, dict, list]:
    t = time.perf_counter()
    for path in ("/", "/static/review.js", "/static/review.css"):
        client.get(path)
    overview = json.loads(client.get("/api/overview"))
    client.get("/api/map")
    first = [img["path"] for c in overview["clusters"] for img in c["first"]]
    client.thumbs(first)
    biggest = max(overview["clusters"], key=lambda c: c["size"])["cluster"]
    page = json.loads(client.get(f"/api/members?cluster={biggest}&limit=200"))
    client.thumbs([img["path"] for img in page["images"]])
    return time.perf_counter() - t, overview, first


def in_chromium(url: str) -> float | None:
    """Seconds until Chromium shows the overview with every thumbnail, or None."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    if not chromium:
        return None
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900}, bypass_csp=True)
        t = time.perf_counter()
        page.goto(url)
        page.wait_for_selector(".cluster-row .thumb img")
        page.wait_for_function(  # the thumbnails in view (the others load when scrolled to)
            "[...document.querySelectorAll('.cluster-row img')]"
            ".filter(i => i.getBoundingClientRect().top < innerHeight)"
            ".every(i => i.complete && i.naturalWidth > 0)",
            timeout=600_000,
        )
        seconds = time.perf_counter() - t
        n_img = page.locator("img").count()
        browser.close()
    print(f"  Chromium: {n_img} image elements on the first page")
    return seconds


def memory(pid: int) -> tuple[float, float]:
    """VmRSS and VmHWM of a process, in MiB."""
    fields = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0]) / 1024
    return fields["VmRSS"], fields["VmHWM"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32000)
    parser.add_argument("--k", type=int, default=40)
    parser.add_argument("--keep", type=Path, help="work here and keep the images and store")
    args = parser.parse_args()
    print(describe())
    with tempfile.TemporaryDirectory() as tmp:
        tmp = args.keep or Path(tmp)
        image_dir, store, out = tmp / "images", tmp / "store", tmp / "out"
        shutil.rmtree(out, ignore_errors=True)
        t = time.perf_counter()
        if not image_dir.is_dir():
            write_images(image_dir, args.images)
        n = fill_store(image_dir, store, args.k)
        print(f"{n} 24x24 PNGs and stand-in features in {time.perf_counter() - t:.1f} s")
        t = time.perf_counter()
        sort = [sys.executable, "-m", "featclust", "sort", str(image_dir), str(out)]
        sort += ["-k", str(args.k), "--weights", "none", "--store", str(store)]
        sort += ["--map", "pca", "-q"]
        subprocess.run(sort, check=True, capture_output=True)
        print(f"sorted with the report (PCA map) in {time.perf_counter() - t:.1f} s")

        t = time.perf_counter()
        review = [sys.executable, "-m", "featclust", "review", str(out), "--no-browser"]
        proc = subprocess.Popen(review, stdout=subprocess.PIPE, text=True)
        try:
            line = proc.stdout.readline()
            start = time.perf_counter() - t
            url = line.split()[2]
            client = Client(url)
            rss0 = memory(proc.pid)
            cold, overview, first = first_load(client)
            warm, _, _ = first_load(client)
            rss1 = memory(proc.pid)
            chromium = in_chromium(url)
            clusters = sorted(overview["clusters"], key=lambda c: -c["size"])
            source, target = clusters[0]["cluster"], clusters[1]["cluster"]
            page = json.loads(client.get(f"/api/members?cluster={source}&limit=3"))
            moved = [img["path"] for img in page["images"]]
            t = time.perf_counter()
            result = client.post({"op": "move", "paths": moved, "to": target})
            edit = time.perf_counter() - t
            t = time.perf_counter()
            client.post({"op": "move", "paths": moved[:1], "to": source})
            second = time.perf_counter() - t
            t = time.perf_counter()
            client.get("/api/overview")
            after = time.perf_counter() - t
            rss2 = memory(proc.pid)
        finally:
            proc.send_signal(2)
            proc.wait(600)
        t = time.perf_counter()
        report.refresh_report(out)
        refreshed = time.perf_counter() - t
        thumbs = sum(1 for _ in (out / ".featclust-review" / "thumbs").rglob("*.jpg"))

    print(f"images: {n}, clusters: {len(overview['clusters'])}")
    print(f"  server start (folder, features, doubt scores)   {start:8.2f} s")
    print(
        f"  first page load, cold thumbnail cache          {cold:8.2f} s "
        f"(overview: {len(first)} thumbnails, map: {n} points, one page of 200)"
    )
    print(f"  first page load, warm thumbnail cache          {warm:8.2f} s")
    if chromium is not None:
        print(f"  first load in headless Chromium (warm)         {chromium:8.2f} s")
    print(f"  one edit: {result['message']!r}")
    print(f"    the edit, on disk                            {edit:8.2f} s")
    print(f"    a second edit (1 image back; features kept)  {second:8.2f} s")
    print(f"    the overview after it                        {after:8.2f} s")
    print(f"  refresh_report after the edits                 {refreshed:8.2f} s")
    print(f"  server memory after start  RSS {rss0[0]:7.0f} MiB")
    print(f"  after the first loads      RSS {rss1[0]:7.0f} MiB")
    print(f"  after the edit             RSS {rss2[0]:7.0f} MiB, peak {rss2[1]:.0f} MiB")
    print(f"  thumbnails cached: {thumbs}")


if __name__ == "__main__":
    main()
