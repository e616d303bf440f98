"""MaxP, one round: documents by their best passage, as the per-passage loop it replaced computed them."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings, strategies as st

from foveal.index.base import doc_key_of, passage_id, passage_ordinal
from foveal.pipeline.search import _max_passage


def reference(scores_row, ids_row):
    """The loop ``SearchPipeline._dense`` ran before: first seen wins among equal scores."""
    best, passage, valid, last = {}, {}, 0, None
    for score, pid in zip(np.asarray(scores_row).tolist(), np.asarray(ids_row).tolist()):
        if pid < 0:
            continue
        valid += 1
        last = score
        key = doc_key_of(pid)
        if key not in best or score > best[key]:
            best[key] = score
            passage[key] = passage_ordinal(pid)
    return sorted(best.items(), key=lambda kv: (-kv[1], kv[0])), passage, valid, last


hits = st.lists(st.tuples(st.integers(0, 30), st.integers(0, 5), st.sampled_from([0.9, 0.5, 0.5, 0.25, 0.1, -0.3])),
                max_size=60)


@settings(max_examples=300, deadline=None)
@given(hits, st.integers(0, 5), st.booleans())
def test_documents_by_their_best_passage_as_the_loop_gave_them(found, missing, best_first):
    """Ties (several passages of one document at its best score, documents tied with each other), ids of -1 where
    the index had no more hits, rows best first (FAISS) or in any order: the same documents, order, passages,
    count and last score."""
    if best_first:
        found = sorted(found, key=lambda t: -t[2])
    ids = np.array([passage_id(k, o) for k, o, _ in found] + [-1] * missing, dtype=np.int64)
    scores = np.array([s for _, _, s in found] + [0.0] * missing, dtype=np.float32)
    got = _max_passage(scores, ids)
    want = reference(scores, ids)
    assert got == want
    assert all(isinstance(k, int) and isinstance(s, float) for k, s in got[0])


def test_a_round_without_hits():
    assert _max_passage(np.full(4, 0.0, np.float32), np.full(4, -1, np.int64)) == ([], {}, 0, None)
