"""What the runtime does to a user's terminal and start-up time (issue 12).

Both tests run the real CLI in a subprocess, with the environment a new user
has: no TF_CPP_MIN_LOG_LEVEL, GLOG_minloglevel or CUDA_VISIBLE_DEVICES set.
"""

import os
import re
import subprocess
import sys
import textwrap

import pytest
from conftest import make_two_families

from featclust import device

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROGRESS = re.compile(r"^[a-z -]+: +\d+%\|")
QUIET_VARS = (
    "TF_CPP_MIN_LOG_LEVEL",
    "GLOG_minloglevel",
    "CUDA_VISIBLE_DEVICES",
    "FEATCLUST_RUNTIME_LOGS",
    "KERAS_BACKEND",
)


def _env(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in QUIET_VARS}
    env.update(
        XDG_CACHE_HOME=str(tmp_path / "xdg"), KERAS_HOME=str(tmp_path / "keras"), PYTHONPATH=ROOT
    )
    return env


def _featclust(tmp_path, *args):
    return subprocess.run(
        [sys.executable, "-m", "featclust", *args],
        capture_output=True,
        text=True,
        env=_env(tmp_path),
        cwd=tmp_path,
        timeout=600,
        check=False,
    )


def test_a_sort_on_a_cpu_prints_only_featclusts_lines(tmp_path):
    make_two_families(tmp_path / "images", n_per_family=3)
    proc = _featclust(
        tmp_path,
        "sort",
        "images",
        "out",
        "-k",
        "2",
        "--weights",
        "none",
        "--batch-size",
        "4",
        "--store",
        str(tmp_path / "store"),
        "-q",
    )
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.replace("\r", "\n").splitlines() if line.strip()]
    # Progress frames are featclust's too (and the lead's business); anything else
    # must be a "featclust:" line.
    foreign = [
        line for line in lines if not line.startswith("featclust:") and not PROGRESS.match(line)
    ]
    assert foreign == [], "\n".join(foreign)
    assert any("random weights" in line for line in lines)  # featclust's own still show


def test_runtime_errors_are_not_swallowed(capfd):
    # Inside the quiet block only start-up noise is dropped; other lines pass.
    with device.quiet_native_stderr():
        os.write(2, b"W0000 00:00:1796120481.612822   14253 cudart_stub.cc:31] noise\n")
        os.write(
            2,
            b"WARNING: All log messages before absl::InitializeLog() is called "
            b"are written to STDERR\n",
        )
        os.write(
            2,
            b"E0000 00:00:1796120486.252906   14253 cuda_platform.cc:52] failed "
            b"call to cuInit: INTERNAL\n",
        )
        os.write(2, b"F0000 00:00:1.2 1 x.cc:1] Check failed: real trouble\n")
        print("a Python warning", file=sys.stderr)
    err = capfd.readouterr().err
    assert sorted(err.splitlines()) == [
        "F0000 00:00:1.2 1 x.cc:1] Check failed: real trouble",
        "a Python warning",
    ]


def test_gpu_presence_is_read_from_device_files(tmp_path, monkeypatch):
    if not sys.platform.startswith("linux"):
        pytest.skip("device files are read on Linux only")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert not device.gpu_may_exist(str(tmp_path))
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev" / "nvidiactl").write_text("")
    assert not device.gpu_may_exist(str(tmp_path))  # the control file is not a GPU
    (tmp_path / "dev" / "nvidia0").write_text("")
    assert device.gpu_may_exist(str(tmp_path))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert not device.gpu_may_exist(str(tmp_path))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    assert device.gpu_may_exist(str(tmp_path))


CHECK_IMPORTS = """
import runpy, sys
sys.argv = ["featclust", *{args!r}]
try:
    runpy.run_module("featclust", run_name="__main__", alter_sys=True)
except SystemExit as e:
    code = e.code
print("EXIT", code)
print("LOADED", sorted(m for m in sys.modules
                       if m.split(".")[0] in ("tensorflow", "keras", "jax", "torch")))
"""


def test_a_fully_cached_embed_imports_no_tensorflow(tmp_path):
    if device.gpu_may_exist():
        pytest.skip("a GPU may exist here: resolving precision='auto' asks the backend")
    make_two_families(tmp_path / "images", n_per_family=2)
    args = [
        "embed",
        "images",
        "--weights",
        "none",
        "--batch-size",
        "4",
        "--store",
        str(tmp_path / "store"),
        "-q",
    ]
    first = _featclust(tmp_path, *args)
    assert first.returncode == 0, first.stderr
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CHECK_IMPORTS.format(args=args))],
        capture_output=True,
        text=True,
        env=_env(tmp_path),
        cwd=tmp_path,
        timeout=300,
        check=False,
    )
    assert "EXIT 0" in proc.stdout, proc.stderr
    assert "(0 embedded, 4 reused)" in proc.stdout
    assert "LOADED []" in proc.stdout, proc.stdout
