"""Time `featclust sort` twice on the same folder: the second run reuses the store.

    python benchmarks/sort_rerun.py --images 1000 [--weights none|PATH]

Creates N 200x200 dot-pattern PNGs (8 shape families), runs
``featclust sort IMAGES OUT1 -k 8`` and then ``featclust sort IMAGES OUT2 -k 5``
as real processes with a fresh store, checks that every image was copied
exactly once per run, and prints the embedding throughput of the first run
and the time of the second relative to the first.
"""

import argparse
import csv
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from featclust import samples


def run(argv):
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "featclust", *argv, "-q"], capture_output=True, text=True
    )
    elapsed = time.perf_counter() - start
    if proc.returncode:
        sys.exit(f"featclust {' '.join(argv)} failed:\n{proc.stderr}")
    return elapsed, proc.stdout


def copies_once(out, n):
    rows = list(csv.DictReader(open(out / "labels.csv")))
    copied = [p for p in out.glob("cluster_*/**/*") if p.is_file()]
    return len(rows) == n and len(copied) == n and len({r["path"] for r in rows}) == n


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--weights", default="none")
    parser.add_argument(
        "--no-report",
        action="store_true",
        help="pass --no-report to sort (times the core job only)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        families = samples.DOT_FAMILIES
        per = -(-args.images // len(families))
        samples.make_image_set(tmp / "images", n_per_family=per, families=families)
        n = per * len(families)
        common = ["--weights", args.weights, "--store", str(tmp / "store")]
        if args.no_report:
            common.append("--no-report")
        t1, out1 = run(["sort", str(tmp / "images"), str(tmp / "out8"), "-k", "8", *common])
        t2, out2 = run(["sort", str(tmp / "images"), str(tmp / "out5"), "-k", "5", *common])
        ok = copies_once(tmp / "out8", n) and copies_once(tmp / "out5", n)
        print(f"images: {n} (200x200 PNG), weights: {args.weights}")
        print(
            f"first run  (-k 8, embeds everything): {t1:8.1f} s  -> {n / t1:6.2f} images/s "
            "end to end"
        )
        print(f"second run (-k 5, store reused):      {t2:8.1f} s  = {t2 / t1:.3f} x the first")
        print(f"first run said:  {out1.strip().splitlines()[0]}")
        print(f"second run said: {out2.strip().splitlines()[0]}")
        print(f"every image copied exactly once per run: {ok}")


if __name__ == "__main__":
    main()
