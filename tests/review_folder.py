"""A small sorted folder for the review tests, made without running a model.

The images are dots of a few kinds (``g0_...`` to ``g{G-1}_...``); their features
in the store are stand-ins (each kind's random centre plus noise, written through
the store's own API under ``--weights none``'s settings), so ``featclust sort
--weights none`` finds every feature stored and embeds nothing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from featclust import images
from featclust.embed import Embedder
from featclust.store import FeatureStore

KINDS = ((40, 4), (6, 14), (120, 2), (14, 7))  # dot count, radius


def write_images(folder: Path, groups: int, per_group: int, size: int = 64, seed: int = 0):
    """``per_group`` images of each of ``groups`` kinds; returns {name: kind}."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    truth = {}
    for g in range(groups):
        n, r = KINDS[g % len(KINDS)]
        r = max(1, r * size // 200)
        for i in range(per_group):
            im = Image.new("RGB", (size, size), "white")
            draw = ImageDraw.Draw(im)
            for x, y in rng.uniform(0.1 * size, 0.9 * size, (n, 2)):
                draw.ellipse([x - r, y - r, x + r, y + r], fill=(40 * g, 0, 0))
            name = f"g{g}_{i:05d}.png"
            im.save(folder / name)
            truth[name] = g
    return truth


def fill_store(image_dir: Path, store: Path, groups: int, seed: int = 0, spread: float = 0.3):
    """Stand-in features of every image (its kind's centre plus noise) into the store."""
    embedder = Embedder(weights="none")
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(groups, embedder.dim))

    def embed_files(missing, batch=2000):
        for start in range(0, len(missing), batch):
            good = [(f, images.read_bytes(f)[1]) for f in missing[start : start + batch]]
            kind = np.array([int(Path(f.path).name[1:].split("_")[0]) for f, _ in good])
            noise = rng.normal(scale=spread, size=(len(good), embedder.dim))
            yield good, (centres[kind] + noise).astype(np.float32), []

    files, problems = images.scan(image_dir)
    assert not problems, problems
    with FeatureStore(image_dir, embedder.settings(), store) as st:
        cached, bad, _ = st.update(files, embed_files)
        st.finish(files, bad)
    assert not bad
    return len(files)
