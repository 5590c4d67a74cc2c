"""Embedding speed and memory: the per-image recipe, the bare model and `featclust embed`.

    python benchmarks/embed_speed.py --images N [--weights none|PATH]

Creates N 200x200 dot-pattern PNGs (8 shape families) and times, each phase
in a fresh Python process (so its peak memory is its own):

* the per-image recipe copied from forum answers: ``keras.utils.load_img`` +
  ``preprocess_input`` + ``model.predict`` on a batch of one (float32, on a
  subset: ``--baseline-images``), and Keras ``model.predict`` on whole
  batches of the same images;
* per precision (float32, the one ``auto`` picks, and bfloat16): the bare
  model (featclust's compiled step on decoded pixels already in memory), then
  ``featclust embed`` through the library with the model already built
  (``embed_folder``: scan, decode in threads, model, store), then the real
  CLI (``featclust.cli.main``, model build included), each on a fresh store.
  The three alternate on equal parts of the images, so a machine shared
  with other work slows them alike.

It prints images/s, the ratios, peak RSS, the cosine similarity between the
bfloat16 and float32 features of the same images and the adjusted Rand
index between their k=8 clusterings. ``--memory-sizes 300,1200`` adds the
peak RSS of ``featclust embed`` subprocesses on folders of those sizes;
``--cluster-sizes 2000,8000`` the peak memory of loading and clustering
synthetic flatten-pooling (25,088-d) stores of those sizes.

The network is VGG16 up to block5 with average pooling by default (the
recipe's network, so the ratios measure the engineering, not a smaller
network); ``--layer``/``--pooling`` measure others.
"""

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from machine import describe

HERE = Path(__file__).resolve()


# -- measuring ---------------------------------------------------------------


class PeakMemory:
    """Peak resident and anonymous memory of this process, sampled every 50 ms.

    ``ru_maxrss`` counts file pages that are mapped, such as a memory-mapped
    feature matrix, which the kernel can drop at any time; the anonymous peak
    (``RssAnon``) is the memory that must really fit.
    """

    def __init__(self):
        self.peak_anon = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            self.peak_anon = max(self.peak_anon, _status_kb("RssAnon"))
            self._stop.wait(0.05)

    def stop(self):
        self._stop.set()
        self._thread.join()
        return {
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "peak_anon_mb": self.peak_anon / 1024,
        }


def _status_kb(field):
    try:
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


# -- the worker processes ----------------------------------------------------


def worker(job):
    mem = PeakMemory()
    if job["phase"] == "cluster":
        out = cluster_memory(job)
    else:
        t0 = time.perf_counter()
        import keras

        from featclust import device

        out = {
            "import_s": time.perf_counter() - t0,
            "backend": keras.backend.backend(),
            "keras": keras.__version__,
        }
        if out["backend"] == "tensorflow":
            import tensorflow as tf

            out["tensorflow"] = tf.__version__
        out["device"], cc = device.accelerator()
        if out["device"] == "gpu":
            out["device"] += f" (compute capability {cc[0]}.{cc[1]})"
        out.update((baseline if job["phase"] == "baseline" else embed_phases)(job))
    out.update(mem.stop())
    return out


def _files(folder):
    return sorted(str(p) for p in Path(folder).rglob("*.png"))


