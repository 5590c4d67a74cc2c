"""The report's text: ``index.html``, the cluster galleries, the duplicates page, the CSV tables.

Every value put into the page is escaped; every link is relative, so the
page opens from disk and loads nothing from elsewhere. Numbers are written
with :func:`featclust.fileio.fmt_num` (fixed-point shares and silhouettes
aside); ``n/a`` where a value is undefined.
"""

from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass
from html import escape
from urllib.parse import quote

import numpy as np

from ..fileio import csv_text, fmt_num
from .render import cluster_colors

REPORT_DIR = "report"
#: The cluster galleries, below the report folder.
GALLERY_DIR = "clusters"

SUMMARY_HEADER = ("cluster", "folder", "size", "share", "mean_distance", "max_distance",
                  "silhouette")
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
    """

    label: int
    folder: str
    paths: list
    distances: np.ndarray
    ranks: np.ndarray
    silhouette: float | None = None
    order: np.ndarray | None = None

    @property
    def shown(self):
        """The members the montage shows, in montage order."""
        return [self.paths[i] for i in self.ranks]


def _summary_row(c, n_images):
    size = len(c.paths)
    return [c.label, c.folder, size, f"{size / max(n_images, 1):.4f}",
            fmt_num(float(c.distances.mean()), 4) if size else "",
            fmt_num(float(c.distances.max()), 4) if size else "",
            "" if c.silhouette is None else f"{c.silhouette:.3f}"]


def summary_csv(clusters, n_images):
    """The text of ``summary.csv``: size, share, distances and silhouette of every cluster."""
    return csv_text(SUMMARY_HEADER, [_summary_row(c, n_images) for c in clusters])


def members_csv(cluster):
    """The text of ``montages/<folder>.csv``: the montage's images, in its order."""
    return csv_text(MEMBERS_HEADER, [
        [slot, int(rank), cluster.paths[rank], fmt_num(float(cluster.distances[rank]))]
        for slot, rank in enumerate(cluster.ranks)])


def map_csv(paths, labels, xy):
    """The text of ``map.csv``: every image's cluster and map coordinates."""
    return csv_text(MAP_HEADER, [[p, int(c), fmt_num(float(x), 5), fmt_num(float(y), 5)]
                                 for p, c, (x, y) in zip(paths, labels, xy)])


def _href(*parts):
    # A name that is not UTF-8 (held as surrogates) links to its own bytes.
    return escape("/".join(quote(p, errors="surrogateescape") for p in parts))


def _num(value, digits=3):
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


def _text(value):
    return escape(str(value))


_SCORE_NAMES = (("silhouette", "silhouette (-1 to 1, higher is better)"),
                ("davies_bouldin", "Davies-Bouldin (lower is better)"),
                ("calinski_harabasz", "Calinski-Harabasz (higher is better)"),
                ("stability", "stability, mean ARI of repeated runs (higher is better)"),
                ("inertia", "inertia"))

_STYLE = (
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
    ".random{background:#fde2e1;border:1px solid #d9534f;padding:.5em 1em;font-weight:bold}"
    ".grid{display:flex;flex-wrap:wrap;gap:.6em}.grid figure{width:150px;margin:0;"
    "font-size:.8em;overflow-wrap:anywhere}.grid img{width:150px;height:150px;"
    "object-fit:contain;background:#fafafa}.grid figure.out{outline:2px solid #d9534f}"
    ".dup{display:flex;flex-wrap:wrap;gap:.6em;border-top:1px solid #ccc;padding:.5em 0}"
    ".dup figure{width:200px;margin:0;font-size:.8em;overflow-wrap:anywhere}"
    ".dup img{width:200px;height:200px;object-fit:contain;background:#fafafa}")

_RANDOM_WEIGHTS = ("These features come from VGG16 with random weights (weights \"none\"), not a "
                   "pretrained network: the clusters show what random filters respond to and "
                   "say little about what the images show. Use it to try featclust out, not "
                   "to judge your images.")


def _plural(n, word):
    return f"{_num(n)} {word}{'' if n == 1 else 's'}"


