"""The report's text: ``index.html`` and the CSV tables (the galleries are :mod:`.gallery`'s).

Every value put into the page is escaped; every link is relative, so the
page opens from disk and loads nothing from elsewhere. Numbers are written
with :func:`featclust.fileio.fmt_num` (fixed-point shares and silhouettes
aside); ``n/a`` where a value is undefined.
"""

from __future__ import annotations

import numbers
import os
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape
from typing import Any
from urllib.parse import quote

import numpy as np

from ..fileio import csv_text, fmt_num
from ..flags import flag_rules, unstable_clustering
from ..kscan import MIN_STABILITY
from .markup import (
    RANDOM_WEIGHTS,
    STYLE,
    esc,
    number,
    plural,
    random_weights,
    rel_link,
    url,
)
from .render import cluster_colors

REPORT_DIR = "report"
#: The cluster galleries, below the report folder.
GALLERY_DIR = "clusters"

SUMMARY_HEADER = (
    "cluster",
    "folder",
    "size",
    "share",
    "mean_distance",
    "max_distance",
    "silhouette",
    "flags",
)
MEMBERS_HEADER = ("position", "rank", "path", "distance")
MAP_HEADER = ("path", "cluster", "x", "y")


@dataclass
class Cluster:
    """One cluster as the report shows it.

    Attributes
    ----------
    label : int
    folder : str
        Its folder in the output folder (``cluster_07``).
    paths : list of str
        All members, closest to the centre first.
    distances : numpy.ndarray
        Their distances to the centre, in the same order.
    ranks : numpy.ndarray
        Which members the montage shows (indices into ``paths``).
    silhouette : float or None
        Mean silhouette of the members; ``None`` when unknown.
    order : numpy.ndarray or None
        The members' rows in ``labels.csv``, in the order of ``paths``.
    name : str or None
        Its name (given by a rename; ``None``: its folder's name).
    flags : list of str
        The doubts it raises (names of :data:`featclust.flags.FLAGS`).
    reasons : dict of str to str
        Each flag's reason, in words with the figures.
    """

    label: int
    folder: str
    paths: list
    distances: np.ndarray
    ranks: np.ndarray
    silhouette: float | None = None
    order: np.ndarray | None = None
    name: str | None = None
    flags: list = field(default_factory=list)
    reasons: dict = field(default_factory=dict)

    @property
    def title(self) -> str:
        """``Cluster 3``, or ``Cluster 3 (rings)`` for a cluster renamed ``rings``."""
        named = self.name and self.name != self.folder
        return f"Cluster {self.label}" + (f" ({self.name})" if named else "")

    @property
    def shown(self) -> list[str]:
        """The members the montage shows, in montage order."""
        return [self.paths[i] for i in self.ranks]


def _summary_row(c, n_images):
    size = len(c.paths)
    return [
        c.label,
        c.folder,
        size,
        f"{size / max(n_images, 1):.4f}",
        fmt_num(float(c.distances.mean()), 4) if size else "",
        fmt_num(float(c.distances.max()), 4) if size else "",
        "" if c.silhouette is None else f"{c.silhouette:.3f}",
        ";".join(c.flags),
    ]


def summary_csv(clusters: list[Cluster], n_images: int) -> str:
    """The text of ``summary.csv``: size, share, distances and silhouette of every cluster."""
    return csv_text(SUMMARY_HEADER, [_summary_row(c, n_images) for c in clusters])


def members_csv(cluster: Cluster) -> str:
    """The text of ``montages/<folder>.csv``: the montage's images, in its order."""
    return csv_text(
        MEMBERS_HEADER,
        [
            [slot, int(rank), cluster.paths[rank], fmt_num(float(cluster.distances[rank]))]
            for slot, rank in enumerate(cluster.ranks)
        ],
    )


def map_csv(paths: Sequence[str], labels: np.ndarray, xy: np.ndarray) -> str:
    """The text of ``map.csv``: every image's cluster and map coordinates."""
    return csv_text(
        MAP_HEADER,
        [
            [p, int(c), fmt_num(float(x), 5), fmt_num(float(y), 5)]
            for p, c, (x, y) in zip(paths, labels, xy)
        ],
    )


