"""How long ``featclust --help`` takes, as a ratio to ``python -c pass`` in the same run.

Usage::

    python benchmarks/help_speed.py            # 15 rounds
    python benchmarks/help_speed.py --rounds 40

Each round starts a fresh interpreter for ``python -c pass``, for ``featclust --help``
(the console script's own code: ``from featclust.__main__ import main_exit``, run from
this checkout) and for ``import featclust.cli`` (what every other command loads), in
turn, so a busy machine slows all three alike. Prints the median wall time of each and
the ratios; issue 21 asked for ``--help`` under 0.5 s (it took 2.5 s, 6 s when busy,
importing scikit-learn for nothing).
"""

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from machine import describe

ROOT = Path(__file__).resolve().parents[1]
CONSOLE_SCRIPT = "import sys; from featclust.__main__ import main_exit; sys.exit(main_exit())"
RUNS = {
    "python -c pass": ["-c", "pass"],
    "featclust --help": ["-c", CONSOLE_SCRIPT, "--help"],
    "import featclust.cli": ["-c", "import featclust.cli"],
}


def timed(args, env):
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, *args], env=env, cwd=ROOT, stdout=subprocess.DEVNULL, check=True
    )
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    print(describe())
    for run in RUNS.values():  # warm the file cache and the .pyc files
        timed(run, env)
    times = {name: [] for name in RUNS}
    for _ in range(args.rounds):
        for name, run in RUNS.items():
            times[name].append(timed(run, env))
    base = statistics.median(times["python -c pass"])
    for name, ts in times.items():
        median = statistics.median(ts)
        print(f"{name:22s} median {median:6.3f} s  ({median / base:5.1f} x python -c pass)")
    help_s = statistics.median(times["featclust --help"])
    print(f"featclust --help: {help_s / base:.1f} x python -c pass, {help_s:.2f} s (goal < 0.5 s)")


if __name__ == "__main__":
    main()