def _clustering_words(params, n_clusters):
    """How the images were clustered, in words (escaped)."""
    method = params.get("method", "kmeans")
    name = {"kmeans": "k-means", "ward": "Ward agglomerative clustering"}.get(method)
    steps = []
    if params.get("normalize") is True:
        steps.append("each feature vector scaled to unit length")
    pca, comps = params.get("pca"), params.get("pca_components")
    if isinstance(comps, numbers.Integral) and not isinstance(comps, bool):
        steps.append(f"reduced to {_num(comps)} dimensions by PCA")
    elif pca not in (None, False):
        steps.append(f"reduced by PCA ({_text(pca)})")
    if params.get("whiten") is True:
        steps.append("whitened")
    how = f"{_text(name or method)} into {_plural(n_clusters, 'cluster')}"
    how += (", on the features " + " and ".join(steps) if steps
            else ", on the features as they are")
    seed = params.get("random_state", params.get("seed"))
    if seed is not None:
        how += f" (random state {_text(seed)})"
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
        w = f"weights from {_text(weights)}"
    layer = emb.get("layer")
    pooling = {"avg": "average", "max": "max", "gem": "GeM", "flatten": "no pooling (flattened)"}
    pool = emb.get("pooling")
    h = f"VGG16 with {w}"
    if layer:
        h += f", output of {_text(layer)}"
    if pool:
        p = pooling.get(pool) if isinstance(pool, str) else None
        h += f", {_text(p)}" if pool == "flatten" else f", {_text(p or pool)} pooling"
    if emb.get("grid") in (2, 4):
        h += f", over the whole map and its {'2x2' if emb['grid'] == 2 else '2x2 and 4x4'} cells"
    if emb.get("tta") is True:
        h += ", averaged over 8 flips and rotations"
    return h


def _random_weights(record):
    return isinstance(record.embedder, dict) and record.embedder.get("weights") == "none"


def _facts(record, n_clusters, n_images):
    """The ``<dl>`` at the top: the images, the clustering, the features and the scores."""
    e = _text
    counts, emb = _dict(record.counts), _dict(record.embedder)
    params, scores = _dict(record.clustering), _dict(record.scores)
    bad = counts.get("bad_files")
    skipped = f", {_num(bad)} skipped" if bad else ""
    h = ["<dl>",
         f"<dt>images</dt><dd>{e(record.image_dir or '')} ({_plural(n_images, 'image')}"
         f"{skipped})</dd>",
         f"<dt>clustering</dt><dd>{_clustering_words(params, n_clusters)}</dd>",
         f"<dt>features</dt><dd>{_features_words(emb)}</dd>"]
    for key, label in _SCORE_NAMES:
        if key in scores:
            h.append(f"<dt>{e(label)}</dt><dd>{_num(scores[key])}</dd>")
    truth = _dict(record.truth)
    if truth:
        h.append(f"<dt>agreement with known classes</dt><dd>adjusted Rand index "
                 f"{_num(truth.get('ari'))}, NMI {_num(truth.get('nmi'))} "
                 f'(<a href="../truth.csv">table</a>)</dd>')
    kscan = _dict(record.kscan)
    if kscan.get("suggested_k") is not None:
        h.append(f"<dt>k-scan suggestion</dt><dd>k = {e(kscan['suggested_k'])}: "
                 f"{e(kscan.get('reason', ''))}</dd>")
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


def _rel_link(target, start):
    """A relative link from folder ``start`` to path ``target`` (a file URI across drives)."""
    try:
        rel = os.path.relpath(target, start)
    except ValueError:
        from pathlib import Path

        return escape(Path(target).as_uri())
    return _href(*rel.replace(os.sep, "/").split("/"))


def _parent_note(record, out_dir):
    """The paragraph saying which cluster of which sort this one refines."""
    found = _parent(record)
    if found is None:
        return []
    parent_dir, cluster = found
    page = os.path.join(parent_dir, REPORT_DIR, "index.html")
    link = _rel_link(page, os.path.join(os.path.abspath(out_dir), REPORT_DIR))
    what = f"cluster {_text(cluster)}" if cluster else "a cluster"
    anchor = f"#{quote(cluster)}" if cluster else ""
    gone = "" if os.path.isfile(page) else " (that report is no longer there)"
    return [f'<p class="parent">This sort refines {what} of an earlier sort: '
            f'<a href="{link}{escape(anchor)}">its report</a>{gone}.</p>']


def _labels_in(value):
    return {v for v in value if isinstance(v, int)} if isinstance(value, list) else set()


