"""The encoder of an index of vector items (``encoder.model: none``): there is no text model. Items bring their
vectors (``vectors``: frames; or ``vector``) and queries theirs (``SearchRequest.vector``), all of the index's
``encoder.dimension``; BM25 still searches the items' titles and texts. Asking this encoder to encode text is a
caller's mistake, answered with a 422 that says what to send instead.

Example::

    >>> from foveal.config import EncoderConfig
    >>> VectorItemsEncoder(EncoderConfig(model="none", dimension=512)).dimension
    512
"""

from __future__ import annotations

from typing import Sequence

from foveal.config import EncoderConfig
from foveal.errors import InvalidInputError


class VectorItemsEncoder:
    name = "none"
    max_seq_length = None

    def __init__(self, config: EncoderConfig) -> None:
        self.config = config
        self.dimension = int(config.dimension)

    def _refuse(self, what: str):
        raise InvalidInputError(f"this index has no text encoder (encoder.model 'none'): {what}")

    def encode_queries(self, texts: Sequence[str], with_tokens: bool = False):
        self._refuse("give the query as 'vector', or search with pipeline 'bm25'")

    def encode_documents(self, texts: Sequence[str]):
        self._refuse("each item brings 'vectors' (its frames) or 'vector'")