def baseline(job):
    """The forum recipe, one image at a time, then Keras predict on whole batches."""
    import keras

    from featclust.embed import Embedder

    emb = Embedder(weights=job["weights"], precision="float32", layer="block5")
    model = emb.load_vgg16()
    files = _files(job["images"])[: job["count"]]

    def one(path):
        img = keras.utils.load_img(path, target_size=(224, 224))
        x = keras.utils.img_to_array(img)[None]
        return model.predict(keras.applications.vgg16.preprocess_input(x), verbose=0)

    one(files[0])  # warm-up: the first predict builds the predict function
    start, cpu0 = time.perf_counter(), time.process_time()
    for path in files:
        one(path)
    per_image = len(files) / (time.perf_counter() - start)
    per_image_cpu = (time.process_time() - cpu0) / len(files)

    bs = job["batch_size"] or emb.batch
    n = max(bs, len(files) // bs * bs)
    x = np.stack(
        [
            keras.utils.img_to_array(
                keras.utils.load_img(files[i % len(files)], target_size=(224, 224))
            )
            for i in range(n)
        ]
    )
    x = keras.applications.vgg16.preprocess_input(x)
    model.predict(x[:bs], batch_size=bs, verbose=0)
    start, cpu0 = time.perf_counter(), time.process_time()
    model.predict(x, batch_size=bs, verbose=0)
    batched = n / (time.perf_counter() - start)
    return {
        "per_image": per_image,
        "per_image_n": len(files),
        "keras_batched": batched,
        "batch": bs,
        "keras_batched_n": n,
        "per_image_cpu_s": per_image_cpu,
        "keras_batched_cpu_s": (time.process_time() - cpu0) / n,
    }


def embed_phases(job):
    """Bare model, embed_folder with a built model, and the CLI, alternating by part."""
    import contextlib
    import io
    from concurrent.futures import ThreadPoolExecutor

    from featclust import cli, images
    from featclust.device import cpu_count
    from featclust.embed import Embedder
    from featclust.pipeline import embed_folder

    emb = Embedder(
        weights=job["weights"],
        pooling=job["pooling"],
        precision=job["precision"],
        batch_size=job["batch_size"],
        layer=job["layer"],
    )
    start = time.perf_counter()
    emb.embed(np.full((1, 224, 224), 255, np.uint8))
    build_s = time.perf_counter() - start
    t = {"bare": 0.0, "library": 0.0, "cli": 0.0}
    cpu = dict.fromkeys(t, 0.0)
    n = 0
    feats, max_diff = [], 0.0
    for i, part in enumerate(job["parts"]):
        files, _ = images.scan(part)
        with ThreadPoolExecutor(cpu_count()) as pool:
            gray = np.stack([pixels for pixels, _ in pool.map(images.load, files)])
        n += len(files)
        start, cpu0 = time.perf_counter(), time.process_time()
        bare = emb.embed(gray)
        t["bare"] += time.perf_counter() - start
        cpu["bare"] += time.process_time() - cpu0
        feats.append(bare)
        del gray

        start, cpu0 = time.perf_counter(), time.process_time()
        res = embed_folder(part, embedder=emb, store=Path(job["work"]) / f"store-lib-{i}")
        t["library"] += time.perf_counter() - start
        cpu["library"] += time.process_time() - cpu0
        assert res.n_embedded == len(files), res
        max_diff = max(max_diff, float(np.abs(res.features - bare).max()))

        if not job["cli"]:
            continue
        argv = [
            "embed",
            part,
            "--store",
            str(Path(job["work"]) / f"store-cli-{i}"),
            "--weights",
            job["weights"],
            "--precision",
            job["precision"],
            "--pooling",
            job["pooling"],
            "--layer",
            job["layer"],
            "-q",
        ]
        if job["batch_size"]:
            argv += ["--batch-size", str(job["batch_size"])]
        start, cpu0 = time.perf_counter(), time.process_time()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            rc = cli.main(argv)
        t["cli"] += time.perf_counter() - start
        cpu["cli"] += time.process_time() - cpu0
        assert rc == 0, f"featclust {' '.join(argv)} exited with {rc}"
    np.save(job["features"], np.concatenate(feats))
    return {
        "n": n,
        "batch": emb.batch,
        "precision": emb.settings()["precision"],
        "build_s": build_s,
        "store_vs_bare_max_abs_diff": max_diff,
        **{k: n / v if v else float("nan") for k, v in t.items()},
        **{f"{k}_cpu_s": v / n for k, v in cpu.items()},
    }


def cluster_memory(job):
    """Load and cluster a synthetic flatten-pooling store of ``job["n"]`` rows."""
    from featclust import images
    from featclust.cluster import FeatureKMeans
    from featclust.store import FeatureStore

    n, dim = job["n"], 7 * 7 * 512
    folder = Path(job["work"]) / f"cluster-{n}"
    (folder / "images").mkdir(parents=True)
    settings = {"dim": dim, "pooling": "flatten", "synthetic": True}
    rng = np.random.default_rng(0)
    centers = rng.gamma(1.0, 1.0, (8, dim)).astype(np.float32)
    truth = rng.integers(0, 8, n)
    files = [
        images.ImageFile(f"img_{i:06d}.png", str(folder / f"img_{i:06d}.png"), 1, i)
        for i in range(n)
    ]
    with FeatureStore(folder / "images", settings, folder / "store") as st:
        for s in range(0, n, 256):
            block = centers[truth[s : s + 256]] * rng.uniform(
                0.5, 1.5, (len(truth[s : s + 256]), 1)
            )
            block += rng.gamma(1.0, 0.5, block.shape).astype(np.float32)
            st.add([(f, "x") for f in files[s : s + 256]], block.astype(np.float32))
    del block
    before = _status_kb("RssAnon") / 1024
    mem = PeakMemory()  # from here: what featclust sort does after embedding
    start = time.perf_counter()
    with FeatureStore(folder / "images", settings, folder / "store") as st:
        X = st.load([f.path for f in files])
    model = FeatureKMeans(n_clusters=8, random_state=0).fit(X)
    elapsed = time.perf_counter() - start
    from sklearn.metrics import adjusted_rand_score

    peak = mem.stop()
    shutil.rmtree(folder)
    return {
        "n": n,
        "matrix_mb": n * dim * 4 / 2**20,
        "memmap": isinstance(X, np.memmap),
        "n_components": model.n_components_,
        "seconds": elapsed,
        "ari_vs_truth": adjusted_rand_score(truth, model.labels_),
        "fit_peak_anon_mb": peak["peak_anon_mb"],
        "anon_before_mb": before,
    }


def run_worker(job, env=None):
    """Run one phase in a fresh interpreter; its result and its peak RSS."""
    result = Path(job["work"]) / f"result-{time.monotonic_ns()}.json"
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, str(HERE), "--worker", json.dumps(job), "--result", str(result)], env=env
    )
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"phase {job['phase']} failed (exit {os.waitstatus_to_exitcode(status)})")
    out = json.loads(result.read_text())
    out.update(wall_s=wall, child_peak_rss_mb=usage.ru_maxrss / 1024)
    return out