_SCORE_NAMES = (
    ("silhouette", "silhouette (-1 to 1, higher is better)"),
    ("davies_bouldin", "Davies-Bouldin (lower is better)"),
    ("calinski_harabasz", "Calinski-Harabasz (higher is better)"),
    ("stability", "stability, mean ARI of repeated runs (higher is better)"),
    ("inertia", "inertia"),
)


def _clustering_words(params, n_clusters):
    """How the images were clustered, in words (escaped)."""
    method = params.get("method", "kmeans")
    name = {"kmeans": "k-means", "ward": "Ward agglomerative clustering"}.get(method)
    steps = []
    if params.get("normalize") is True:
        steps.append("each feature vector scaled to unit length")
    pca, comps = params.get("pca"), params.get("pca_components")
    if isinstance(comps, numbers.Integral) and not isinstance(comps, bool):
        steps.append(f"reduced to {number(comps)} dimensions by PCA")
    elif pca not in (None, False):
        steps.append(f"reduced by PCA ({esc(pca)})")
    if params.get("whiten") is True:
        steps.append("whitened")
    how = f"{esc(name or method)} into {plural(n_clusters, 'cluster')}"
    how += ", on the features " + " and ".join(steps) if steps else ", on the features as they are"
    seed = params.get("random_state", params.get("seed"))
    if seed is not None:
        how += f" (random state {esc(seed)})"
    return how


def _features_words(emb):
    """Which features, in words (escaped)."""
    weights = emb.get("weights")
    if weights == "none":
        w = "random weights (not pretrained)"
    elif weights == "imagenet":
        w = "ImageNet weights"
    elif weights is None:
        w = "unrecorded weights"
    else:
        w = f"weights from {esc(weights)}"
    layer = emb.get("layer")
    pooling = {"avg": "average", "max": "max", "gem": "GeM", "flatten": "no pooling (flattened)"}
    pool = emb.get("pooling")
    h = f"VGG16 with {w}"
    if layer:
        h += f", output of {esc(layer)}"
    if pool:
        p = pooling.get(pool) if isinstance(pool, str) else None
        h += f", {esc(p)}" if pool == "flatten" else f", {esc(p or pool)} pooling"
    if emb.get("grid") in (2, 4):
        h += f", over the whole map and its {'2x2' if emb['grid'] == 2 else '2x2 and 4x4'} cells"
        if isinstance(emb.get("grid_weight"), (int, float)):
            h += f" (cells weighted {emb['grid_weight']:g})"
    if emb.get("tta") is True:
        h += ", averaged over 8 flips and rotations"
    return h


def _facts(record, n_clusters, n_images):
    """The ``<dl>`` at the top: the images, the clustering, the features and the scores."""
    e = esc
    counts, emb = _dict(record.counts), _dict(record.embedder)
    params, scores = _dict(record.clustering), _dict(record.scores)
    bad = counts.get("bad_files")
    skipped = f", {number(bad)} skipped" if bad else ""
    h = [
        "<dl>",
        f"<dt>images</dt><dd>{e(record.image_dir or '')} ({plural(n_images, 'image')}"
        f"{skipped})</dd>",
        f"<dt>clustering</dt><dd>{_clustering_words(params, n_clusters)}</dd>",
        f"<dt>features</dt><dd>{_features_words(emb)}</dd>",
    ]
    for key, label in _SCORE_NAMES:
        if key in scores:
            h.append(f"<dt>{e(label)}</dt><dd>{number(scores[key])}</dd>")
    unstable = unstable_clustering(scores, MIN_STABILITY)
    if unstable:
        h.append(f'<dt>doubt</dt><dd><span class="flag">{e(unstable)}</span></dd>')
    truth = _dict(record.truth)
    if truth:
        h.append(
            f"<dt>agreement with known classes</dt><dd>adjusted Rand index "
            f"{number(truth.get('ari'))}, NMI {number(truth.get('nmi'))} "
            f'(<a href="../truth.csv">table</a>)</dd>'
        )
    kscan = _dict(record.kscan)
    if kscan.get("suggested_k") is not None:
        h.append(
            f"<dt>k-scan suggestion</dt><dd>k = {e(kscan['suggested_k'])}: "
            f"{e(kscan.get('reason', ''))}</dd>"
        )
    h += [f"<dt>sorted</dt><dd>{e(record.created or '')}</dd>", "</dl>"]
    return h


