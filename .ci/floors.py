#!/usr/bin/env python3
"""Print a pip constraints file pinning every declared dependency to its floor.

Reads ``pyproject.toml`` (the runtime dependencies and the extras named on the
command line, ``test`` by default) and turns each ``name>=floor`` into
``name==floor``, so that ``pip install -c FILE -e ".[test]"`` installs the
lowest versions the project says it works with. A requirement without a
``>=`` floor is an error: every dependency must state the lowest version it
was tested with. Extras (``dask[distributed]``) are dropped, since pip refuses
extras in a constraints file; an extra's own packages follow from the pin.

Usage: ``python .ci/floors.py [EXTRA ...] > constraints.txt``
"""

import re
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

_REQUIREMENT = re.compile(
    r"^\s*(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*(?P<spec>[^;]*?)\s*(?:;.*)?$"
)


def floor_pins(pyproject, extras=("test",)):
    """The ``name==floor`` lines for the runtime dependencies and ``extras``, sorted by name."""
    project = tomllib.loads(Path(pyproject).read_text(encoding="utf-8"))["project"]
    requirements = list(project.get("dependencies", []))
    optional = project.get("optional-dependencies", {})
    for extra in extras:
        if extra not in optional:
            raise SystemExit(f"floors: pyproject.toml has no extra {extra!r}")
        requirements += optional[extra]
    pins = {}
    for requirement in requirements:
        match = _REQUIREMENT.match(requirement)
        if match is None:
            raise SystemExit(f"floors: cannot read the requirement {requirement!r}")
        floors = [
            s.strip()[2:].strip() for s in match["spec"].split(",") if s.strip().startswith(">=")
        ]
        if len(floors) != 1:
            raise SystemExit(f"floors: {requirement!r} has no single '>=' floor")
        name = re.sub(r"[-_.]+", "-", match["name"]).lower()
        if pins.get(name, floors[0]) != floors[0]:
            raise SystemExit(f"floors: {name} has two floors: {pins[name]} and {floors[0]}")
        pins[name] = floors[0]
    return [f"{name}=={floor}" for name, floor in sorted(pins.items())]


def main(argv):
    root = Path(__file__).resolve().parents[1]
    extras = tuple(argv) or ("test",)
    print("# The lowest versions pyproject.toml declares (written by .ci/floors.py).")
    print("\n".join(floor_pins(root / "pyproject.toml", extras)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
