"""``featclust review``'s server: safe by construction (issue 22, point 4), and how it starts
and stops (point 3).

Every check is made against a real server on a free port of 127.0.0.1, over real HTTP
(``http.client``, which sends a path exactly as given: no client-side normalisation).
"""

import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

import pytest
from conftest import read_csv, run_cli
from review_folder import fill_store, write_images

import featclust.cli
import featclust.cli_curate
from featclust.errors import UsageError
from featclust.review import REVIEW_DIR, ReviewServer
from featclust.review.server import STATIC

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sorted_small(tmp_path_factory):
    """24 images of 3 kinds, sorted into 3 clusters (no report); treat as read-only."""
    tmp = tmp_path_factory.mktemp("review-safety")
    write_images(tmp / "images", groups=3, per_group=8)
    fill_store(tmp / "images", tmp / "store", groups=3)
    code, _, err = run_cli(
        "sort", tmp / "images", tmp / "out", "-k", "3", "--weights", "none",
        "--no-report", "--store", tmp / "store", "-q",
    )  # fmt: skip
    assert code == 0, err
    return tmp / "out"


@pytest.fixture
def out(sorted_small, tmp_path):
    """A copy of the sorted folder of this test's own."""
    copy = tmp_path / "out"
    shutil.copytree(sorted_small, copy, symlinks=True)
    return copy


@pytest.fixture
def server(out):
    srv = ReviewServer(out)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.close()
    thread.join(5)


def request(srv, method, path, body=None, headers=None, host=None):
    """Status, headers and body of one request, the path sent exactly as given."""
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    hdrs = {"Host": host or f"127.0.0.1:{srv.port}"}
    hdrs.update(headers or {})
    conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
    for k, v in hdrs.items():
        conn.putheader(k, v)
    data = json.dumps(body).encode() if body is not None else b""
    if method == "POST":
        conn.putheader("Content-Length", str(len(data)))
    conn.endheaders()
    if data:
        conn.send(data)
    resp = conn.getresponse()
    result = resp.status, dict(resp.getheaders()), resp.read()
    conn.close()
    return result


def t(srv):
    return urllib.parse.quote(srv.token)


def test_every_request_needs_the_token(server):
    tok = t(server)
    paths = [
        "/",
        "/index.html",
        "/api/overview",
        "/api/members?cluster=0",
        "/api/map",
        "/thumb?path=g0_00000.png",
        "/file/labels.csv",
        *(f"/static/{name}" for name in STATIC),
    ]
    for path in paths:
        assert request(server, "GET", path)[0] == 403, path
        sep = "&" if "?" in path else "?"
        assert request(server, "GET", f"{path}{sep}token=wrong{tok}")[0] == 403, path
        assert request(server, "GET", f"{path}{sep}token={tok}")[0] == 200, path
        status = request(server, "GET", path, headers={"X-Featclust-Token": server.token})[0]
        assert status == 200, path
    # The cookie the page's first request sets serves too (images of the report's pages).
    _, headers, _ = request(server, "GET", f"/?token={tok}")
    cookie = headers["Set-Cookie"].split(";")[0]
    assert "HttpOnly" in headers["Set-Cookie"] and "SameSite=Strict" in headers["Set-Cookie"]
    assert request(server, "GET", "/api/overview", headers={"Cookie": cookie})[0] == 200
    name = cookie.split("=")[0]
    assert request(server, "GET", "/api/overview", headers={"Cookie": f"{name}=x"})[0] == 403