def _cluster_table(clusters, n_images, flags):
    tiny, loose = _labels_in(flags.get("tiny")), _labels_in(flags.get("loose"))
    colors = cluster_colors(len(clusters))
    h = ['<table><tr><th class="l">cluster</th><th>size</th><th>share</th>'
         "<th>mean distance</th><th>max distance</th><th>silhouette</th>"
         '<th class="l">flags</th><th class="l">folder</th></tr>']
    for c in clusters:
        label, folder, size, share, mean_d, max_d, sil = _summary_row(c, n_images)
        r, g, b = colors[c.label]
        flag = " ".join(f for f, on in (("tiny", c.label in tiny), ("loose", c.label in loose))
                        if on)
        h.append(f'<tr><td class="l"><span class="swatch" style="background:rgb({r},{g},{b})">'
                 f'</span> <a href="#{_text(folder)}">{_num(label)}</a></td>'
                 f"<td>{_num(size)}</td><td>{_text(f'{float(share):.1%}')}</td>"
                 f"<td>{_text(mean_d)}</td><td>{_text(max_d)}</td>"
                 f'<td>{_text(sil or "n/a")}</td><td class="l flag">{_text(flag)}</td>'
                 f'<td class="l"><a href="{_href("..", folder)}/">{_text(folder)}/</a></td></tr>')
    h.append("</table>")
    return h


def index_html(record, clusters, n_images, method, has_kscan, warnings, out_dir=None,
               map_note=None, galleries=False):
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

    Returns
    -------
    str
    """
    e = _text
    name = os.path.basename(str(record.image_dir or "").rstrip("/"))
    counts = _dict(record.counts)
    h = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
         '<meta name="viewport" content="width=device-width, initial-scale=1">',
         f"<title>featclust report: {e(name)}</title>", f"<style>{_STYLE}</style>",
         "</head><body>", f"<h1>featclust report: {e(name)}</h1>"]
    if _random_weights(record):
        h.append(f'<p class="random">{e(_RANDOM_WEIGHTS)}</p>')
    if out_dir is not None:
        h += _parent_note(record, out_dir)
    h += _facts(record, len(clusters), n_images)
    if isinstance(counts, dict) and counts.get("bad_files"):
        h.append('<p><a href="../bad_files.csv">skipped files and why</a></p>')
    for w in warnings:
        h.append(f'<p class="warn">{e(w)}</p>')
    h += ["<h2>Overview</h2>",
          "<p>The most central images of each cluster, one row per cluster.</p>",
          '<img src="overview.png" alt="overview of the clusters">']
    if method or map_note:
        h.append("<h2>Map</h2>")
    if map_note:
        h.append(f'<p class="warn">{e(map_note)}</p>')
    if method:
        how = ("t-SNE (openTSNE) after PCA to 50 dimensions" if method == "tsne"
               else "PCA to 2 dimensions")
        h += [f"<p>Every image as a point: {e(how)}, coloured by cluster "
              '(<a href="map.csv">coordinates</a>); images close together have similar '
              "features. The second map shows a thumbnail wherever there is room.</p>",
              '<div class="maps">',
              '<figure><img src="map.png" alt="2-D map coloured by cluster"></figure>',
              '<figure><img src="map_thumbnails.png" alt="2-D map with thumbnails"></figure>',
              "</div>"]
    if has_kscan:
        h += ["<h2>Choosing k</h2>", '<img src="kscan.png" alt="k-scan scores">']
    h += ["<h2>Clusters</h2>",
          "<p>Distances are to the cluster centre, in the space k-means ran in; the "
          "silhouette of a cluster is the mean over its members (-1 to 1, higher is better). "
          "<em>tiny</em>: far fewer members than the average cluster; <em>loose</em>: members "
          "far from the centre compared with the other clusters "
          '(<a href="summary.csv">this table as CSV</a>, <a href="../labels.csv">every '
          "image</a>).</p>"]
    h += _cluster_table(clusters, n_images, _dict(record.flags))
    for c in clusters:
        png = _href("montages", c.folder + ".png")
        members = _href("montages", c.folder + ".csv")
        h += [f'<h3 id="{e(c.folder)}">Cluster {_num(c.label)}: {_num(len(c.paths))} images</h3>',
              f'<p><a href="{_href("..", c.folder)}/">open the folder</a> · '
              + (f'<a href="{_href(GALLERY_DIR, c.folder + ".html")}">every image, with '
                 "names and distances</a> · " if galleries else "")
              + f'<a href="{members}">the images shown, in order</a></p>',
              f'<img src="{png}" alt="montage of cluster {_num(c.label)}">']
    h += ["</body></html>", ""]
    return "\n".join(h)
