"""Decoding costs memory bounded by the output, not by the shape or depth of the input.

Each case runs in a subprocess under an address-space limit (RLIMIT_AS), so a
regression fails the test with a MemoryError instead of taking the machine down.
"""

import json
import os
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
from PIL import Image

from featclust import images
from featclust.decoding import iter_decoded
from featclust.images import INPUT_SIZE

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: Runs in the child: imports, then the limit, then ``body``; prints a JSON result.
PRELUDE = """
import json, os, resource, sys
sys.path.insert(0, {root!r})
import numpy as np
from featclust import images
from featclust.decoding import iter_decoded

def vm_bytes():
    for line in open("/proc/self/status"):
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024

def status_kib(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])

def rss_kib():
    return status_kib("VmRSS")

def peak_kib():
    # VmHWM, not ru_maxrss: Linux carries the parent's peak across exec into ru_maxrss.
    return status_kib("VmHWM")

LIMIT = vm_bytes() + {headroom}
resource.setrlimit(resource.RLIMIT_AS, (LIMIT, LIMIT))
base_kib = rss_kib()
"""


def run_limited(body, headroom, timeout=300):
    """Run ``body`` in a fresh Python under RLIMIT_AS = its current size + ``headroom`` bytes."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MALLOC_ARENA_MAX": "2",
    }
    code = PRELUDE.format(root=ROOT, headroom=headroom) + textwrap.dedent(body)
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _strip_png(path, w, h):
    arr = np.full((h, w), 255, np.uint8)
    if h == 1:
        arr[0, : w // 2] = 0
    else:
        arr[: h // 2, 0] = 0
    Image.fromarray(arr).save(path, optimize=True)


def test_extreme_aspect_ratios_cost_memory_of_the_output(tmp_path):
    # Issue 11.1: a 274-byte 200000x1 PNG asked for a 200000x200000 canvas (40 GB).
    _strip_png(tmp_path / "wide.png", 200_000, 1)
    _strip_png(tmp_path / "tall.png", 1, 200_000)
    Image.new("L", (300, 200), 0).save(tmp_path / "normal.png")
    assert os.path.getsize(tmp_path / "wide.png") < 2000
    result = run_limited(
        f"""
        files, _ = images.scan({str(tmp_path)!r})
        out = {{}}
        bad = []
        for good, pixels, badb in iter_decoded(files, 2, workers=2):
            bad += [(b.path, b.reason) for b in badb]
            for (f, _), p in zip(good, pixels):
                out[f.path] = [int(p.min()), int(p.max()), p.shape,
                               [int(v) for v in p.mean(axis=1).round()],
                               [int(v) for v in p.mean(axis=0).round()]]
        print(json.dumps({{"out": out, "bad": bad}}))
    """,
        headroom=1 << 30,
    )
    assert result["bad"] == []
    out = result["out"]
    assert set(out) == {"wide.png", "tall.png", "normal.png"}
    for name in out:
        assert out[name][2] == [INPUT_SIZE, INPUT_SIZE]
    # The strip survives as a one-pixel line in the middle, half dark (left / top).
    lo, hi, _, row_means, col_means = out["wide.png"]
    assert lo < 64 and hi == 255
    assert [i for i, v in enumerate(row_means) if v < 255] == [INPUT_SIZE // 2 - 1]
    lo, hi, _, row_means, col_means = out["tall.png"]
    assert lo < 64 and [i for i, v in enumerate(col_means) if v < 255] == [INPUT_SIZE // 2 - 1]
    # A 3:2 image is resized with its aspect kept and padded: 224x149 + white bands.
    _, _, _, row_means, _ = out["normal.png"]
    assert row_means[:37] == [255] * 37 and row_means[37:186] == [0] * 149
    assert row_means[186:] == [255] * (INPUT_SIZE - 186)


def test_decoding_an_extreme_strip_directly_stays_small(tmp_path):
    _strip_png(tmp_path / "wide.png", 200_000, 1)
    result = run_limited(
        f"""
        data = open({str(tmp_path / "wide.png")!r}, "rb").read()
        px = images.decode(data)
        rgb = images.thumbnail({str(tmp_path / "wide.png")!r}, 64)
        print(json.dumps({{"shape": px.shape, "thumb": rgb.size,
                          "grew_kib": peak_kib() - base_kib}}))
    """,
        headroom=512 << 20,
    )
    assert result["shape"] == [INPUT_SIZE, INPUT_SIZE]
    assert result["thumb"] == [64, 1]
    assert result["grew_kib"] < 64 << 10


@pytest.fixture(scope="module")
def deep_pngs(tmp_path_factory):
    """Three 9000x9000 16-bit PNGs of a few hundred KB each (issue 11.11's files)."""
    folder = tmp_path_factory.mktemp("deep")
    arr = np.full((9000, 9000), 1000, np.uint16)
    arr[1000:4000, 2000:7000] = 4000
    arr[6000:8000, 500:3000] = 2500
    im = Image.fromarray(arr)
    assert im.mode == "I;16"
    im.save(folder / "deep_0.png", compress_level=9)
    del arr, im
    data = (folder / "deep_0.png").read_bytes()
    for i in (1, 2):
        (folder / f"deep_{i}.png").write_bytes(data)
    return folder


def test_16bit_9000x9000_pngs_decode_within_the_stated_bound(deep_pngs):
    # Issue 11.11: three of these reached 6.5 GB (several float64 copies each, two
    # threads at once). Now each holds its 2-byte pixels and one uint8 copy, and
    # the decoding threads together hold at most DECODE_BUDGET_BYTES of them.
    assert os.path.getsize(deep_pngs / "deep_0.png") < 1 << 20
    one = images.decode_cost("I;16", 9000, 9000)
    bound = max(images.DECODE_BUDGET_BYTES, one) + (128 << 20)  # + Pillow/numpy buffers
    result = run_limited(
        f"""
        files, _ = images.scan({str(deep_pngs)!r})
        seen = []
        for good, pixels, bad in iter_decoded(files, 1, workers=2):
            assert not bad, bad
            seen += [[int(p.min()), int(p.max()), int((p < 128).sum())] for p in pixels]
        print(json.dumps({{"seen": seen, "grew": (peak_kib() - base_kib) * 1024,
                          "budget_peak": images._BUDGET.peak}}))
    """,
        headroom=bound + (512 << 20),
    )
    print(
        f"16-bit 9000x9000 x3, 2 threads: peak RSS grew {result['grew'] / 2**20:.0f} MiB "
        f"(bound {bound / 2**20:.0f} MiB, one image {one / 2**20:.0f} MiB)"
    )
    assert len(result["seen"]) == 3
    for lo, hi, _dark in result["seen"]:
        assert lo == 0 and hi == 255  # scaled by the range: 1000 -> 0, 4000 -> 255
    assert result["budget_peak"] <= max(images.DECODE_BUDGET_BYTES, one)
    assert result["grew"] < bound


def test_16bit_scaling_is_unchanged_by_strips(monkeypatch):
    # The strip-wise range scaling equals scaling the whole array at once.
    rng = np.random.default_rng(0)
    arr = rng.integers(300, 9000, (700, 500)).astype(np.uint16)
    im = Image.fromarray(arr)
    whole = images._wide_to_gray(im)
    monkeypatch.setattr(images, "STRIP_PIXELS", 4096)  # 8 rows a strip
    assert len(images._strips(im)) > 50
    np.testing.assert_array_equal(np.asarray(images._wide_to_gray(im)), np.asarray(whole))
    a = arr.astype(np.float64)
    ref = np.clip((a - a.min()) * (255.0 / (a.max() - a.min())) + 0.5, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(np.asarray(whole), ref)


def test_budget_lets_one_oversized_image_through_alone():
    budget = images._Budget(100)
    inside, peak = [], []
    lock = threading.Lock()

    def hold(n):
        with budget.hold(n):
            with lock:
                inside.append(n)
                peak.append(sum(inside))
            time.sleep(0.05)
            with lock:
                inside.remove(n)

    threads = [threading.Thread(target=hold, args=(n,)) for n in (60, 60, 250, 30, 30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not any(t.is_alive() for t in threads)
    assert max(peak) == 250 or max(peak) <= 100
    assert all(p <= 100 for p in peak if p != 250)
    assert budget.used == 0


def test_any_failure_preparing_one_image_skips_that_image(tmp_path, monkeypatch):
    # Issue 11.1: MemoryError, ValueError, anything but KeyboardInterrupt/SystemExit
    # while preparing one image makes it a skipped file with a reason.
    for i, name in enumerate(("a.png", "b.png", "c.png", "d.png")):
        Image.new("L", (40, 30), 90 + i).save(tmp_path / name)
    files, _ = images.scan(tmp_path)
    real = images.Image.Image.resize

    def resize(self, size, *args, **kwargs):
        raise MemoryError()

    monkeypatch.setattr(images.Image.Image, "resize", resize)
    batches = list(iter_decoded(files, 2, workers=2))
    bad = {b.path: b.reason for _, _, badb in batches for b in badb}
    assert set(bad) == {"a.png", "b.png", "c.png", "d.png"}
    assert all(r == "out of memory while decoding" for r in bad.values())

    def explode(data, size=INPUT_SIZE):
        if data == (tmp_path / "b.png").read_bytes() and not seen:
            seen.append(1)
            raise ValueError("unexpected")
        return real_decode(data, size)

    monkeypatch.setattr(images.Image.Image, "resize", real)
    real_decode, seen = images.decode, []
    monkeypatch.setattr(images, "decode", explode)
    batches = list(iter_decoded(files, 2, workers=1))
    good = [f.path for g, _, _ in batches for f, _ in g]
    bad = [(b.path, b.reason) for _, _, badb in batches for b in badb]
    assert good == ["a.png", "c.png", "d.png"]
    assert bad == [("b.png", "cannot decode: ValueError: unexpected")]

    def interrupt(data, size=INPUT_SIZE):
        raise KeyboardInterrupt

    monkeypatch.setattr(images, "decode", interrupt)
    with pytest.raises(KeyboardInterrupt):
        list(iter_decoded(files, 2, workers=1))
