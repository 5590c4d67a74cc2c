"""How often images of another kind are flagged as outliers of a sorted folder's clusters.

Usage::

    python benchmarks/outliers.py        # needs the maps cached by benchmarks/quality.py

A model is fitted on the 1,000-image dot-pattern folder of
``benchmarks/quality.py`` (k = 8) with the previous default (block4 max, no
PCA, 4 restarts) and the current one (block4 + block5 max, L2, PCA 32, L2,
16 restarts); then every image of the other kinds' 1,000-image folders is
assigned to it. A good outlier flag marks about 5% of the folder's own images
(the 95th percentile) and nearly all of another kind's.
"""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality  # noqa: E402
from machine import describe  # noqa: E402

from featclust import embed  # noqa: E402
from featclust.cluster import FeatureKMeans  # noqa: E402

SETTINGS = {
    "previous default: b4 max, no PCA, n_init 4": (
        quality.FeatureSpec((4,), "max"),
        {"pca": None, "normalize": False, "n_init": 4},
    ),
    "default: b45 max, L2 PCA 32 L2, n_init 16": (
        quality.FeatureSpec((4, 5), "max"),
        {"pca": 32, "normalize": True, "n_init": 16},
    ),
}


def features(args, kind, spec):
    """The representation ``spec`` of the kind's 1,000-image folder, from the cached maps."""
    ((_, _, _, fams, per, seed),) = [
        s for s in quality.benchmark_sets(args) if s[0] == f"{kind}/1000"
    ]
    paths, _ = quality.make_set(Path(args.cache) / "sets", kind, fams, per, seed)
    folder = quality.maps_folder(
        args.cache, paths[0].parent.name, embed.weights_identity(args.weights[0])
    )
    return quality.derive(quality.load_maps(folder), spec)


def main():
    args = quality.parse([])
    print(describe())
    for name, (spec, params) in SETTINGS.items():
        model = FeatureKMeans(8, random_state=0, **params).fit(features(args, "dots", spec))
        flagged = {}
        for kind in quality.KINDS:
            labels, distances = model.predict_with_distance(features(args, kind, spec))
            flagged[kind] = np.mean(distances > model.thresholds_[labels])
        print(
            f"{name}: share flagged as outliers of the dots model: "
            + ", ".join(f"{k} {v:.3f}" for k, v in flagged.items())
        )


if __name__ == "__main__":
    main()
