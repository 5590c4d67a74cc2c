"""Issue 21, the command line's cases: each test is named after the case it covers.

8: loose query files in a folder holding the store; 12: Ctrl-C at any moment; 13:
follow-up commands take the settings a sort or the store recorded, and every hint
works as printed; 14: offline without --weights; 15: a light --help; 16: the small
things (scores' precision, similar's paths, scan-k --out's plot).
"""

import csv
import io
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import make_two_families, read_csv, run_cli, stripes

ROOT = Path(__file__).resolve().parents[1]
#: What the installed ``featclust`` script runs (pyproject.toml's [project.scripts]).
CONSOLE_SCRIPT = "import sys; from featclust.__main__ import main_exit; sys.exit(main_exit())"


def _console(args, env=None, prelude="", **kw):
    """The console script in a fresh interpreter on this checkout."""
    return subprocess.Popen(
        [sys.executable, "-c", prelude + CONSOLE_SCRIPT, *map(str, args)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def _lines(text):
    return [line for line in text.splitlines() if line.strip()]


# --- case 12: Ctrl-C at any moment ----------------------------------------------------

#: Raises KeyboardInterrupt when scikit-learn is imported: a Ctrl-C while the command
#: line loads the library, at the same moment every run.
INTERRUPT_ON_IMPORT = """
import sys
class _CtrlC:
    def find_spec(self, name, path=None, target=None):
        if name == "sklearn":
            raise KeyboardInterrupt
sys.meta_path.insert(0, _CtrlC())
"""


def test_case12_ctrl_c_while_importing_is_one_line_and_exit_130(tmp_path):
    proc = _console(["sort", tmp_path, tmp_path / "out"], prelude=INTERRUPT_ON_IMPORT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert _lines(err) == ["featclust: interrupted"], err
    assert out == ""


@pytest.mark.parametrize("delay", [0.3, 1.0, 2.5])
def test_case12_sigint_at_any_moment_is_one_line_and_exit_130(tmp_path, delay):
    images = tmp_path / "images"
    make_two_families(images, n_per_family=2)
    proc = _console(
        ["sort", images, tmp_path / "out", "-k", "2", "--weights", "none", "-q"],
        env={"XDG_CACHE_HOME": str(tmp_path / "cache")},
    )
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    if proc.returncode == 0:  # finished before the signal: nothing to check
        pytest.skip("the sort finished before the Ctrl-C")
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    lines = _lines(err)
    # Lines the run printed before the signal (the --weights none warning) may come first;
    # the interrupt itself is one line, the last, and every line is featclust's own.
    assert all(line.startswith("featclust: ") for line in lines), err
    assert [line for line in lines if "interrupted" in line] == lines[-1:], err


# --- case 15: a light --help ----------------------------------------------------------


def test_case15_help_is_the_full_parsers_and_loads_none_of_the_library():
    code = (
        "import json, sys\nfrom featclust.__main__ import main\n"
        "code = main(['--help'])\n"
        "print(json.dumps([code, sorted({m.split('.')[0] for m in sys.modules})]))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    *help_lines, last = proc.stdout.splitlines()
    code, loaded = json.loads(last)
    assert code == 0
    assert not {"sklearn", "scipy", "numpy", "PIL", "tensorflow", "keras"} & set(loaded)
    from featclust.cli import build_parser

    # The fast answer is the same text the full parser gives (every command listed).
    assert "\n".join(help_lines) + "\n" == build_parser().format_help()


def test_case15_commands_and_version_go_through_the_console_script(tmp_path):
    proc = _console(["--version"])
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0 and out.startswith("featclust ")
    proc = _console(["store", "gc", "--dry-run", "--store", tmp_path / "store"])
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert out.startswith("store: would drop 0 rows")
    proc = _console([])
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 2 and "required: COMMAND" in err


# --- a sort with a non-default feature setting, and the default store in the same folder


@pytest.fixture(scope="module")
def sorted_work(tmp_path_factory):
    """``work/in`` sorted into ``work/out`` with ``--weights none``; the default store is
    ``work/cache/...`` (as ``~/.cache`` is in a home folder) and ``work/new.png`` a loose
    image. No network: downloads go to a closed local port."""
    work = tmp_path_factory.mktemp("work")
    saved = {k: os.environ.get(k) for k in ("XDG_CACHE_HOME", "https_proxy", "HTTPS_PROXY")}
    os.environ.update(
        XDG_CACHE_HOME=str(work / "cache"),
        https_proxy="http://127.0.0.1:9",
        HTTPS_PROXY="http://127.0.0.1:9",
    )
    images = work / "in"
    truth = make_two_families(images, n_per_family=4)
    first = sorted(truth)[0]
    shutil.copyfile(images / first, images / "copy.png")  # byte-identical: a hint to follow
    stripes(work / "new.png")
    code, out, err = run_cli(
        "sort", images, work / "out", "-k", "2", "--weights", "none", "--batch-size", "4", "-q"
    )
    assert code == 0, err
    yield {"work": work, "images": images, "out": out, "err": err, "first": first}
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def _printed_command(text, command):
    """The ``featclust COMMAND ...`` command line a message printed, as argv for main()."""
    start = text.index(f"featclust {command} ")
    line = text[start:].splitlines()[0].rstrip(")")
    argv = shlex.split(line)
    assert argv[0] == "featclust"
    return argv[1:]


# --- case 8: a loose query file in a folder that holds the store -----------------------


def test_case8_loose_query_files_next_to_the_store_are_assigned_and_searched(sorted_work):
    work = sorted_work["work"]
    code, out, err = run_cli("assign", work / "out", work / "new.png", "-q")
    assert code == 0, err
    assert list(csv.DictReader(io.StringIO(out)))[0]["path"] == str(work / "new.png")
    code, out, err = run_cli(
        "similar", work / "in", work / "new.png", "--top", "2", "--weights", "none", "-q"
    )
    assert code == 0, err
    assert len(list(csv.DictReader(io.StringIO(out)))) == 2
    # A folder that is scanned still may not hold the store.
    code, _, err = run_cli("similar", work / "in", work, "--weights", "none", "-q")
    assert code == 2 and "inside the image folder" in err


# --- case 13: follow-up commands take the recorded settings; hints work as printed ----


def test_case13_the_sorts_duplicates_hint_works_as_printed(sorted_work):
    argv = _printed_command(sorted_work["out"], "duplicates")
    code, out, err = run_cli(*argv)
    assert code == 0, err
    assert "--weights none" in err  # the note: the settings the folder was embedded with
    dups = Path(argv[2])
    assert dups.name == "out-duplicates"
    identical = read_csv(dups / "identical.csv")
    assert sorted(r["path"] for r in identical) == sorted(["copy.png", sorted_work["first"]])


def test_case13_follow_up_commands_take_the_settings_recorded_there(sorted_work):
    work, images = sorted_work["work"], sorted_work["images"]
    query = images / sorted_work["first"]
    code, out, err = run_cli("similar", images, query, "--top", "3", "-q")
    assert code == 0, err
    assert "featclust: note: features as" in err and "--weights none" in err
    code, out, err = run_cli("scan-k", images, "-k", "2:3", "-q")
    assert code == 0, err
    assert "(0 embedded" in out
    # The help's example: refine one cluster of the sorted folder; embeds nothing.
    biggest = max((work / "out").glob("cluster_*"), key=lambda d: len(list(d.iterdir())))
    code, out, err = run_cli("sort", biggest, work / "split", "-k", "2", "--no-report", "-q")
    assert code == 0, err
    assert "(0 embedded" in out
    # Told otherwise: the options given decide, and no note.
    code, out, err = run_cli("similar", images, query, "--weights", "none", "-q")
    assert code == 0, err
    assert "note:" not in err


# --- case 14: offline without --weights --------------------------------------------------


def test_case14_offline_without_weights_prints_only_featclusts_line_with_the_way_out(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")  # a closed port: no download
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    images = tmp_path / "images"
    make_two_families(images, n_per_family=1)
    query = stripes(tmp_path / "q.png")
    code, out, err = run_cli("similar", images, query, "--store", tmp_path / "store", "-q")
    assert code == 3, err
    assert out == ""  # Keras' "Downloading data from ..." went to stdout, the CSV's stream
    lines = _lines(err)
    assert len(lines) == 1 and lines[0].startswith("featclust: error: cannot get the ImageNet")
    assert "--weights none" in lines[0] and "--weights PATH" in lines[0]
    assert "Downloading data" not in err


# --- case 16: the small things -------------------------------------------------------------


def test_case16_calinski_harabasz_has_one_decimal_everywhere(sorted_work):
    from featclust.tables import kscan_table

    scores = {
        "k": [2, 3],
        "inertia": [10.0, 8.0],
        "silhouette": [0.5, 0.4],
        "davies_bouldin": [1.0, 1.2],
        "calinski_harabasz": [6.2513, 43.849],
        "stability": [0.9, 0.8],
    }
    table = kscan_table(scores, 2)
    assert " 6.3 " in table and " 43.8 " in table
    assert re.search(r"Calinski-Harabasz \d+\.\d, ", sorted_work["out"])


def test_case16_similar_names_queries_and_results_alike(sorted_work):
    images = sorted_work["images"]
    query = sorted(images.glob("img_*.png"))[1]  # not the one with a byte-identical copy
    code, out, err = run_cli("similar", images, query, "--top", "2", "--weights", "none", "-q")
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert rows[0]["query"] == rows[0]["path"] == str(query)
    assert all(Path(r["path"]).is_file() for r in rows)  # each names a file from here


def test_case16_scan_k_out_says_how_to_see_the_plot(sorted_work):
    out_dir = sorted_work["work"] / "out"
    code, out, err = run_cli("scan-k", sorted_work["images"], "-k", "2:3", "--out", out_dir, "-q")
    assert code == 0, err
    assert f"see the plot: open {out_dir / 'kscan.png'}" in out
    code, _, err = run_cli(*_printed_command(out, "report"))
    assert code == 0, err
    assert (out_dir / "report" / "kscan.png").is_file()


def test_case16_readme_says_how_long_the_suite_takes():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    setup = readme.split("## Set-up", 1)[1].split("\n## ", 1)[0]
    assert "about 10 minutes" in setup
