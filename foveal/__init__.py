"""foveal: a hybrid (BM25 + dense) search service with attention-based research stages.

The public surface::

    from foveal import Engine, SearchRequest, IndexConfig, Document
"""

__version__ = "0.1.0"

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
