"""The output part of a sort alone: check, clear, claim, place, record, timed in one process.

    python benchmarks/resort_output_only.py IMAGES WORK

For a folder of images (the one ``resort_speed.py --keep DIR`` leaves in
``DIR/images``), times what ``sort`` does after clustering, with random
labels: a first sort into a new folder, the same labels again, other labels
(k = 13), and the same with symbolic links; ``cp -r`` for scale. Without the
model, the store and k-means, whose run time varies most on a shared
machine. Runs against the featclust on ``PYTHONPATH``, also one from before
``featclust.sort.in_place`` existed (to compare).
"""

import os
import shutil
import sys
import time

import numpy as np
from machine import describe

from featclust import sort as S
from featclust.output import OutputFolder, RunRecord

img, work = sys.argv[1], sys.argv[2]
paths = sorted(os.listdir(img))


def run(out, k, mode, seed):
    labels = np.random.default_rng(seed).integers(0, k, len(paths))
    t, c = time.perf_counter(), time.process_time()
    o = OutputFolder(out, img)
    dests = S.destinations(paths, labels, k)
    o.check_free(dests)
    if hasattr(S, "in_place"):
        held = S.in_place(o, img, paths, dests, mode)
        o.clear(keep=held.values())
        kw = {"held": held}
    else:
        o.clear()
        kw = {}
    o.claim(dests, RunRecord(image_dir=os.path.abspath(img), mode=mode), status="writing")
    S.sort_into_folders(img, o, paths, labels, k, mode, **kw)
    o.write_marker(None, "complete")
    return time.perf_counter() - t, time.process_time() - c


print(describe())
shutil.rmtree(work, ignore_errors=True)
os.makedirs(work)
t = time.perf_counter()
os.system(f"cp -r {img} {work}/copy")
print(f"cp -r: {time.perf_counter() - t:.2f} s wall")
STEPS = [
    ("copy, new folder", "out", 12, "copy", 0),
    ("again, same labels", "out", 12, "copy", 0),
    ("again, k=13 (other labels)", "out", 13, "copy", 1),
    ("symlink, new folder", "links", 12, "symlink", 0),
    ("symlink again", "links", 12, "symlink", 0),
]
for name, out, k, mode, seed in STEPS:
    w, c = run(os.path.join(work, out), k, mode, seed)
    print(f"{name:30s} {w:7.2f} s wall {c:7.2f} s CPU")
