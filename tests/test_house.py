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
#: What ``import featclust`` and ``featclust --help`` need none of: the library's own
#: dependencies too (scikit-learn alone took 2 of the 2.5 s --help took; issue 21 case 15).
NOT_FOR_HELP = (*HEAVY, "sklearn", "scipy", "numpy", "PIL", "jax", "torch")
#: The in-function imports the house allows (every other import is at a module's top):
#: the heavy optional modules, loaded where they are used, and two light entries.
DEFERRED_IMPORTS = {
    *HEAVY,
    "jax",  # Keras backends, asked about a GPU where one may exist (device.py)
    "torch",
    "matplotlib.figure",
    # featclust/__init__.py imports each public name on first use, so `import featclust`
    # loads none of the library; __main__ imports the command line only after --help was
    # ruled out, so --help is fast and a Ctrl-C during the imports is one line.
    "importlib.import_module",
    "featclust.cli",
}


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
    [
        "import featclust",
        "from featclust.__main__ import main; main(['--help'])",
        "from featclust.__main__ import main; main(['--version'])",
    ],
    ids=["import", "help", "version"],
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
    assert not loaded & set(NOT_FOR_HELP), f"{run} loaded {sorted(loaded & set(NOT_FOR_HELP))}"


def _deferred_imports(tree, module):
    """``(function, imported name)`` of each import inside a function of a module."""
    found = []
    for fn in ast.walk(tree):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(fn):
            if isinstance(node, ast.Import):
                found += [(fn.name, a.name) for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: resolved against the module's package
                    package = module.rsplit(".", node.level)[0]
                    base = f"{package}.{base}" if base else package
                found.append((fn.name, base))
            elif isinstance(node, ast.Attribute) and node.attr == "import_module":
                found.append((fn.name, "importlib.import_module"))
    return found


def test_deferred_imports_are_only_the_allowed_ones():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        module = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        if rel.name == "__init__":
            module += ".__init__"
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for fn, name in _deferred_imports(tree, module):
            if name not in DEFERRED_IMPORTS and name.split(".")[0] not in DEFERRED_IMPORTS:
                wrong.append(f"{rel}.py: {fn} imports {name}")
    assert not wrong, wrong
