"""foveal: a hybrid (BM25 + dense) search service with attention-based research stages.

The public surface::

    from foveal import Engine, SearchRequest, IndexConfig, Document
"""

__version__ = "0.1.0"

import os as _os

# OpenMP threads (torch's, FAISS's) sleep as soon as a parallel region ends instead of spinning for a while. A search
# alternates short torch and FAISS regions with Python work: spinning threads of one library held the cores the
# next one needed. One query's encode + FAISS search on 100k vectors: 20 + 22 ms spinning, 14 + 17 ms passive
# (docs/performance.md). Set before torch or FAISS load their OpenMP runtime; an operator's own value wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from foveal.config import IndexConfig, Pipeline  # noqa: E402
from foveal.documents import Document, parse_document  # noqa: E402
from foveal.errors import FovealError  # noqa: E402


def __getattr__(name):  # heavy imports (torch, faiss) only when used
    if name == "Engine":
        from foveal.engine import Engine

        return Engine
    if name in ("SearchRequest", "SearchResponse", "Hit"):
        from foveal.pipeline import request

        return getattr(request, name)
    raise AttributeError(name)


__all__ = [
    "Document",
    "Engine",
    "FovealError",
    "Hit",
    "IndexConfig",
    "Pipeline",
    "SearchRequest",
    "SearchResponse",
    "parse_document",
    "__version__",
]
