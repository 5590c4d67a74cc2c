"""How the time of ``assign --place`` grows with the number of images placed.

    python benchmarks/place_speed.py [--sizes 1000 2000 4000]

Sorts a small folder of generated images with stand-in features (no model
runs), then, for each size N, places N new small files into a fresh copy of
that folder with :func:`featclust.assign.place_images` (the assignment made
up: labels in turn, so only the placement is timed). Before issue 22 every
placed image rewrote ``featclust.json`` with the whole growing file list
(12 / 32 / 99-119 s for 1,000 / 2,000 / 4,000: quadratic); now the tables and
the record are written once per batch, so the time per image should stay
flat: the script prints the best of ``--repeat`` runs, seconds (wall and
CPU), milliseconds per image and the ratio of each size's time per image
to the smallest's (about 1 for O(N); 2 and 4
for O(N^2)), with the machine's description (see machine.py).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from edit_helpers import sorted_families  # noqa: E402
from machine import describe  # noqa: E402

from featclust.assign import AssignResult, place_images  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 2000, 4000])
    parser.add_argument("--repeat", type=int, default=2, help="best of this many runs")
    args = parser.parse_args(argv)
    print(describe())
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        _, out, _ = sorted_families(tmp, n_per_family=10)
        rows = []
        for n in args.sizes:
            new = tmp / f"new-{n}"
            new.mkdir()
            paths = []
            for i in range(n):
                p = new / f"img_{i:06d}.png"
                p.write_bytes(i.to_bytes(4, "little") * 64)  # distinct content, any bytes
                paths.append(str(p))
            assignment = AssignResult(
                paths, np.arange(n) % 3, np.full(n, 0.5, np.float32), np.zeros(n, bool)
            )
            best = (float("inf"), float("inf"))
            for r in range(args.repeat):
                target = tmp / f"out-{n}-{r}"
                shutil.copytree(out, target, symlinks=True)
                start = time.perf_counter()
                cpu = time.process_time()
                result = place_images(target, assignment)
                wall, cpu = time.perf_counter() - start, time.process_time() - cpu
                assert len(result.placed) == n, result.skipped[:3]
                best = (min(best[0], wall), min(best[1], cpu))
                shutil.rmtree(target)
            rows.append((n, *best))
        base_wall, base_cpu = rows[0][1] / rows[0][0], rows[0][2] / rows[0][0]
        print(
            f"{'images':>8} {'wall s':>8} {'cpu s':>8} {'ms/image':>9} "
            f"{'wall/image ratio':>17} {'cpu/image ratio':>16}"
        )
        for n, wall, cpu in rows:
            print(
                f"{n:>8} {wall:>8.2f} {cpu:>8.2f} {1000 * wall / n:>9.3f} "
                f"{(wall / n) / base_wall:>17.2f} {(cpu / n) / base_cpu:>16.2f}"
            )


if __name__ == "__main__":
    main()
