"""The ``featclust`` command's top level: its commands and their one-line help.

Light on purpose: this module imports only the standard library and the
version, so ``featclust --help`` and ``featclust --version`` (answered by
:mod:`featclust.__main__` from :func:`top_parser` alone) load nothing of the
library. :func:`featclust.cli_parser.build_parser` adds each command's options
to the same top level.
"""

from __future__ import annotations

import argparse

from ._version import __version__

#: Each command and its line in ``featclust --help``, in the order shown.
COMMANDS = {
    "sort": "embed, cluster and copy images into cluster folders",
    "scan-k": "score k-means for a range of k and suggest one",
    "assign": "assign new images to the clusters of a sorted folder",
    "embed": "fill the feature store only",
    "similar": "list the images of a folder most similar to query images",
    "duplicates": "find near-duplicate and byte-identical images",
    "demo": "sort a built-in sample set of dot-pattern images",
    "report": "write the report of a sorted folder again",
    "review": "look through a sorted folder in the browser and correct it",
    "store": "look after the feature store",
    "move": "move images into another cluster",
    "merge": "merge clusters into one",
    "split": "split a cluster by k-means on its stored features",
    "rename": "name a cluster (its folder follows)",
    "set-aside": "take images out of every cluster",
    "confirm": "mark clusters as right (resort keeps them)",
    "resort": "re-sort the rest, learning from the edits",
    "undo": "undo the last edit",
    "redo": "redo the last edit undone",
}


def examples(*lines: str) -> str:
    """An epilog: ``examples:`` and the command lines, indented."""
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


def top_parser() -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    """The top level of the parser, and its subparsers action (no command's options yet).

    Returns
    -------
    parser : argparse.ArgumentParser
    sub : argparse._SubParsersAction
        Where :func:`featclust.cli_parser.build_parser` adds the commands.
    """
    parser = argparse.ArgumentParser(
        prog="featclust",
        description="Find groups of similar images: embed with VGG16, cluster with k-means, "
        "copy into one folder per cluster.",
        epilog=examples(
            "featclust sort photos/ sorted/ -k 8", "featclust demo demo-out/ --weights none"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"featclust {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    return parser, sub


def top_level_only(argv: list[str]) -> bool:
    """Whether ``argv`` asks the top level alone: no command, ``--help`` or ``--version``."""
    for arg in argv:
        if arg in COMMANDS:
            return False
        if arg not in ("-h", "--help", "--version"):
            return False
    return True


def light_parser() -> argparse.ArgumentParser:
    """The top level with every command listed but none of their options (for ``--help``)."""
    parser, sub = top_parser()
    for name, help in COMMANDS.items():
        sub.add_parser(name, help=help)
    return parser
