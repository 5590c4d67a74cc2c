"""The commands that review and edit a sorted folder: ``review``, ``move``, ``merge``, ...

Each edit goes through :class:`featclust.output.SortedFolder` and leaves the
folder's report (where it has one) up to date.
"""

from __future__ import annotations

import sys
import webbrowser
from pathlib import Path

from .errors import UsageError
from .output import open_sorted
from .report import refresh_report
from .review import ReviewServer, is_loopback


def _cmd_review(args):
    host = "127.0.0.1" if args.host is None else args.host
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be 0 to 65535, got {args.port}")
    # The report is brought up to date once edits pause, and when the review stops.
    refresh = refresh_report if (Path(args.out_dir) / "report").is_dir() else None
    with ReviewServer(args.out_dir, host=host, port=args.port, refresh=refresh) as server:
        if not is_loopback(host):
            print(
                f"featclust: warning: --host {host}: the page can be reached from other "
                "machines by whoever has its address and token",
                file=sys.stderr,
            )
        print(f"featclust review: {server.url}  (Ctrl-C stops it)", flush=True)
        if not args.no_browser:
            webbrowser.open(server.url)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            print("featclust: review stopped; every edit is saved", file=sys.stderr)
    return 0


def _edited(out_dir, edit):
    """Apply ``edit(folder)``, print what it did and bring the report up to date."""
    result = edit(open_sorted(out_dir))
    print(result.message)
    refresh_report_of(out_dir)
    return 0


def refresh_report_of(out_dir):
    """Bring the folder's report (where it has one) up to date after an edit."""
    if (Path(out_dir) / "report").is_dir():
        refresh_report(out_dir)


CURATE_COMMANDS = {
    "review": _cmd_review,
    "move": lambda a: _edited(a.out_dir, lambda f: f.move(a.paths, a.to)),
    "merge": lambda a: _edited(a.out_dir, lambda f: f.merge(a.clusters, a.into)),
    "split": lambda a: _edited(a.out_dir, lambda f: f.split(a.cluster, a.k)),
    "rename": lambda a: _edited(a.out_dir, lambda f: f.rename(a.cluster, a.name)),
    "set-aside": lambda a: _edited(a.out_dir, lambda f: f.set_aside(a.paths)),
    "confirm": lambda a: _edited(a.out_dir, lambda f: f.confirm(a.clusters)),
    "resort": lambda a: _edited(a.out_dir, lambda f: f.resort()),
    "undo": lambda a: _edited(a.out_dir, lambda f: f.undo()),
    "redo": lambda a: _edited(a.out_dir, lambda f: f.redo()),
}
