"""Decode-only throughput: N threads against N worker processes (issue 15).

    python benchmarks/decode_speed.py [--images 400] [--workers 1,2] [--repeat 2]

Writes a folder of generated images of the kinds a user has (1600x1200 JPEG
photos with noise, 640x480 PNG scans, 200x200 dot patterns, mixed evenly),
then times :func:`featclust.decoding.iter_decoded` over it, reading and
decoding to 224x224 gray, with no model: images/s for N threads and N
processes (worker start-up reported apart, and included in the end-to-end
figure), each repeated and the best taken. Prints the CPU flags beside the
speeds; compare ratios, not absolute numbers, across machines.

On a GPU machine the model outruns decoding; the figure that matters there
is end to end (embed) against the bare model: see benchmarks/embed_speed.py.
"""

import argparse
import os
import sys
import tempfile
import time

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from machine import describe

from featclust import images
from featclust.decoding import iter_decoded


def make_images(folder, n, seed=0):
    rng = np.random.default_rng(seed)
    for i in range(n):
        kind = i % 3
        if kind == 0:  # photo-like JPEG
            base = rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)
            im = Image.fromarray(base).resize((1600, 1200), Image.Resampling.BILINEAR)
            noise = rng.integers(0, 24, (1200, 1600, 3), dtype=np.uint8)
            im = Image.fromarray(np.asarray(im) // 2 + noise)
            im.save(os.path.join(folder, f"photo_{i:05d}.jpg"), quality=90)
        elif kind == 1:  # scanned page PNG
            arr = np.full((480, 640), 240, np.uint8)
            for _ in range(40):
                y, x = rng.integers(0, 470), rng.integers(0, 600)
                arr[y : y + 6, x : x + rng.integers(10, 40)] = rng.integers(0, 80)
            Image.fromarray(arr).save(os.path.join(folder, f"scan_{i:05d}.png"))
        else:  # small dot pattern
            arr = np.full((200, 200), 255, np.uint8)
            for x, y in rng.integers(10, 190, (20, 2)):
                arr[y - 4 : y + 4, x - 4 : x + 4] = 0
            Image.fromarray(arr).save(os.path.join(folder, f"dots_{i:05d}.png"))


def time_decoding(files, decoder, workers, batch_size=16):
    start = time.perf_counter()
    first = None
    n = n_first = 0
    for good, _pixels, bad in iter_decoded(files, batch_size, workers=workers, decoder=decoder):
        if first is None:
            first, n_first = time.perf_counter(), len(good)
        n += len(good)
        assert not bad, bad
    end = time.perf_counter()
    return n / (end - start), (n - n_first) / (end - first), first - start, n


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    print(describe())
    with tempfile.TemporaryDirectory() as folder:
        make_images(folder, args.images)
        files, _ = images.scan(folder)
        print(
            f"{len(files)} files, {sum(f.size for f in files) / 2**20:.1f} MiB "
            "(1600x1200 JPEG, 640x480 PNG, 200x200 PNG, a third each)"
        )
        for f in files:  # warm the page cache
            images.read_bytes(f)
        results = {}
        for workers in [int(w) for w in args.workers.split(",")]:
            for decoder in ("threads", "processes"):
                runs = [time_decoding(files, decoder, workers) for _ in range(args.repeat)]
                rate, steady, startup, n = max(runs)
                results[decoder, workers] = rate, steady
                print(
                    f"{decoder:9s} x{workers}: {rate:7.1f} images/s end to end, "
                    f"{steady:7.1f} after the first batch (which came after {startup:.2f} s), "
                    f"{n} images"
                )
        for workers in [int(w) for w in args.workers.split(",")]:
            (p_all, p_steady), (t_all, t_steady) = (
                results["processes", workers],
                results["threads", workers],
            )
            print(
                f"processes / threads at {workers}: {p_all / t_all:.2f} end to end, "
                f"{p_steady / t_steady:.2f} after start-up"
            )


if __name__ == "__main__":
    main()