def _dict(value):
    return value if isinstance(value, dict) else {}


def _parent(record):
    """``(out_dir, cluster)`` of the sort this one refines, or ``None``."""
    parent = getattr(record, "parent", None)
    if not isinstance(parent, dict):
        return None
    out_dir, cluster = parent.get("out_dir"), parent.get("cluster")
    if not isinstance(out_dir, str) or not out_dir:
        return None
    return out_dir, cluster if isinstance(cluster, str) else None


def _parent_note(record, out_dir):
    """The paragraph saying which cluster of which sort this one refines."""
    found = _parent(record)
    if found is None:
        return []
    parent_dir, cluster = found
    page = os.path.join(parent_dir, REPORT_DIR, "index.html")
    link = rel_link(page, os.path.join(os.path.abspath(out_dir), REPORT_DIR))
    what = f"cluster {esc(cluster)}" if cluster else "a cluster"
    anchor = f"#{quote(cluster)}" if cluster else ""
    gone = "" if os.path.isfile(page) else " (that report is no longer there)"
    return [
        f'<p class="parent">This sort refines {what} of an earlier sort: '
        f'<a href="{link}{escape(anchor)}">its report</a>{gone}.</p>'
    ]


def split_command(out_dir: str, cluster: int) -> str:
    """The command that splits ``cluster``, ready to paste: ``featclust split OUT_DIR N``.

    ``out_dir`` as the user gave it, quoted for the shell where needed.
    """
    return f"featclust split {shlex.quote(str(out_dir))} {int(cluster)}"


def flag_word(flag: str) -> str:
    """How a flag reads on the page: ``low silhouette``."""
    return flag.replace("_", " ")


def _flags_cell(c):
    return ", ".join(
        f'<span title="{esc(c.reasons.get(f, ""))}">{esc(flag_word(f))}</span>' for f in c.flags
    )


def _cluster_table(clusters, n_images):
    colors = cluster_colors(len(clusters))
    h = [
        '<table><tr><th class="l">cluster</th><th>size</th><th>share</th>'
        "<th>mean distance</th><th>max distance</th><th>silhouette</th>"
        '<th class="l">flags</th><th class="l">folder</th></tr>'
    ]
    for c in clusters:
        label, folder, size, share, mean_d, max_d, sil, _ = _summary_row(c, n_images)
        r, g, b = colors[c.label]
        h.append(
            f'<tr><td class="l"><span class="swatch" style="background:rgb({r},{g},{b})">'
            f'</span> <a href="#{esc(folder)}">{esc(c.title.removeprefix("Cluster "))}</a></td>'
            f"<td>{number(size)}</td><td>{esc(f'{float(share):.1%}')}</td>"
            f"<td>{esc(mean_d)}</td><td>{esc(max_d)}</td>"
            f'<td>{esc(sil or "n/a")}</td><td class="l flag">{_flags_cell(c)}</td>'
            f'<td class="l"><a href="{url("..", folder)}/">{esc(folder)}/</a></td></tr>'
        )
    h.append("</table>")
    return h


