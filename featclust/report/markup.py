"""Small helpers the report's pages share: escaping, links, numbers and words, the style.

Every value put into a page goes through :func:`esc` (or :func:`number`);
every link through :func:`url` or :func:`rel_link`, so the pages open from
disk and load nothing from elsewhere.
"""

from __future__ import annotations

import math
import numbers
import os
import re
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ..fileio import fmt_num


def url(*parts: str) -> str:
    """The parts joined by ``/``, each quoted, the whole escaped for an attribute."""
    # A name that is not UTF-8 (held as surrogates) links to its own bytes.
    return escape("/".join(quote(p, errors="surrogateescape") for p in parts))


def number(value: object, digits: int = 3) -> str:
    """A number for the page: ``digits`` significant digits, ``n/a`` when undefined."""
    if value is None:
        return "n/a"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return escape(str(value))
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if not math.isfinite(value):
        return "n/a"
    return fmt_num(value, digits)


def esc(value: object) -> str:
    """``str(value)``, escaped for HTML."""
    return escape(str(value))


_BREAK_AFTER = re.compile(r"([/_\-. ])")


def file_name(rel: str) -> str:
    """A file name or relative path for a caption, escaped, that wraps only where it should.

    A line may break after ``/``, ``_``, ``-``, ``.`` and spaces (``<wbr>``), and
    anywhere in a long run without them (the style's ``overflow-wrap``), but
    never inside the extension: ``.png`` is one unbreakable ``<span class="ext">``.
    """
    rel = str(rel)
    stem, ext = os.path.splitext(rel)
    if not stem or "/" in ext or len(ext) > 12:
        stem, ext = rel, ""
    parts = _BREAK_AFTER.split(stem)
    h = "".join(escape(p) + ("<wbr>" if _BREAK_AFTER.fullmatch(p) else "") for p in parts)
    return h + (f'<span class="ext">{escape(ext)}</span>' if ext else "")


STYLE = (
    "body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1500px;padding:0 1em;"
    "color:#222}img{max-width:100%;height:auto;border:1px solid #ddd}"
    "table{border-collapse:collapse;margin:1em 0}"
    "td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}"
    "th{background:#f3f3f3}td.l,th.l{text-align:left}"
    ".warn{background:#fff3cd;border:1px solid #e0c36c;padding:.5em 1em}"
    ".maps{display:flex;flex-wrap:wrap;gap:1em}.maps figure{flex:1 1 600px;margin:0}"
    ".swatch{display:inline-block;width:.9em;height:.9em;vertical-align:middle}"
    "dl{display:grid;grid-template-columns:max-content auto;gap:.1em 1em}dt{color:#666}"
    ".flag{color:#a33;font-weight:bold}"
    ".doubt{background:#fdf0ef;border-left:4px solid #d9534f;padding:.2em 1em;margin:.5em 0}"
    ".doubt code{background:#fff;padding:.1em .3em;user-select:all}"
    ".random{background:#fde2e1;border:1px solid #d9534f;padding:.5em 1em;font-weight:bold}"
    ".ext{white-space:nowrap}"
    ".grid{display:flex;flex-wrap:wrap;gap:.6em}.grid figure{width:150px;margin:0;"
    "font-size:.8em;overflow-wrap:anywhere}.grid img{width:150px;height:150px;"
    "object-fit:contain;background:#fafafa}.grid figure.out{outline:2px solid #d9534f}"
    ".dup{display:flex;flex-wrap:wrap;gap:.6em;border-top:1px solid #ccc;padding:.5em 0}"
    ".dup figure{width:200px;margin:0;font-size:.8em;overflow-wrap:anywhere}"
    ".dup img{width:200px;height:200px;object-fit:contain;background:#fafafa}"
)

RANDOM_WEIGHTS = (
    'These features come from VGG16 with random weights (weights "none"), not a '
    "pretrained network: the clusters show what random filters respond to and "
    "say little about what the images show. Use it to try featclust out, not "
    "to judge your images."
)


def plural(n: int, word: str) -> str:
    """``3 images``, ``1 image``."""
    return f"{number(n)} {word}{'' if n == 1 else 's'}"


def random_weights(record: Any) -> bool:
    """Whether the record's features come from random weights (``weights="none"``)."""
    return isinstance(record.embedder, dict) and record.embedder.get("weights") == "none"


def rel_link(target: str, start: str) -> str:
    """A relative link from folder ``start`` to path ``target`` (a file URI across drives)."""
    try:
        rel = os.path.relpath(target, start)
    except ValueError:
        return escape(Path(target).as_uri())
    return url(*rel.replace(os.sep, "/").split("/"))
