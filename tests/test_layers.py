"""The import contract of pyproject.toml holds: no import upward, no import cycle.

The same check CI runs (``lint-imports``), here so that a developer running
the tests sees a broken layer at once. Skipped where import-linter is not
installed.
"""

import os
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