def test_only_files_under_the_output_folder_are_served(server, out, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the page")
    (out / "cluster_link.txt").symlink_to(secret)
    (out / "dir_link").symlink_to(tmp_path)
    tok = t(server)
    status, _, body = request(server, "GET", f"/file/labels.csv?token={tok}")
    assert status == 200 and body == (out / "labels.csv").read_bytes()
    refused = [
        "/file/../secret.txt",
        "/file/cluster_0/../../secret.txt",
        "/file/%2e%2e/secret.txt",
        "/file/%2E%2E%2Fsecret.txt",
        "/file/..%2fsecret.txt",
        "/file/%252e%252e/secret.txt",  # decoded once only: a name with "%2e", not found
        "/file//etc/passwd",
        "/file/%2Fetc%2Fpasswd",
        "/file/..\\secret.txt",
        "/file/cluster_link.txt",
        "/file/dir_link/secret.txt",
        "/file/./labels.csv",
    ]
    for path in refused:
        status, _, body = request(server, "GET", f"{path}?token={tok}")
        assert status in (403, 404), path
        assert b"not for the page" not in body, path
    # The traversals proper are refused outright, not merely not found.
    for path in refused[:5] + refused[-3:]:
        assert request(server, "GET", f"{path}?token={tok}")[0] == 403, path
    # A thumbnail is asked for by an image's name in labels.csv, nothing else.
    assert request(server, "GET", f"/thumb?path=../secret.txt&token={tok}")[0] == 404
    assert request(server, "GET", f"/thumb?path={secret}&token={tok}")[0] == 404


def test_edits_only_by_post_with_the_token_in_a_header(server, out):
    before = (out / "labels.csv").read_bytes()
    edit = {"op": "rename", "cluster": 0, "name": "rings"}
    tok = t(server)
    assert request(server, "GET", f"/api/edit?token={tok}")[0] == 404
    assert request(server, "POST", "/api/edit", edit)[0] == 403
    assert request(server, "POST", f"/api/edit?token={tok}", edit)[0] == 403
    cookie = f"featclust_review_{server.port}={server.token}"
    assert request(server, "POST", "/api/edit", edit, {"Cookie": cookie})[0] == 403
    form = {"X-Featclust-Token": server.token, "Content-Type": "text/plain"}
    assert request(server, "POST", "/api/edit", edit, form)[0] == 415
    for method in ("PUT", "DELETE", "PATCH"):
        assert request(server, method, f"/api/edit?token={tok}")[0] in (403, 405)
    hdr = {"X-Featclust-Token": server.token, "Content-Type": "application/json"}
    status, _, body = request(server, "POST", "/api/edit", {"op": "rm -rf"}, hdr)
    assert status == 400 and b"edit must be one of" in body
    status, _, body = request(server, "POST", "/api/edit", {"op": "undo", "x": 1}, hdr)
    assert status == 400
    assert (out / "labels.csv").read_bytes() == before


def test_host_header_is_checked(server):
    """A page whose own name was made to resolve to 127.0.0.1 (DNS rebinding) sends its
    name as the Host: refused, token or not."""
    url = f"/api/overview?token={t(server)}"
    for host in (f"evil.example:{server.port}", "evil.example", "127.0.0.1", "127.0.0.1:1"):
        assert request(server, "GET", url, host=host)[0] == 403, host
    for host in (f"127.0.0.1:{server.port}", f"localhost:{server.port}"):
        assert request(server, "GET", url, host=host)[0] == 200, host


def test_requests_from_other_sites_are_refused(server, out):
    before = (out / "labels.csv").read_bytes()
    url = f"/api/overview?token={t(server)}"
    hdr = {"X-Featclust-Token": server.token, "Content-Type": "application/json"}
    foreign = [
        {"Origin": "http://evil.example"},
        {"Origin": "http://127.0.0.1:1"},  # another port of this machine: another origin
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
    ]
    for h in foreign:
        assert request(server, "GET", url, headers=h)[0] == 403, h
        assert request(server, "POST", "/api/edit", {"op": "undo"}, {**hdr, **h})[0] == 403, h
    ok = {"Origin": f"http://127.0.0.1:{server.port}", "Sec-Fetch-Site": "same-origin"}
    assert request(server, "GET", url, headers=ok)[0] == 200
    assert request(server, "GET", url, headers={"Sec-Fetch-Site": "none"})[0] == 200
    assert (out / "labels.csv").read_bytes() == before


def test_names_are_never_markup():
    """The page sets every name as text: no HTML is ever built from data, and inline
    scripts (an injected onerror=) are refused by the page's Content-Security-Policy."""
    js = (ROOT / "featclust/review/static/review.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in js, sink
    assert "textContent" in js


def test_pages_forbid_inline_scripts_and_framing(server):
    _, headers, _ = request(server, "GET", f"/?token={t(server)}")
    csp = headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp and headers["X-Frame-Options"] == "DENY"
    _, headers, _ = request(server, "GET", f"/file/labels.csv?token={t(server)}")
    assert headers["Content-Security-Policy"] == "sandbox"
    assert headers["X-Content-Type-Options"] == "nosniff"


def test_bound_to_loopback_on_a_free_port(server):
    assert server.server_address[0] == "127.0.0.1"
    assert server.port > 0
    assert server.url.startswith(f"http://127.0.0.1:{server.port}/?token=")
    assert len(server.token) >= 32


def test_one_review_of_a_folder_at_a_time(server, out):
    with pytest.raises(UsageError, match="already being reviewed"):
        ReviewServer(out)
    code, _, err = run_cli("review", out, "--no-browser")
    assert code == 2 and "already being reviewed" in err and len(err.splitlines()) == 1


def test_thumbnails_made_once_and_cached(server, out, monkeypatch):
    tok = t(server)
    status, headers, first = request(server, "GET", f"/thumb?path=g1_00003.png&token={tok}")
    assert status == 200 and headers["Content-Type"] == "image/jpeg"
    assert first[:2] == b"\xff\xd8"
    cached = list((out / REVIEW_DIR / "thumbs").rglob("*.jpg"))
    assert len(cached) == 1
    # Served from the cache: drawing would fail now.
    monkeypatch.setattr(
        "featclust.review.thumbs.thumbnail", lambda *a: (_ for _ in ()).throw(OSError)
    )
    assert request(server, "GET", f"/thumb?path=g1_00003.png&token={tok}")[2] == first
    assert "thumbs" not in " ".join(r for r in (out / "featclust.json").read_text().split())


def test_never_the_whole_folder_at_once(server):
    hdr = {"X-Featclust-Token": server.token}
    _, _, body = request(server, "GET", "/api/overview", headers=hdr)
    overview = json.loads(body)
    assert [c["size"] for c in overview["clusters"]] == [8, 8, 8]
    assert all(len(c["first"]) <= 12 for c in overview["clusters"])
    _, _, body = request(server, "GET", "/api/members?cluster=0&limit=5&offset=2", headers=hdr)
    page = json.loads(body)
    assert page["total"] == 8 and len(page["images"]) == 5
    distances = [i["distance"] for i in page["images"]]
    assert distances == sorted(distances)  # distance order
    _, _, body = request(server, "GET", "/api/members?cluster=0&limit=100000", headers=hdr)
    assert len(json.loads(body)["images"]) == 8


def test_not_a_sorted_folder_is_one_line(tmp_path):
    code, out, err = run_cli("review", tmp_path, "--no-browser")
    assert code == 2 and not out and len(err.splitlines()) == 1
    assert "not a featclust output folder" in err
    assert not (tmp_path / REVIEW_DIR).exists()


def test_opens_the_browser_unless_told_not_to(out, monkeypatch):
    opened = []
    monkeypatch.setattr(featclust.cli_curate.webbrowser, "open", opened.append)

    def stop(self, *a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(ReviewServer, "serve_forever", stop)
    code, stdout, err = run_cli("review", out)
    assert code == 0 and len(opened) == 1 and "token=" in opened[0]
    assert opened[0] in stdout
    assert err == "featclust: review stopped; every edit is saved\n"
    code, _, _ = run_cli("review", out, "--no-browser")
    assert code == 0 and len(opened) == 1
    # The lock was let go each time.
    ReviewServer(out).close()


def test_other_host_only_when_given_with_a_warning(out, monkeypatch):
    monkeypatch.setattr(ReviewServer, "serve_forever", lambda self: None)
    code, stdout, err = run_cli("review", out, "--no-browser", "--host", "0.0.0.0")
    assert code == 0 and "http://0.0.0.0:" in stdout
    assert "warning: --host 0.0.0.0" in err
    code, _, err = run_cli("review", out, "--no-browser", "--host", "127.0.0.1")
    assert code == 0 and "warning" not in err


def test_cli_prints_its_url_and_ctrl_c_stops_it_cleanly(out):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "featclust", "review", str(out), "--no-browser"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        line = proc.stdout.readline()
        assert line.startswith("featclust review: http://127.0.0.1:"), line
        url = urllib.parse.urlsplit(line.split()[2])
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
        conn.request("GET", f"/api/overview?{url.query}")
        assert conn.getresponse().status == 200
        conn.close()
        time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode in (0, 130)
    assert err.splitlines() == ["featclust: review stopped; every edit is saved"]
    assert read_csv(out / "labels.csv")  # the folder is as it was, and the lock free
    ReviewServer(out).close()


def test_an_edit_is_on_disk_when_the_page_hears_of_it_and_the_report_follows(out):
    refreshed = []
    srv = ReviewServer(out, refresh=refreshed.append)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        hdr = {"X-Featclust-Token": srv.token, "Content-Type": "application/json"}
        _, _, body = request(srv, "GET", "/api/members?cluster=0", headers=hdr)
        moved = [i["path"] for i in json.loads(body)["images"][:2]]
        _, _, body = request(srv, "GET", "/api/overview", headers=hdr)
        folder = json.loads(body)["clusters"][1]["folder"]
        edit = {"op": "move", "paths": moved, "to": 1}
        status, _, body = request(srv, "POST", "/api/edit", edit, hdr)
        assert status == 200, body
        assert json.loads(body)["message"] == f"moved 2 images to {folder}"
        labels = {r["path"]: r["cluster"] for r in read_csv(out / "labels.csv")}
        assert all(labels[p] == "1" for p in moved)
        assert all((out / folder / p).is_file() for p in moved)
        _, _, body = request(srv, "GET", "/api/overview", headers=hdr)
        assert [c["size"] for c in json.loads(body)["clusters"]] == [6, 10, 8]
        # Two edits in a row: the report is refreshed once, after they pause.
        status, _, _ = request(srv, "POST", "/api/edit", {"op": "undo"}, hdr)
        assert status == 200 and refreshed == []
    finally:
        srv.shutdown()
        srv.close()
        thread.join(5)
    assert refreshed == [out]
    assert not srv.errors


def test_split_merge_rename_set_aside_undo_redo_through_the_server(server, out):
    hdr = {"X-Featclust-Token": server.token, "Content-Type": "application/json"}

    def edit(**fields):
        status, _, body = request(server, "POST", "/api/edit", fields, hdr)
        assert status == 200, body
        _, _, body = request(server, "GET", "/api/overview", headers=hdr)
        return json.loads(body)

    assert len(edit(op="split", cluster=0, k=2)["clusters"]) == 4
    assert len(edit(op="merge", clusters=[0, 3])["clusters"]) == 3
    named = edit(op="rename", cluster=1, name="Dense dots")["clusters"][1]
    assert named["name"] == "Dense dots" and (out / named["folder"]).is_dir()
    first = json.loads(request(server, "GET", "/api/members?cluster=2", headers=hdr)[2])
    aside = first["images"][0]["path"]
    assert edit(op="set_aside", paths=[aside])["set_aside"] == 1
    assert (out / "set_aside" / aside).is_file()
    page = json.loads(request(server, "GET", "/api/members?cluster=aside", headers=hdr)[2])
    assert [i["path"] for i in page["images"]] == [aside]
    assert edit(op="undo")["set_aside"] == 0
    overview = edit(op="redo")
    assert overview["set_aside"] == 1 and overview["can_undo"] and not overview["can_redo"]
    status, _, body = request(server, "POST", "/api/edit", {"op": "merge", "clusters": [9]}, hdr)
    assert status == 400 and b"error" in body  # the library's own message, one line
    assert not server.errors
