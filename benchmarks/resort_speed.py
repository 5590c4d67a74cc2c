"""How long a re-sort of a cached folder takes, next to ``cp -r`` of that folder.

    python benchmarks/resort_speed.py --images 2000 [--k 12] [--keep DIR]

Writes N 200x200 PNGs (random dots, drawn with Pillow), fills the feature
store for them with stand-in features (seeded random vectors of the
dimension of ``Embedder(weights="none")``, written through the store's own
API, so no model runs), then times as real processes:

* ``cp -r IMAGES COPY``: the floor a sort that copies every image cannot beat;
* ``featclust sort IMAGES OUT -k K --weights none --no-report --store S``
  into a new folder (every feature found in the store: the run checks that
  it embedded nothing);
* the same again into the same folder (a re-sort with the same k);
* a re-sort into the same folder with k + 1 (most images move);
* ``--mode symlink``: a first sort into a new folder and a re-sort with the same k.

``--keep DIR`` leaves the images and the store in DIR for the next run (to
measure before and after a change on the same files).

It prints wall and CPU seconds (user + system, of the process and its
children) and the ratio of each to ``cp -r`` (issue 19's target: a re-sort
within 6x of ``cp -r``, and symbolic links cheaper than copies), with the
machine's description (see machine.py): compare ratios, not seconds; on a
shared machine the CPU seconds are the steadier figure.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from machine import describe
from PIL import Image, ImageDraw

from featclust import images
from featclust.embed import Embedder
from featclust.store import FeatureStore


def write_images(folder, n, seed=0):
    """N distinct 200x200 greyscale PNGs of random black dots."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        img = Image.new("L", (200, 200), 255)
        draw = ImageDraw.Draw(img)
        for x, y in rng.integers(10, 190, (12, 2)):
            draw.ellipse((x - 5, y - 5, x + 5, y + 5), fill=0)
        img.save(folder / f"img_{i:06d}.png")


def stand_in(dim, seed=0, groups=12):
    """An ``embed_files`` for :meth:`FeatureStore.update`: content hashes, stand-in features.

    Each vector is one of ``groups`` random centres plus noise, so k-means meets the
    grouped data it meets in a real folder (structureless noise would make it run to
    its iteration limit, which real features do not).
    """
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(groups, dim))

    def embed_files(missing, batch=1000):
        for start in range(0, len(missing), batch):
            good = [(f, images.read_bytes(f)[1]) for f in missing[start : start + batch]]
            which = rng.integers(0, groups, len(good))
            noise = rng.normal(scale=0.5, size=(len(good), dim))
            yield good, (centres[which] + noise).astype(np.float32), []

    return embed_files


def fill_store(image_dir, root):
    """Store stand-in features for every image, under the CLI's ``--weights none`` settings."""
    embedder = Embedder(weights="none")
    files, problems = images.scan(image_dir)
    assert not problems, problems
    with FeatureStore(image_dir, embedder.settings(), root) as st:
        cached, bad, n = st.update(files, stand_in(embedder.dim))
        st.finish(files, bad)
    assert len(cached) + n == len(files) and not bad
    return len(files)


def timed(argv):
    """Wall seconds and CPU seconds (user + system) of a process."""
    cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        sys.exit(f"{' '.join(map(str, argv))} failed:\n{proc.stderr}")
    return elapsed, (after.ru_utime - cpu.ru_utime) + (after.ru_stime - cpu.ru_stime)


def sort(image_dir, out, k, store, *extra):
    seconds, cpu = timed(
        [
            sys.executable,
            "-m",
            "featclust",
            "sort",
            str(image_dir),
            str(out),
            "-k",
            str(k),
            "--weights",
            "none",
            "--no-report",
            "--store",
            str(store),
            "-q",
            *extra,
        ]
    )
    record = json.loads((out / "featclust.json").read_text())
    counts = record["counts"]
    if counts["embedded"] != 0:
        sys.exit(f"the sort embedded {counts['embedded']} images: the store was not used")
    return seconds, cpu, counts["images"]


def placed(out, n, symlinks):
    """Whether every image is in ``out``'s cluster folders exactly once, as the mode says."""
    found = [p for p in out.glob("cluster_*/*") if p.is_file() or p.is_symlink()]
    return len(found) == n and all(p.is_symlink() == symlinks for p in found)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--k", type=int, default=12)
    parser.add_argument(
        "--keep",
        type=Path,
        help="work in this folder and leave it there; its images and store "
        "are used again by the next run (default: a temporary folder)",
    )
    args = parser.parse_args()
    print(describe())
    with tempfile.TemporaryDirectory() as tmp:
        tmp = args.keep or Path(tmp)
        image_dir, store = tmp / "images", tmp / "store"
        for old in ("copy", "out", "out_links"):  # of an earlier run with --keep
            shutil.rmtree(tmp / old, ignore_errors=True)
        t = time.perf_counter()
        if not image_dir.is_dir():
            write_images(image_dir, args.images)
        n = fill_store(image_dir, store)
        print(
            f"{n} 200x200 PNGs and their stand-in features in the store after "
            f"{time.perf_counter() - t:.1f} s"
        )
        rows = [("cp -r IMAGES COPY", timed(["cp", "-r", str(image_dir), str(tmp / "copy")]))]
        out, links = tmp / "out", tmp / "out_links"
        k = args.k
        steps = [
            (f"sort -k {k} into a new folder", out, k, ()),
            (f"re-sort -k {k} into the same folder", out, k, ()),
            (f"re-sort -k {k + 1} into the same folder", out, k + 1, ()),
            (f"sort -k {k} --mode symlink, new folder", links, k, ("--mode", "symlink")),
            (f"re-sort -k {k} --mode symlink", links, k, ("--mode", "symlink")),
        ]
        ok = True
        for name, folder, kk, extra in steps:
            seconds, cpu, n_sorted = sort(image_dir, folder, kk, store, *extra)
            ok = ok and n_sorted == n and placed(folder, n, bool(extra))
            rows.append((name, (seconds, cpu)))
        (base, base_cpu) = rows[0][1]
        print(f"images: {n}, nothing embedded (every feature from the store)")
        print(f"  {'':42s} {'wall s':>8s} {'x cp -r':>8s} {'CPU s':>8s} {'x cp -r':>8s}")
        for name, (seconds, cpu) in rows:
            print(
                f"  {name:42s} {seconds:8.2f} {seconds / base:8.1f} {cpu:8.2f} "
                f"{cpu / max(base_cpu, 1e-3):8.1f}"
            )
        print(f"every image placed exactly once per run: {ok}")


if __name__ == "__main__":
    main()
