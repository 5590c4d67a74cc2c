"""House rules a reviewer would otherwise have to remember: module size and a light import."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "featclust"
MAX_LINES = 500
HEAVY = ("tensorflow", "keras", "matplotlib", "openTSNE", "dask", "distributed")


def _reason_for_length(path):
    """The module docstring's "Over 500 lines:" line, or None."""
    docstring = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    for line in docstring.splitlines():
        if line.strip().startswith("Over 500 lines:"):
            return line
    return None


def test_no_module_is_over_500_lines_without_saying_why():
    too_long = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        n = len(path.read_text(encoding="utf-8").splitlines())
        if n > MAX_LINES and _reason_for_length(path) is None:
            too_long[str(path.relative_to(PACKAGE.parent))] = n
    assert not too_long, (
        f"modules over {MAX_LINES} lines without an 'Over 500 lines:' line in their "
        f"docstring: {too_long}"
    )


def test_reason_line_is_found_only_at_the_start_of_a_docstring_line(tmp_path):
    said = tmp_path / "said.py"
    said.write_text('"""A module.\n\nOver 500 lines: one format, one owner.\n"""\nx = 1\n')
    unsaid = tmp_path / "unsaid.py"
    unsaid.write_text('"""A module.\n\nIt is not over 500 lines: no.\n"""\n# Over 500 lines: x\n')
    assert _reason_for_length(said) == "Over 500 lines: one format, one owner."
    assert _reason_for_length(unsaid) is None


@pytest.mark.parametrize(
    "run",
    ["import featclust", "from featclust.cli import main; main(['--help'])"],
    ids=["import", "help"],
)
def test_import_featclust_and_help_load_no_heavy_optional_module(run):
    code = (
        f"import json, sys\n{run}\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    # Run from the checkout's root, so "-c" imports this checkout's featclust.
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
        cwd=PACKAGE.parent,
    )
    loaded = set(json.loads(out.stdout.strip().splitlines()[-1]))
    assert "featclust" in loaded
    assert not loaded & set(HEAVY), f"{run} loaded {sorted(loaded & set(HEAVY))}"
