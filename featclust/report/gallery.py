"""The report's browsable pages: one gallery per cluster, and the near-duplicates page.

Static and offline like ``index.html``: images are shown through relative
links to files already on disk (the cluster folders' copies, or the originals),
so nothing is copied or re-encoded. Helpers (escaping, words) come from
:mod:`featclust.report.markup`.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import quote

import numpy as np

from .markup import (
    RANDOM_WEIGHTS,
    STYLE,
    esc,
    file_name,
    number,
    plural,
    random_weights,
    rel_link,
    url,
)
from .page import Cluster
from .render import cluster_colors


def gallery_html(
    record: Any,
    cluster: Cluster,
    n_clusters: int,
    outliers: np.ndarray | None = None,
    neighbours: tuple = (None, None),
) -> str:
    """The text of ``clusters/<folder>.html``: every member of one cluster.

    Thumbnails (the cluster folder's copies, scaled by the browser and loaded
    as they scroll into view) in order of distance to the centre, each with
    its file name, distance and outlier flag, linking to the copy.

    Parameters
    ----------
    record : featclust.output.RunRecord
    cluster : Cluster
    n_clusters : int
    outliers : numpy.ndarray of bool, optional
        Per member of ``cluster.paths``: farther from the centre than the
        outlier threshold. ``None``: unknown (no flags shown).
    neighbours : (Cluster or None, Cluster or None)
        The previous and next cluster, linked at the top.

    Returns
    -------
    str
    """
    e = esc
    name = os.path.basename(str(record.image_dir or "").rstrip("/"))
    n = len(cluster.paths)
    r, g, b = cluster_colors(n_clusters)[cluster.label]
    nav = [f'<a href="{url("..", "index.html")}#{quote(cluster.folder)}">back to the report</a>']
    for word, other in zip(("previous", "next"), neighbours):
        if other is not None:
            nav.append(
                f'<a href="{url(other.folder + ".html")}">{word}: cluster {number(other.label)}</a>'
            )
    n_out = int(np.sum(outliers)) if outliers is not None else None
    h = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{e(cluster.title)}: {e(name)}</title>",
        f"<style>{STYLE}</style>",
        "</head><body>",
        f'<h1><span class="swatch" style="background:rgb({r},{g},{b})"></span> '
        f"{e(cluster.title)}: {plural(n, 'image')}</h1>",
        f"<p>{' · '.join(nav)}</p>",
    ]
    if random_weights(record):
        h.append(f'<p class="random">{e(RANDOM_WEIGHTS)}</p>')
    h.append(
        "<p>Closest to the cluster centre first. The distance is to the centre, in "
        "the space k-means ran in"
        + (
            f"; {plural(n_out, 'image')} marked <span class='flag'>outlier</span> "
            "lie farther from it than 95% of the cluster's members"
            if n_out is not None
            else ""
        )
        + ". Each picture opens the image's copy in "
        f'<a href="{url("..", "..", cluster.folder)}/">{e(cluster.folder)}/</a>.</p>'
    )
    h.append('<div class="grid">')
    for i, rel in enumerate(cluster.paths):
        out = outliers is not None and bool(outliers[i])
        href = url("..", "..", cluster.folder, *rel.split("/"))
        cls = ' class="out"' if out else ""
        h.append(
            f'<figure{cls}><a href="{href}">'
            f'<img src="{href}" loading="lazy" alt="{e(rel)}"></a>'
            f"<figcaption>{file_name(rel)}<br>distance {number(float(cluster.distances[i]), 4)}"
            + (' <span class="flag">outlier</span>' if out else "")
            + "</figcaption></figure>"
        )
    h += ["</div>", "</body></html>", ""]
    return "\n".join(h)


def duplicates_html(
    groups: list,
    out_dir: str | os.PathLike,
    image_dir: str | os.PathLike,
    exact_groups: list | None = None,
    threshold: float | None = None,
) -> str:
    """The text of the near-duplicates page: each group's images side by side.

    The page is meant to sit directly in ``out_dir``: images are shown
    through relative links to the originals in ``image_dir`` (nothing is
    copied), each with its path and its similarity to the group's first image.

    Parameters
    ----------
    groups : list of list of (str, float)
        Near-duplicate groups: ``(path relative to image_dir, cosine similarity
        to the group's first image)``, the first being the representative.
    out_dir : path-like
        The folder the page is written into.
    image_dir : path-like
        The folder the paths are relative to.
    exact_groups : list of list of str, optional
        Byte-identical files, shown in a section of their own.
    threshold : float, optional
        The similarity threshold used, said on the page.

    Returns
    -------
    str
    """
    e = esc
    image_dir = os.path.abspath(os.fspath(image_dir))
    start = os.path.abspath(os.fspath(out_dir))
    name = os.path.basename(image_dir.rstrip(os.sep))

    def figure(rel, caption):
        link = rel_link(os.path.join(image_dir, *str(rel).split("/")), start)
        return (
            f'<figure><a href="{link}"><img src="{link}" loading="lazy" alt="{e(rel)}"></a>'
            f"<figcaption>{file_name(rel)}<br>{caption}</figcaption></figure>"
        )

    n_images = sum(len(g) for g in groups)
    h = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>near-duplicates: {e(name)}</title>",
        f"<style>{STYLE}</style>",
        "</head><body>",
        f"<h1>Near-duplicates in {e(name)}</h1>",
        f"<p>{e(image_dir)}: {plural(len(groups), 'group')} of near-identical features "
        f"({plural(n_images, 'image')})"
        + (
            f", cosine similarity at least {number(threshold, 4)} to the group's first image"
            if threshold is not None
            else ""
        )
        + ". Each row is one group, its first image first; the number under each image is "
        "its similarity to the first (1 = identical features). Click an image to open "
        "it.</p>",
    ]
    for i, group in enumerate(groups, start=1):  # numbered as duplicates.csv numbers them
        h.append(f'<h3 id="group-{i}">Group {i}: {plural(len(group), "image")}</h3>')
        h.append('<div class="dup">')
        for j, (rel, sim) in enumerate(group):
            h.append(figure(rel, "first image" if j == 0 else f"similarity {number(sim, 4)}"))
        h.append("</div>")
    if exact_groups:
        h.append(f"<h2>Byte-identical files: {plural(len(exact_groups), 'group')}</h2>")
        for i, group in enumerate(exact_groups, start=1):  # as identical.csv
            h.append(f'<h3 id="identical-{i}">Identical {i}: {plural(len(group), "file")}</h3>')
            h.append('<div class="dup">')
            h += [
                figure(rel, "same bytes as the first" if j else "first file")
                for j, rel in enumerate(group)
            ]
            h.append("</div>")
    h += ["</body></html>", ""]
    return "\n".join(h)
