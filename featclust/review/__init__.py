"""``featclust review``: a local page to look through a sorted folder and correct it.

* :mod:`~featclust.review.server`: :class:`ReviewServer`, the HTTP server
  (standard library) and every check a request must pass (token, Host,
  cross-site, paths under the output folder); one review of a folder at a time.
* :mod:`~featclust.review.api`: :class:`Review`, the JSON views of the folder
  (clusters, flags, doubt scores, the map) and the edits, made through
  :func:`featclust.open_sorted`'s library.
* :mod:`~featclust.review.thumbs`: the thumbnail cache, made once, lazily.
* ``static/``: the page (HTML, JavaScript, CSS), nothing loaded from elsewhere.
"""

from .api import Review
from .server import LOOPBACK, ReviewServer, is_loopback
from .thumbs import REVIEW_DIR, ThumbnailCache

__all__ = ["Review", "ReviewServer", "ThumbnailCache", "is_loopback", "LOOPBACK", "REVIEW_DIR"]
