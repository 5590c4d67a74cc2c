"""The review page's local HTTP server, and what it refuses.

The standard library's :class:`http.server.ThreadingHTTPServer`: one person's
browser on the same machine needs no framework, and nothing to install means
nothing more to trust. Every request is checked before it is routed:

* the Host header must name this server (a page of another site that made its
  own name resolve to 127.0.0.1, "DNS rebinding", is refused);
* a request another site's page made (``Sec-Fetch-Site`` other than
  ``same-origin``/``none``, or a foreign ``Origin``) is refused;
* the random token must come with it (query ``token``, header
  ``X-Featclust-Token``, or the cookie the page's first request set); an edit
  is a POST with the token in the header and a JSON body, nothing else;
* only files under the output folder are served: ``..``, encoded separators
  and links that lead out of it are refused.

Anything refused gets 403 and no detail.
"""

from __future__ import annotations

import hmac
import json
import mimetypes
import os
import posixpath
import secrets
import socket
import sys
import threading
import urllib.parse
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from ..errors import FeatclustError, OutputError, UsageError
from ..fileio import inside
from ..images import BadImageError
from .api import Review
from .thumbs import REVIEW_DIR

#: Hosts that are this machine; any other needs ``host=`` given explicitly.
LOOPBACK = ("127.0.0.1", "localhost", "::1")
LOCK_NAME = "review.lock"
MAX_BODY = 1 << 20
#: Seconds without an edit before the report is brought up to date.
REFRESH_DELAY = 1.0
STATIC = ("index.html", "review.js", "review.css")
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only."""
    return host in LOOPBACK or host.startswith("127.")


class ReviewServer(ThreadingHTTPServer):
    """The review page of one sorted folder, served to this machine.

    Holds the folder's review lock from creation to :meth:`close` (one
    review of a folder at a time).

    Parameters
    ----------
    out_dir : path-like
        A folder written by ``featclust sort``.
    host : str
        Address to listen on; ``"127.0.0.1"`` (this machine only) by default.
    port : int
        ``0``: a free port.
    refresh : callable or None
        ``refresh(out_dir)`` brings the report up to date; called in the
        background once edits pause for :data:`REFRESH_DELAY` seconds, and on
        :meth:`close` if an edit came after the last call.
    token : str, optional
        The secret every request must bring (default: a random one).

    Attributes
    ----------
    url : str
        The page's address, with the token.
    review : Review
    errors : list of str
        Faults of featclust's met while serving (each request still got an answer
        where it could).
    refresh_errors : list of str
        Why a refresh of the report failed, each time one did.

    Raises
    ------
    UsageError
        If another review of the folder is running, or the folder is no sort.
    OutputError
        If the lock file cannot be made.
    """

    daemon_threads = True
    allow_reuse_address = False

    def __init__(
        self,
        out_dir: str | os.PathLike,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        refresh: Any = None,
        token: str | None = None,
    ):
        self.out_dir = Path(out_dir)
        self.root = Path(os.path.realpath(out_dir))
        self.lock = _take_lock(self.out_dir)
        try:
            self.review = Review(out_dir, refresh=None)
            self.token = token or secrets.token_urlsafe(24)
            self.refresh = refresh
            self._pending = threading.Event()
            self._stop = threading.Event()
            self._refresher: threading.Thread | None = None
            self.refresh_errors: list[str] = []
            self.errors: list[str] = []
            family_host = host.strip("[]")
            if ":" in family_host:
                self.address_family = socket.AF_INET6
            try:
                super().__init__((family_host, port), _Handler)
            except OSError as e:
                raise UsageError(
                    f"cannot listen on {host} port {port}: {e.strerror or e}"
                ) from None
        except BaseException:
            self.lock.release()
            raise
        self.host = family_host
        self.port = self.server_address[1]
        shown = f"[{family_host}]" if ":" in family_host else family_host
        self.hosts = {f"{h}:{self.port}" for h in ("127.0.0.1", "localhost", "[::1]", shown)}
        self.origins = {f"http://{h}" for h in self.hosts}
        self.url = f"http://{shown}:{self.port}/?token={self.token}"
        if refresh is not None:
            self._refresher = threading.Thread(target=self._refresh_loop, daemon=True)
            self._refresher.start()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Keep what went wrong in :attr:`errors` (the library prints nothing); a browser
        that hung up (a picture no longer wanted) is no fault."""
        error = sys.exc_info()[1]
        if not isinstance(error, (ConnectionError, TimeoutError)):
            self.errors.append(f"{client_address}: {error!r}")

    def edited(self) -> None:
        """Note that an edit happened: the report is refreshed once edits pause."""
        self._pending.set()

    def _refresh_loop(self) -> None:
        while not self._stop.is_set():
            if not self._pending.wait(0.2):
                continue
            self._pending.clear()
            if self._stop.wait(REFRESH_DELAY) or self._pending.is_set():
                continue
            self._refresh_now()

    def _refresh_now(self) -> None:
        with self.review.disk_lock:
            try:
                self.refresh(self.out_dir)
            except FeatclustError as e:
                self.refresh_errors.append(str(e))

    def close(self) -> None:
        """Stop serving, bring the report up to date if an edit is pending, release the lock."""
        self._stop.set()
        if self._refresher is not None:
            self._refresher.join()
            if self._pending.is_set():
                self._pending.clear()
                self._refresh_now()
        self.server_close()
        self.lock.release()

    def __enter__(self) -> ReviewServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _take_lock(out_dir: Path) -> FileLock:
    if not (out_dir / "featclust.json").is_file():
        # open_sorted says what is wrong; no review folder is made in a folder that is none.
        Review(out_dir)
    folder = out_dir / REVIEW_DIR
    try:
        folder.mkdir(exist_ok=True)
        lock = FileLock(str(folder / LOCK_NAME))
        lock.acquire(timeout=0)
    except Timeout:
        raise UsageError(
            f"{str(out_dir)!r} is already being reviewed (another featclust review holds "
            f"{str(folder / LOCK_NAME)!r}); use that page or stop it first"
        ) from None
    except OSError as e:
        raise OutputError(f"cannot make the review's lock in {str(folder)!r}: {e}") from None
    return lock


