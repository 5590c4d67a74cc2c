"""The import contract of pyproject.toml holds: no import upward, no import cycle.

The same check CI runs (``lint-imports``), here so that a developer running
the tests sees a broken layer at once. Skipped where import-linter is not
installed.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_import_contract_is_kept():
    pytest.importorskip("importlinter")
    code = (
        "import sys\nfrom importlinter.cli import lint_imports\n"
        "sys.exit(lint_imports(no_cache=True, no_logo=True))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "layers" in proc.stdout and "BROKEN" not in proc.stdout


def test_readme_shows_the_layers_of_the_contract():
    """README's "How the code is laid out" names the contract's layers, in its order."""
    tomllib = pytest.importorskip("tomllib")
    contract = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    layers = next(
        c["layers"] for c in contract["tool"]["importlinter"]["contracts"] if c["id"] == "layers"
    )
    want = [m for layer in layers for m in re.split(r"\s*[:|]\s*", layer)]
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## How the code is laid out", 1)[1].split("\n## ", 1)[0]
    cells = [re.split(r"(?<!\\)\|", line) for line in section.splitlines()]
    rows = [c[2] for c in cells if len(c) > 3 and c[1].strip() not in ("", "layer", "---")]
    quoted = [m for cell in rows for m in re.findall(r"`([^`]+)`", cell)]
    shown = [m.rstrip("/") for q in quoted for m in re.split(r"\s*(?:[:,]|\\\|)\s*", q) if m]
    assert shown == want
