"""A sorted folder in a second, without Keras: stand-in features from the pixels.

Images are flat grays with a little noise, in three families (dark, middle,
light); the stand-in embedder's features separate them, so the sort's
clusters are the families.
"""

import numpy as np
from PIL import Image

from featclust import sort_folder
from featclust.output import LABELS_CSV
from featclust.tables import read_labels_csv

FAMILIES = {"dark": 30, "mid": 128, "light": 225}


class StandInEmbedder:
    """Features = pixel statistics (what ``embed_folder`` and ``sort`` need of an embedder)."""

    batch_size = batch = 8
    dim = 4

    def settings(self):
        return {"model": "stand-in", "dim": self.dim}

    def get_params(self):
        return {"weights": "none", "model": "stand-in"}

    def embed(self, gray):
        g = gray.reshape(len(gray), -1).astype(np.float32) / 255
        m = g.mean(1)[:, None]
        levels = np.array([FAMILIES[f] for f in FAMILIES], np.float32) / 255
        near = np.exp(-(((m - levels) / 0.15) ** 2))  # one column per family
        return np.concatenate([near, g.std(1)[:, None]], axis=1).astype(np.float32)

    embed_batch = embed


def make_families(folder, n_per_family=6, seed=0, families=FAMILIES):
    """Write ``n_per_family`` images of each family; return {path: family}."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    truth = {}
    j = 0
    for family, level in families.items():
        for _ in range(n_per_family):
            noise = rng.normal(0, 4, (32, 32)) + rng.normal(0, 6)
            px = np.clip(level + noise, 0, 255).astype(np.uint8)
            name = f"{family}_{j:03d}.png"
            Image.fromarray(px).save(folder / name)
            truth[name] = family
            j += 1
    return truth


def sorted_families(tmp_path, n_per_family=6, k=3, **kwargs):
    """Sort a new folder of families; returns (image folder, out folder, truth)."""
    images = tmp_path / "images"
    truth = make_families(images, n_per_family)
    out = tmp_path / "out"
    sort_stand_in(images, out, tmp_path, k, **kwargs)
    return images, out, truth


def sort_stand_in(images, out, tmp_path, k=3, **kwargs):
    """``sort_folder`` with the stand-in embedder and ``tmp_path``'s store, no report."""
    kwargs.setdefault("report", False)
    return sort_folder(
        images, out, n_clusters=k, embedder=StandInEmbedder(), store=tmp_path / "store", **kwargs
    )


def by_cluster(out):
    """{cluster: set of paths} from labels.csv."""
    paths, labels, _ = read_labels_csv(out / LABELS_CSV)
    found = {}
    for p, c in zip(paths, labels):
        found.setdefault(int(c), set()).add(p)
    return found
