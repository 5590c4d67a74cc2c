"""Shared fixtures: real files in temporary folders, the real Keras VGG16.

The model is built with random, seeded weights (``weights="none"``): the
tests never download anything. Each test session keeps featclust's cache in a
temporary folder, so nothing is written to the user's home.
"""

import csv
import os

import numpy as np
import pytest
from pathlib import Path
from PIL import Image, ImageDraw

from featclust import samples


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    cache = tmp_path_factory.mktemp("xdg-cache")
    keras_home = tmp_path_factory.mktemp("keras-home")
    old = {k: os.environ.get(k) for k in ("XDG_CACHE_HOME", "KERAS_HOME")}
    os.environ["XDG_CACHE_HOME"] = str(cache)
    os.environ["KERAS_HOME"] = str(keras_home)
    yield
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def embedder():
    """One random-weights VGG16 for the whole session (built on first use)."""
    from featclust import Embedder

    return Embedder(weights="none", batch_size=8)


CONTRAST_FAMILIES = {"heavy": (60, 7), "light": (15, 2)}  # dot count, dot radius


def make_two_families(folder, n_per_family=8, families=("heavy", "light"), seed=0):
    """Write a folder of two clearly different dot patterns; return {path: family}.

    The default pair, many large dots ("heavy") against few small ones
    ("light"), is separated perfectly even by random-weight features, which
    is what the tests have: shape families from :mod:`featclust.samples` (ring,
    grid, ...) need pretrained weights to separate and are not used for
    assertions about cluster membership.
    """
    if not set(families) <= set(CONTRAST_FAMILIES):
        return samples.make_image_set(folder, n_per_family=n_per_family, families=families,
                                      seed=seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    order = rng.permutation(n_per_family * len(families))
    truth = {}
    for j, idx in enumerate(order):
        family = families[idx % len(families)]
        name = f"img_{j:05d}.png"
        contrast_dots(family, rng).save(folder / name)
        truth[name] = family
    return truth


def contrast_dots(family, rng, size=200):
    """One image of the "heavy" or "light" family."""
    n, r = CONTRAST_FAMILIES[family]
    im = Image.new("L", (size, size), 255)
    draw = ImageDraw.Draw(im)
    for x, y in rng.uniform(0.1 * size, 0.9 * size, (n, 2)):
        draw.ellipse([x - r, y - r, x + r, y + r], fill=0)
    return im


@pytest.fixture(scope="session")
def two_families(tmp_path_factory):
    """A folder of 8 "heavy" and 8 "light" images (treat as read-only), and its truth."""
    folder = tmp_path_factory.mktemp("two-families")
    return folder, make_two_families(folder)


def read_csv(path):
    """Rows of a CSV file as dicts."""
    with open(path, newline="", encoding="utf-8", errors="surrogateescape") as fh:
        return list(csv.DictReader(fh))


def stripes(path):
    """An image unlike the generated dots: thick black bars."""
    im = Image.new("L", (200, 200), 255)
    draw = ImageDraw.Draw(im)
    for y in range(5, 200, 22):
        draw.rectangle([0, y, 200, y + 7], fill=0)
    im.save(path)
    return path


def load_benchmark(name):
    """A script of ``benchmarks/`` as a module (its dataclasses look it up in sys.modules)."""
    import importlib.util
    import sys

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def run_cli(*argv):
    """``featclust ARGV`` in-process: exit code, stdout, stderr."""
    import contextlib
    import io

    from featclust.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()
