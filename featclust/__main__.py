"""The ``featclust`` console script and ``python -m featclust``.

``featclust --help`` and ``--version`` are answered from the light top level
(:mod:`featclust.cli_commands`) without loading the library; every other
command line goes to :func:`featclust.cli.main`, imported only then. A Ctrl-C
at any moment, the imports included, ends in one line and exit code 130.
"""

from __future__ import annotations

import sys

from .cli_commands import light_parser, top_level_only

INTERRUPTED = "featclust: interrupted"


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code instead of exiting.

    Parameters
    ----------
    argv : list of str, optional
        Arguments without the program name; default ``sys.argv[1:]``.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        if top_level_only(argv):
            try:
                light_parser().parse_args(argv)
            except SystemExit as e:
                return int(e.code or 0)
        # Deferred on purpose: the command line imports the whole library (scikit-learn
        # among it), which --help does not need and a Ctrl-C may interrupt.
        from .cli import main as cli_main

        return cli_main(argv)
    except KeyboardInterrupt:
        sys.stderr.write(INTERRUPTED + "\n")
        return 130


def main_exit() -> None:
    """Entry point of the console script."""
    sys.exit(main())


if __name__ == "__main__":
    main_exit()