def cli_memory(folder, store, args):
    """Peak RSS of a real `featclust embed` process on ``folder``."""
    argv = [
        sys.executable,
        "-m",
        "featclust",
        "embed",
        str(folder),
        "--store",
        str(store),
        "--weights",
        args.weights,
        "--pooling",
        args.pooling,
        "--layer",
        args.layer,
        "--precision",
        "float32",
        "-q",
    ]
    if args.batch_size:
        argv += ["--batch-size", str(args.batch_size)]
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"featclust embed failed: {proc.stderr.read().decode()}")
    return usage.ru_maxrss / 1024, time.perf_counter() - start


# -- the images ----------------------------------------------------------------


def make_images(work, n, unique, parts):
    """``n`` PNGs in ``parts`` sub-folders; ``unique`` distinct ones, the rest hard links."""
    from featclust import samples

    per = max(1, -(-unique // len(samples.DOT_FAMILIES)))
    pool = work / "pool"
    truth = samples.make_image_set(pool, n_per_family=per, families=samples.DOT_FAMILIES)
    names = sorted(truth)
    folders = [work / "images" / f"part-{i}" for i in range(parts)]
    for f in folders:
        f.mkdir(parents=True)
    labels = []
    for i in range(n):
        name = names[i % len(names)]
        os.link(pool / name, folders[i * parts // n] / f"img_{i:06d}.png")
        labels.append(truth[name])
    return folders, labels


# -- the report ----------------------------------------------------------------


def agreement(f32, b16, labels, seed=0):
    from sklearn.metrics import adjusted_rand_score

    from featclust.cluster import FeatureKMeans

    m = min(len(f32), len(b16))
    a, b = f32[:m], b16[:m]
    cos = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    la = FeatureKMeans(8, random_state=seed).fit(a).labels_
    lb = FeatureKMeans(8, random_state=seed).fit(b).labels_
    la_other_seed = FeatureKMeans(8, random_state=seed + 1).fit(a).labels_
    return {
        "n": m,
        "cos_mean": float(cos.mean()),
        "cos_min": float(cos.min()),
        "ari": adjusted_rand_score(la, lb),
        "ari_f32_other_seed": adjusted_rand_score(la, la_other_seed),
        "ari_truth_f32": adjusted_rand_score(labels[:m], la),
        "ari_truth_b16": adjusted_rand_score(labels[:m], lb),
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=96, help="images per precision (default 96)")
    p.add_argument("--bf16-images", type=int, help="images for bfloat16 (default: as --images)")
    p.add_argument(
        "--unique", type=int, help="distinct images to draw; the rest are hard links (default: all)"
    )
    p.add_argument(
        "--baseline-images",
        type=int,
        default=24,
        help="images timed with the per-image recipe (default 24)",
    )
    p.add_argument("--weights", default="none", help="none (random) or a weights file")
    p.add_argument("--layer", default="block5")
    p.add_argument("--pooling", default="avg")
    p.add_argument("--batch-size", type=int, help="default: featclust's (16 CPU, 256 GPU)")
    p.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="parts the images are split into; the phases alternate per part",
    )
    p.add_argument(
        "--precisions",
        default="auto,float32,bfloat16",
        help="an explicit one equal to what auto picks is not run again",
    )
    p.add_argument("--memory-sizes", default="", help="e.g. 300,1200: peak RSS of the CLI")
    p.add_argument(
        "--cluster-sizes",
        default="",
        help="e.g. 2000,8000: peak memory of clustering flatten features",
    )
    p.add_argument("--skip-baseline", action="store_true")
    p.add_argument(
        "--no-cli",
        action="store_true",
        help="skip the CLI pass (on a GPU its time is mostly XLA compilation)",
    )
    p.add_argument("--json", help="also write the results here")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        Path(args.result).write_text(json.dumps(worker(json.loads(args.worker))))
        return

    work = Path(tempfile.mkdtemp(prefix="embed-speed-"))
    try:
        report(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def report(args, work):
    print(f"machine: {describe()}", flush=True)
    n = args.images
    n16 = args.bf16_images or n
    total = max(n, n16, max([int(s) for s in args.memory_sizes.split(",") if s] or [0]))
    folders, labels = make_images(work, total, args.unique or total, 1)
    all_files = sorted(folders[0].iterdir())
    common = {
        "work": str(work),
        "weights": args.weights,
        "layer": args.layer,
        "pooling": args.pooling,
        "batch_size": args.batch_size,
        "cli": not args.no_cli,
    }
    results = {
        "machine": describe(),
        "images": n,
        "weights": args.weights,
        "layer": args.layer,
        "pooling": args.pooling,
    }

    def subset(count, name):
        parts = [work / name / f"part-{i}" for i in range(args.rounds)]
        for i, f in enumerate(all_files[:count]):
            part = parts[i * args.rounds // count]
            part.mkdir(parents=True, exist_ok=True)
            os.link(f, part / f.name)
        return [str(p) for p in parts]

    rows = []

    def save():
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1))

    runs = {}
    for prec in [s for s in args.precisions.split(",") if s]:
        if prec in runs:
            print(f"  [{prec}] measured above as auto -> {prec}", flush=True)
            continue
        count = n16 if prec == "bfloat16" else n
        job = {
            **common,
            "phase": "embed",
            "precision": prec,
            "parts": subset(count, prec),
            "features": str(work / f"features-{prec}.npy"),
        }
        r = run_worker(job)
        r["features_path"] = job["features"]
        runs[prec] = r
        if prec == "auto":
            runs.setdefault(r["precision"], r)
        results[f"embed_{prec}"] = {k: v for k, v in r.items() if k != "features_path"}
        label = f"auto -> {r['precision']}" if prec == "auto" else prec
        rows.append(
            (
                "bare model (compiled step, pixels in memory)",
                label,
                r["n"],
                r["bare"],
                r["bare_cpu_s"],
                None,
            )
        )
        rows.append(
            (
                "featclust embed: embed_folder, model built",
                label,
                r["n"],
                r["library"],
                r["library_cpu_s"],
                None,
            )
        )
        if not args.no_cli:
            rows.append(
                (
                    "featclust embed: CLI main(), incl. model build",
                    label,
                    r["n"],
                    r["cli"],
                    r["cli_cpu_s"],
                    r["child_peak_rss_mb"],
                )
            )
        print(
            f"  [{label}] backend {r['backend']}, device {r['device']}, batch {r['batch']}, "
            f"model build + first batch {r['build_s']:.1f} s, store rows vs bare features: "
            f"max abs diff {r['store_vs_bare_max_abs_diff']:.2g}",
            flush=True,
        )
        print(
            f"  [{label}] bare model {r['bare']:.2f} img/s, embed_folder {r['library']:.2f} "
            f"img/s, CLI {r['cli']:.2f} img/s",
            flush=True,
        )
        save()

    base = None
    if not args.skip_baseline:
        b = run_worker(
            {
                **common,
                "phase": "baseline",
                "images": str(folders[0]),
                "count": args.baseline_images,
                "batch_size": args.batch_size,
            }
        )
        results["baseline"] = b
        print(
            f"backend: {b['backend']} (keras {b['keras']}"
            f"{', tensorflow ' + b['tensorflow'] if 'tensorflow' in b else ''}), "
            f"device: {b['device']}",
            flush=True,
        )
        base = b["per_image"]
        rows[:0] = [
            (
                "per-image load_img + predict(batch of 1)",
                "float32",
                b["per_image_n"],
                base,
                b["per_image_cpu_s"],
                b["child_peak_rss_mb"],
            ),
            (
                f"keras model.predict, batches of {b['batch']}",
                "float32",
                b["keras_batched_n"],
                b["keras_batched"],
                b["keras_batched_cpu_s"],
                None,
            ),
        ]
        print(
            f"  [recipe] per image {base:.2f} img/s, keras predict batched "
            f"{b['keras_batched']:.2f} img/s",
            flush=True,
        )
        save()

    print()
    print(
        f"{'phase':<48} {'precision':<17} {'images':>6} {'img/s':>8} {'x recipe':>9} "
        f"{'CPU s/img':>9} {'peak RSS':>10}"
    )
    for name, prec, count, rate, cpu, rss in rows:
        ratio = f"{rate / base:8.2f}x" if base else ""
        mem = f"{rss:7.0f} MB" if rss else ""
        print(f"{name:<48} {prec:<17} {count:>6} {rate:>8.2f} {ratio:>9} {cpu:>9.3f} {mem:>10}")
    print()
    for prec, r in runs.items():
        if prec == "auto" or r is not runs.get("auto"):
            print(
                f"[{prec if prec != 'auto' else 'auto -> ' + r['precision']}] "
                f"embed_folder / bare model: {r['library'] / r['bare']:.1%} "
                f"(CPU time per image: {r['bare_cpu_s'] / r['library_cpu_s']:.1%})"
                + (
                    ""
                    if args.no_cli
                    else f";  CLI incl. model build / bare model: {r['cli'] / r['bare']:.1%}"
                )
            )
    if "float32" in runs and "bfloat16" in runs:
        r32, r16 = runs["float32"], runs["bfloat16"]
        f32, b16 = np.load(r32["features_path"]), np.load(r16["features_path"])
        a = agreement(f32, b16, labels)
        results["agreement"] = a
        print(
            f"bfloat16 / float32 speed: bare model {r16['bare'] / r32['bare']:.2f}x "
            f"(CPU time per image {r32['bare_cpu_s'] / r16['bare_cpu_s']:.2f}x), "
            f"embed_folder {r16['library'] / r32['library']:.2f}x"
        )
        print(
            f"bfloat16 vs float32 features of the same {a['n']} images: cosine similarity "
            f"mean {a['cos_mean']:.7f}, min {a['cos_min']:.7f}; ARI between their k=8 "
            f"clusterings {a['ari']:.3f} (float32 k-means with another seed: "
            f"{a['ari_f32_other_seed']:.3f}; ARI vs the 8 drawn families: float32 "
            f"{a['ari_truth_f32']:.3f}, bfloat16 {a['ari_truth_b16']:.3f})"
        )

    sizes = [int(s) for s in args.memory_sizes.split(",") if s]
    if sizes:
        print()
        results["memory"] = []
        for size in sizes:
            folder = work / f"mem-{size}"
            folder.mkdir()
            for f in all_files[:size]:
                os.link(f, folder / f.name)
            rss, wall = cli_memory(folder, work / f"store-mem-{size}", args)
            results["memory"].append({"images": size, "peak_rss_mb": rss, "wall_s": wall})
            print(
                f"featclust embed (CLI process, float32) on {size:>6} images: peak RSS "
                f"{rss:7.0f} MB, {wall:6.1f} s",
                flush=True,
            )
    csizes = [int(s) for s in args.cluster_sizes.split(",") if s]
    if csizes:
        print()
        results["cluster"] = []
        for size in csizes:
            c = run_worker({**common, "phase": "cluster", "n": size})
            results["cluster"].append(c)
            print(
                f"load + k-means (k=8) of {size:>6} flatten rows ({c['matrix_mb']:6.0f} MB "
                f"matrix, memory-mapped: {c['memmap']}, PCA {c['n_components']}): "
                f"{c['seconds']:6.1f} s, anonymous memory peak {c['fit_peak_anon_mb']:5.0f} MB "
                f"({c['anon_before_mb']:.0f} MB before loading) "
                f"(process peak RSS {c['child_peak_rss_mb']:5.0f} MB incl. mapped file pages), "
                f"ARI vs planted clusters {c['ari_vs_truth']:.3f}",
                flush=True,
            )
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f}")
    save()


if __name__ == "__main__":
    main()
