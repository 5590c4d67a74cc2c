"""Embedding through Dask against one process, and an estimate for very large folders (issue 15).

    python benchmarks/dask_scaling.py [--images 500] [--modes one,local:1,local:2]
                                      [--weights none] [--batch-size 16]

Writes N generated images (200x200 to 640x480 PNG and JPEG), then, each mode in
its own fresh process: ``one`` embeds them with :func:`featclust.pipeline.embed_folder`
in that process; ``local:N`` starts a :class:`distributed.LocalCluster` of N
worker processes (one thread each), builds the model on every worker, then
embeds the same images through it (``dask=client``). Reported per mode:
images/s of the embedding (model already built, cluster already up), the
start-up apart (cluster and model), the driver's peak RSS, and whether the
driver imported TensorFlow. Then the Dask overhead per task (a no-op task's
round trip) and an estimate of wall time and cost for 1,000,000 and
100,000,000 images on N workers from the measured per-image cost and per-task
overhead. Prints the CPU flags and the load average beside the figures.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
from machine import describe
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def make_images(folder, n, seed=0):
    rng = np.random.default_rng(seed)
    for i in range(n):
        if i % 2:
            arr = rng.integers(0, 255, (48, 64), dtype=np.uint8)
            im = Image.fromarray(arr).resize((640, 480), Image.Resampling.BILINEAR)
            im.save(os.path.join(folder, f"scan_{i:06d}.jpg"), quality=90)
        else:
            arr = np.full((200, 200), 255, np.uint8)
            for x, y in rng.integers(10, 190, (20, 2)):
                arr[y - 4 : y + 4, x - 4 : x + 4] = 0
            Image.fromarray(arr).save(os.path.join(folder, f"dots_{i:06d}.png"))


def run_mode(mode, image_dir, store, weights, batch_size):
    """In a fresh process: time one mode; prints one JSON line."""
    from featclust.embed import Embedder
    from featclust.pipeline import embed_folder

    embedder = Embedder(weights=weights, batch_size=batch_size)
    t0 = time.perf_counter()
    result = {"mode": mode}
    if mode == "one":
        embedder.build()
        embedder.embed_batch(np.zeros((batch_size, 224, 224), np.uint8))  # warm the model
        result["startup_s"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        emb = embed_folder(image_dir, embedder=embedder, store=store, progress=False)
        result["embed_s"] = time.perf_counter() - t1
    else:
        import logging

        import distributed

        from featclust.distributed import worker_embedder

        n = int(mode.split(":")[1])
        with (
            distributed.LocalCluster(
                n_workers=n,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
                silence_logs=logging.ERROR,
            ) as cluster,
            distributed.Client(cluster) as client,
        ):
            params = embedder.get_params()
            params["precision"] = embedder.settings()["precision"]

            def warm():
                e = worker_embedder(params)
                e.embed_batch(np.zeros((batch_size, 224, 224), np.uint8))
                return True

            client.run(warm)
            result["startup_s"] = time.perf_counter() - t0
            t = time.perf_counter()
            for _ in range(200):
                client.submit(int, 1, pure=False).result()
            result["task_roundtrip_ms"] = (time.perf_counter() - t) / 200 * 1000
            t1 = time.perf_counter()
            emb = embed_folder(
                image_dir, embedder=embedder, store=store, progress=False, dask=client
            )
            result["embed_s"] = time.perf_counter() - t1
    result["images"] = emb.n_embedded
    result["images_per_s"] = emb.n_embedded / result["embed_s"]
    result["driver_peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["driver_imported_tensorflow"] = "tensorflow" in sys.modules
    print("RESULT " + json.dumps(result))


def estimate(results, chunk_size, price_per_worker_hour):
    one = next((r for r in results if r["mode"] == "one"), None)
    dask1 = next((r for r in results if r["mode"] == "local:1"), None)
    if dask1 is None:
        return
    per_image = 1 / dask1["images_per_s"]  # seconds of one worker per image, Dask included
    task_s = dask1.get("task_roundtrip_ms", 0) / 1000
    print(
        f"\nestimate (one worker = this machine's {os.cpu_count()} CPUs; measured "
        f"{per_image * 1000:.0f} ms per image through Dask"
        + (f", {1000 / one['images_per_s']:.0f} ms in one process" if one else "")
        + f"; {task_s * 1000:.1f} ms Dask round trip per task of {chunk_size} images; "
        f"assumed ${price_per_worker_hour:.2f} per worker-hour):"
    )
    print(f"{'images':>12} {'workers':>8} {'wall':>12} {'worker-hours':>13} {'cost':>10}")
    for n_images in (1_000_000, 100_000_000):
        tasks = -(-n_images // chunk_size)
        for workers in (1, 10, 50, 200, 1000):
            # Work is spread evenly; the scheduler's round trip serialises only per task
            # (about a millisecond), so it stays small beside the images' cost.
            wall = n_images * per_image / workers + tasks * task_s / min(workers, 8)
            hours = n_images * per_image / 3600
            print(
                f"{n_images:>12,} {workers:>8} {wall / 3600:>10.1f} h {hours:>13,.0f} "
                f"{hours * price_per_worker_hour:>9,.0f}$"
            )


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=500)
    ap.add_argument("--modes", default="one,local:1,local:2")
    ap.add_argument("--weights", default="none")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument(
        "--price",
        type=float,
        default=0.10,
        help="assumed price of one worker (a machine like this one) per hour, $",
    )
    ap.add_argument("--_mode", help=argparse.SUPPRESS)
    ap.add_argument("--_dir", help=argparse.SUPPRESS)
    ap.add_argument("--_store", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._mode:
        run_mode(args._mode, args._dir, args._store, args.weights, args.batch_size)
        return
    from featclust.store import CHUNK_SIZE

    print(describe())
    print(f"load average before: {os.getloadavg()}")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        image_dir = os.path.join(tmp, "images")
        os.makedirs(image_dir)
        make_images(image_dir, args.images)
        for mode in args.modes.split(","):
            store = os.path.join(tmp, "store-" + mode.replace(":", "-"))
            proc = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--_mode",
                    mode,
                    "--_dir",
                    image_dir,
                    "--_store",
                    store,
                    "--weights",
                    args.weights,
                    "--batch-size",
                    str(args.batch_size),
                ],
                capture_output=True,
                text=True,
                env={**os.environ, "PYTHONPATH": ROOT},
            )
            line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
            if proc.returncode or not line:
                print(f"{mode}: failed\n{proc.stderr[-2000:]}")
                continue
            results.append(json.loads(line[0][7:]))
            print(f"load average after {mode}: {os.getloadavg()}")
    base = next((r["images_per_s"] for r in results if r["mode"] == "one"), None)
    print(
        f"\n{args.images} images, weights={args.weights}, batch {args.batch_size}, "
        f"chunk {CHUNK_SIZE}"
    )
    print(
        f"{'mode':>8} {'images/s':>9} {'vs one':>7} {'start-up s':>11} {'driver RSS MiB':>15} "
        f"{'driver has TF':>14}"
    )
    for r in results:
        ratio = f"{r['images_per_s'] / base:.2f}" if base else "-"
        print(
            f"{r['mode']:>8} {r['images_per_s']:>9.2f} {ratio:>7} {r['startup_s']:>11.1f} "
            f"{r['driver_peak_rss_mib']:>15.0f} {str(r['driver_imported_tensorflow']):>14}"
        )
    estimate(results, CHUNK_SIZE, args.price)


if __name__ == "__main__":
    main()