def index_html(
    record: Any,
    clusters: list[Cluster],
    n_images: int,
    method: str | None,
    has_kscan: bool,
    warnings: list[str],
    out_dir: str | os.PathLike | None = None,
    map_note: str | None = None,
    galleries: bool = False,
    split_dir: str | None = None,
) -> str:
    """The text of ``index.html``.

    Parameters
    ----------
    record : featclust.output.RunRecord
        The sorted folder's record (``featclust.json``).
    clusters : list of Cluster
    n_images : int
    method : {"tsne", "pca"} or None
        How the map was made; ``None``: no map.
    has_kscan : bool
        Whether ``kscan.png`` is beside the page.
    warnings : list of str
        Shown at the top, one paragraph each.
    out_dir : path-like, optional
        The sorted folder, for the relative link to the parent sort's report
        (``record.parent``); without it the link is left out.
    map_note : str, optional
        Why the map is not the t-SNE map, or left out; shown in the map's place.
    galleries : bool
        Whether each cluster has a gallery page (:func:`gallery_html`).
    split_dir : str, optional
        The output folder as the user named it: a flagged cluster shows the
        command that splits it (:func:`split_command`); ``None``: no command.

    Returns
    -------
    str
    """
    e = esc
    name = os.path.basename(str(record.image_dir or "").rstrip("/"))
    counts = _dict(record.counts)
    h = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>featclust report: {e(name)}</title>",
        f"<style>{STYLE}</style>",
        "</head><body>",
        f"<h1>featclust report: {e(name)}</h1>",
    ]
    if random_weights(record):
        h.append(f'<p class="random">{e(RANDOM_WEIGHTS)}</p>')
    if out_dir is not None:
        h += _parent_note(record, out_dir)
    h += _facts(record, len(clusters), n_images)
    if isinstance(counts, dict) and counts.get("bad_files"):
        h.append('<p><a href="../bad_files.csv">skipped files and why</a></p>')
    for w in warnings:
        h.append(f'<p class="warn">{e(w)}</p>')
    h += [
        "<h2>Overview</h2>",
        "<p>The most central images of each cluster, one row per cluster.</p>",
        '<img src="overview.png" alt="overview of the clusters">',
    ]
    if method or map_note:
        h.append("<h2>Map</h2>")
    if map_note:
        h.append(f'<p class="warn">{e(map_note)}</p>')
    if method:
        how = (
            "t-SNE (openTSNE) after PCA to 50 dimensions"
            if method == "tsne"
            else "PCA to 2 dimensions"
        )
        h += [
            f"<p>Every image as a point: {e(how)}, coloured by cluster "
            '(<a href="map.csv">coordinates</a>); images close together have similar '
            "features. The second map shows a thumbnail wherever there is room.</p>",
            '<div class="maps">',
            '<figure><img src="map.png" alt="2-D map coloured by cluster"></figure>',
            '<figure><img src="map_thumbnails.png" alt="2-D map with thumbnails"></figure>',
            "</div>",
        ]
    if has_kscan:
        h += ["<h2>Choosing k</h2>", '<img src="kscan.png" alt="k-scan scores">']
    h += [
        "<h2>Clusters</h2>",
        "<p>Distances are to the cluster centre, in the space k-means ran in; the "
        "silhouette of a cluster is the mean over its members (-1 to 1, higher is better) "
        '(<a href="summary.csv">this table as CSV</a>, <a href="../labels.csv">every '
        "image</a>). A cluster worth a look is flagged:</p>",
        "<ul>"
        + "".join(f"<li><em>{e(flag_word(f))}</em>: {e(w)}</li>" for f, w in flag_rules().items())
        + "</ul>",
    ]
    h += _cluster_table(clusters, n_images)
    for c in clusters:
        png = url("montages", c.folder + ".png")
        members = url("montages", c.folder + ".csv")
        h += [
            f'<h3 id="{e(c.folder)}">{e(c.title)}: {plural(len(c.paths), "image")}</h3>',
            f'<p><a href="{url("..", c.folder)}/">open the folder</a> · '
            + (
                f'<a href="{url(GALLERY_DIR, c.folder + ".html")}">every image, with '
                "names and distances</a> · "
                if galleries
                else ""
            )
            + f'<a href="{members}">the images shown, in order</a></p>',
        ]
        if c.flags:
            h.append('<div class="doubt"><ul>')
            h += [
                f'<li><span class="flag">{e(flag_word(f))}</span>: {e(c.reasons.get(f, ""))}</li>'
                for f in c.flags
            ]
            h.append("</ul>")
            if split_dir is not None and len(c.paths) >= 2:
                h.append(f"<p>To split it: <code>{e(split_command(split_dir, c.label))}</code></p>")
            h.append("</div>")
        h.append(f'<img src="{png}" alt="montage of cluster {number(c.label)}">')
    h += ["</body></html>", ""]
    return "\n".join(h)