class _Handler(BaseHTTPRequestHandler):
    server: ReviewServer
    protocol_version = "HTTP/1.1"
    server_version = "featclust-review"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the library never prints; the page shows what went wrong

    # -- checks --------------------------------------------------------------------------

    def _allowed(self, post: bool) -> bool:
        """Host, cross-site and token checks; sends 403 and returns False on any failure."""
        srv = self.server
        ok = self.headers.get("Host", "") in srv.hosts
        site = self.headers.get("Sec-Fetch-Site")
        if site is not None and site not in ("same-origin", "none"):
            ok = False
        origin = self.headers.get("Origin")
        if origin is not None and origin not in srv.origins:
            ok = False
        if ok:
            ok = self._token_ok(post)
        if not ok:
            self._send(HTTPStatus.FORBIDDEN, b"forbidden\n", "text/plain; charset=utf-8")
        return ok

    def _token_ok(self, post: bool) -> bool:
        want = self.server.token.encode()
        given = [self.headers.get("X-Featclust-Token", "")]
        if not post:
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
            given += query.get("token", [])
            given.append(_cookie(self.headers.get("Cookie", ""), self._cookie_name()))
        return any(g and hmac.compare_digest(g.encode(), want) for g in given)

    def _cookie_name(self) -> str:
        return f"featclust_review_{self.server.port}"

    # -- responses -----------------------------------------------------------------------

    def _send(self, status, body: bytes, ctype: str, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("Content-Security-Policy", _CSP)
        self.send_header("Cache-Control", "no-store")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, data: Any, status=HTTPStatus.OK) -> None:
        body = json.dumps(data, separators=(",", ":")).encode()
        self._send(status, body, "application/json")

    def _error(self, status, message: str) -> None:
        self._json({"error": message}, status)

    # -- routes --------------------------------------------------------------------------

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if not self._allowed(post=False):
            return
        parts = urllib.parse.urlsplit(self.path)
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(parts.query).items()}
        route = parts.path
        review = self.server.review
        try:
            if route in ("/", "/index.html"):
                cookie = (
                    f"{self._cookie_name()}={self.server.token}; HttpOnly; SameSite=Strict; Path=/"
                )
                self._send(
                    HTTPStatus.OK,
                    _static("index.html"),
                    "text/html; charset=utf-8",
                    {"Set-Cookie": cookie},
                )
            elif route == "/favicon.ico":
                self._send(HTTPStatus.NO_CONTENT, b"", "image/x-icon")
            elif route.startswith("/static/") and route[8:] in STATIC:
                ctype = mimetypes.guess_type(route)[0] or "application/octet-stream"
                if ctype.startswith("text/") or ctype.endswith("javascript"):
                    ctype += "; charset=utf-8"
                self._send(HTTPStatus.OK, _static(route[8:]), ctype)
            elif route == "/api/overview":
                self._json(review.overview())
            elif route == "/api/members":
                self._json(
                    review.members(
                        query.get("cluster", ""),
                        int(query.get("offset", 0)),
                        int(query.get("limit", 200)),
                        query.get("order", "distance"),
                    )
                )
            elif route == "/api/locate":
                self._json(review.locate(query.get("path", ""), query.get("order", "distance")))
            elif route == "/api/map":
                self._json(review.map_points())
            elif route == "/thumb":
                data = review.picture(query.get("path", ""), large=query.get("large") == "1")
                self._send(
                    HTTPStatus.OK, data, "image/jpeg", {"Cache-Control": "private, max-age=3600"}
                )
            elif route.startswith("/file/"):
                self._file(route[len("/file/") :])
            else:
                self._error(HTTPStatus.NOT_FOUND, "no such page")
        except KeyError:
            self._error(HTTPStatus.NOT_FOUND, "no such image")
        except BadImageError as e:
            self._error(HTTPStatus.UNPROCESSABLE_ENTITY, str(e))
        except (FeatclustError, ValueError) as e:
            self._error(HTTPStatus.BAD_REQUEST, str(e))

    do_HEAD = do_GET  # noqa: N815

    def _file(self, raw: str) -> None:
        """A file under the output folder; anything that leads out of it gets 403."""
        rel = urllib.parse.unquote(raw, errors="strict")
        parts = rel.split("/")
        if (
            not rel
            or "\\" in rel
            or "\0" in rel
            or rel.startswith("/")
            or any(p in ("", ".", "..") for p in parts)
            or posixpath.normpath(rel) != rel
        ):
            self._send(HTTPStatus.FORBIDDEN, b"forbidden\n", "text/plain; charset=utf-8")
            return
        root = self.server.root
        real = Path(os.path.realpath(root / rel))
        if not inside(real, root) or real == root:
            self._send(HTTPStatus.FORBIDDEN, b"forbidden\n", "text/plain; charset=utf-8")
            return
        try:
            data = real.read_bytes()
        except IsADirectoryError:
            self._error(HTTPStatus.NOT_FOUND, "not a file")
            return
        except OSError:
            self._error(HTTPStatus.NOT_FOUND, "no such file")
            return
        ctype = mimetypes.guess_type(real.name)[0] or "application/octet-stream"
        # Served files are data, not pages of this site: no script of theirs runs.
        self._send(HTTPStatus.OK, data, ctype, {"Content-Security-Policy": "sandbox"})

    def do_POST(self) -> None:  # noqa: N802
        if not self._allowed(post=True):
            return
        if urllib.parse.urlsplit(self.path).path != "/api/edit":
            self._error(HTTPStatus.NOT_FOUND, "no such action")
            return
        if self.headers.get("Content-Type", "").split(";")[0].strip() != "application/json":
            self._error(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "an edit is a JSON body")
            return
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self._error(HTTPStatus.LENGTH_REQUIRED, "Content-Length required")
            return
        if not 0 <= length <= MAX_BODY:
            self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "too large")
            return
        try:
            request = json.loads(self.rfile.read(length))
            result = self.server.review.edit(request)
        except (FeatclustError, ValueError, TypeError) as e:
            self._error(HTTPStatus.BAD_REQUEST, str(e))
            return
        except Exception as e:  # a fault of featclust's: the page says so, the server goes on
            self.server.errors.append(repr(e))
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"{type(e).__name__}: {e}")
            return
        self.server.edited()
        self._json(result)

    def _refuse(self) -> None:
        self._send(
            HTTPStatus.METHOD_NOT_ALLOWED,
            b"not allowed\n",
            "text/plain; charset=utf-8",
            {"Allow": "GET, HEAD, POST"},
        )

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _refuse  # noqa: N815


def _static(name: str) -> bytes:
    return resources.files("featclust.review").joinpath("static").joinpath(name).read_bytes()


def _cookie(header: str, name: str) -> str:
    for part in header.split(";"):
        k, _, v = part.strip().partition("=")
        if k == name:
            return v
    return ""


__all__ = ["ReviewServer", "is_loopback", "LOOPBACK"]
