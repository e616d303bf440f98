"""The BM25 list's cut: ties at it are settled by doc_key whatever the index's own order, and a short tie run
costs one fetch, not two (``SearchPipeline._lexical``, ``LEXICAL_SLACK``)."""

from types import SimpleNamespace

import pytest

from foveal.pipeline import search as search_module
from foveal.pipeline.search import SearchPipeline


class ScriptedLexical:
    """A lexical index over fixed (doc_key, score) pairs that hands back its best ``limit`` in an order of its own
    (equal scores by descending key, as an index's internal order may be), and records each ``limit`` asked."""

    def __init__(self, scored: list[tuple[int, float]]) -> None:
        self.scored = sorted(scored, key=lambda kv: (-kv[1], -kv[0]))
        self.limits: list[int] = []

    def search(self, query, limit, allowed=None, **kwargs):
        self.limits.append(limit)
        return list(self.scored[:limit])


def _lexical(index: ScriptedLexical, depth: int) -> list[tuple[int, float]]:
    owner = SimpleNamespace(collection=SimpleNamespace(lexical=index))
    return SearchPipeline._lexical(owner, "q", depth, None)


def _corpus(depth: int, tied: int) -> list[tuple[int, float]]:
    """``depth - 3`` documents above the cut, then ``tied + 3`` documents sharing one score across it, then a
    long tail below."""
    above = [(1000 + i, 200.0 - i) for i in range(depth - 3)]
    tie = [(500 + i, 10.0) for i in range(tied + 3)]
    below = [(i, 5.0 - i / 1000) for i in range(400)]
    return above + tie + below


@pytest.mark.parametrize("tied", [1, 7, search_module.LEXICAL_SLACK - 1])
def test_a_short_tie_run_at_the_cut_costs_one_fetch(tied):
    index = ScriptedLexical(_corpus(100, tied))
    found = _lexical(index, 100)
    assert index.limits == [100 + search_module.LEXICAL_SLACK]
    # the three tied places go to the smallest keys of the tie, not to the index's first three
    assert found[-3:] == [(500, 10.0), (501, 10.0), (502, 10.0)]
    assert len(found) == 100


def test_a_long_tie_run_is_fetched_until_it_ends():
    tied = 3 * search_module.LEXICAL_SLACK
    index = ScriptedLexical(_corpus(100, tied))
    found = _lexical(index, 100)
    assert len(index.limits) == 2 and index.limits[1] == 4 * index.limits[0]
    assert found[-3:] == [(500, 10.0), (501, 10.0), (502, 10.0)]
    assert [k for k, _ in found] == [k for k, _ in sorted(_corpus(100, tied), key=lambda kv: (-kv[1], kv[0]))[:100]]


def test_no_tie_and_a_short_list():
    assert _lexical(ScriptedLexical([(3, 2.0), (1, 2.0), (2, 1.0)]), 100) == [(1, 2.0), (3, 2.0), (2, 1.0)]
    index = ScriptedLexical([(k, 100.0 - k) for k in range(300)])
    assert _lexical(index, 10) == [(k, 100.0 - k) for k in range(10)]
    assert len(index.limits) == 1
