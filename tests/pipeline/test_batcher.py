"""The query micro-batcher: correct results, filter groups, and a wait bound that holds by construction."""

import threading
import time

import numpy as np
import pytest

from foveal.config import FusionConfig, RocchioConfig
from foveal.pipeline.batcher import MicroBatcher
from foveal.pipeline.request import SearchRequest
from foveal.pipeline.search import SearchPipeline


def test_lone_caller_never_waits():
    waits = []

    class Clock:
        def __call__(self):
            return 0.0

    batcher = MicroBatcher(lambda items: [i * 2 for i in items], max_batch=8, max_wait_s=5.0, clock=Clock())
    original = batcher._cond.wait
    batcher._cond.wait = lambda timeout=None: waits.append(timeout) or original(0)
    with batcher.active():
        assert batcher.submit(21) == 42
    assert waits == []  # nobody else active: closed at once, without waiting


def test_leader_waits_at_most_the_bound_by_construction():
    """The leader's only wait is Condition.wait(deadline - now) with deadline = open + max_wait_s: with a clock
    that advances by each wait, the waits it asks for add up to max_wait_s exactly, never more."""
    now = [100.0]
    waits = []
    batcher = MicroBatcher(lambda items: list(items), max_batch=8, max_wait_s=0.004, clock=lambda: now[0])

    def fake_wait(timeout=None):
        waits.append(timeout)
        now[0] += min(timeout, 0.001)  # time passes (1 ms at most per wake-up); nobody joins
        return False

    batcher._cond.wait = fake_wait
    with batcher.active(), batcher.active():  # a second caller is active but never submits
        assert batcher.submit("x") == "x"
    assert len(waits) == 4 and all(0 < w <= 0.004 + 1e-9 for w in waits)
    assert now[0] <= 100.0 + 0.004 + 1e-12


def test_full_batch_closes_and_every_caller_gets_its_own_result():
    calls = []
    release = threading.Event()

    def run(items):
        calls.append(list(items))
        return [f"r{i}" for i in items]

    batcher = MicroBatcher(run, max_batch=4, max_wait_s=3600.0)  # only a full batch can close it
    results = {}

    def caller(i):
        with batcher.active():
            release.wait()
            results[i] = batcher.submit(i)

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    release.set()
    for t in threads:
        t.join(60)
    assert results == {i: f"r{i}" for i in range(4)}
    assert sorted(i for call in calls for i in call) == [0, 1, 2, 3]
    assert all(len(call) <= 4 for call in calls)


def test_arrivals_during_a_running_batch_form_the_next_batch():
    """While one batch runs (holding the encoder), everyone arriving joins one next batch, not one batch each."""
    calls = []
    first_running, release = threading.Event(), threading.Event()

    def run(items):
        calls.append(list(items))
        if items == ["first"]:
            first_running.set()
            release.wait(30)
        return items

    batcher = MicroBatcher(run, max_batch=32, max_wait_s=0.0)
    threads = [threading.Thread(target=lambda: (batcher.active().__enter__(), batcher.submit("first")))]
    threads[0].start()
    first_running.wait(30)
    later = [threading.Thread(target=batcher.submit, args=(f"q{i}",)) for i in range(5)]
    for t in later:
        t.start()
    for _ in range(3000):
        if batcher._open is not None and len(batcher._open.items) == 5:
            break
        threading.Event().wait(0.01)
    release.set()
    for t in threads + later:
        t.join(30)
    assert calls[0] == ["first"] and sorted(calls[1]) == [f"q{i}" for i in range(5)] and len(calls) == 2


def test_a_batch_that_fills_while_another_runs_waits_its_turn():
    """One batch runs at a time, oldest first: batches that fill up (``max_batch``) while one runs do not start
    beside it (two encoder passes at once share the cores' threads: at a max batch of 8, 32 clients got 17 QPS
    instead of 76)."""
    running, most = [0], [0]
    lock = threading.Lock()
    first_running, release = threading.Event(), threading.Event()
    order = []

    def run(items):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
            order.append(list(items))
        if items == ["first"]:
            first_running.set()
            release.wait(30)
        threading.Event().wait(0.05)
        with lock:
            running[0] -= 1
        return items

    batcher = MicroBatcher(run, max_batch=2, max_wait_s=0.0)
    threads = [threading.Thread(target=batcher.submit, args=("first",))]
    threads[0].start()
    first_running.wait(30)
    later = []
    for i in range(6):  # three full batches of two, all closed while the first runs
        later.append(threading.Thread(target=batcher.submit, args=(f"q{i}",)))
        later[-1].start()
        threading.Event().wait(0.02)
    release.set()
    for t in threads + later:
        t.join(30)
    assert most[0] == 1 and order[0] == ["first"] and len(order) == 4
    assert [sorted(b) for b in order[1:]] == [["q0", "q1"], ["q2", "q3"], ["q4", "q5"]]  # oldest first


def test_after_a_handoff_the_next_batch_runs_beside_the_rest_of_this_one():
    """``handoff()`` from inside ``run_batch`` ends the part that runs one batch at a time (the encoder pass): the
    next batch starts while this one finishes its searches. Before it (no ``handoff``), a batch held the way to
    the end of ``run_batch``."""
    both = threading.Barrier(2, timeout=30)
    first_in = threading.Event()

    def run(items):
        if items == ["first"]:
            first_in.set()
            batcher.handoff()
            batcher.handoff()  # a second call is a no-op: it must not free another batch's turn
        if items != ["again"]:
            both.wait()  # returns only once both batches are inside run at the same time
        return items

    batcher = MicroBatcher(run, max_batch=4, max_wait_s=0.0)
    results = {}
    first = threading.Thread(target=lambda: results.update(first=batcher.submit("first")))
    first.start()
    first_in.wait(30)
    second = threading.Thread(target=lambda: results.update(second=batcher.submit("second")))
    second.start()
    for t in (first, second):
        t.join(60)
    assert results == {"first": "first", "second": "second"}
    batcher.handoff()  # outside a batch: nothing happens
    assert batcher.submit("again") == "again" and batcher._running == 0


def test_with_batching_off_calls_run_side_by_side():
    """``max_batch=1`` is batching off: a call does not wait for another's run (it did before the batcher)."""
    both = threading.Barrier(2, timeout=30)

    def run(items):
        both.wait()  # returns only once two runs are inside at the same time
        return items

    batcher = MicroBatcher(run, max_batch=1, max_wait_s=0.0)
    results = {}
    threads = [threading.Thread(target=lambda i=i: results.update({i: batcher.submit(i)})) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == {0: 0, 1: 1}


def test_an_error_reaches_every_caller_of_its_batch():
    batcher = MicroBatcher(lambda items: 1 / 0, max_batch=2, max_wait_s=0)
    with pytest.raises(ZeroDivisionError):
        batcher.submit(1)


def _requests():
    return [
        SearchRequest(query="moon ocean tides", k=3),
        SearchRequest(query="why does bread dough rise", k=3, pipeline="dense"),
        SearchRequest(query="lava", k=3, filter={"metadata": {"topic": "science"}}),
        SearchRequest(query="coffee roasting", k=3, filter={"metadata": {"topic": "science"}}, pipeline="dense"),
        SearchRequest(query="coffee", k=3, pipeline="bm25"),
        SearchRequest(query="tides", k=2, filter={"ids": ["tides", "bread"]}),
    ]


def _key(response):
    return [(h.id, round(h.score, 5), h.passage.index if h.passage else None) for h in response.hits]


def test_batched_results_equal_unbatched_and_filters_are_grouped(tiny):
    searcher = SearchPipeline(tiny, rerankers=[])
    alone = [_key(searcher.search_many([r])[0]) for r in _requests()]
    calls = []
    search = tiny.vectors.search

    def spy(matrix, k, allowed=None):
        calls.append((np.asarray(matrix).shape[0], allowed is None))
        return search(matrix, k, allowed=allowed)

    tiny.vectors.search = spy
    try:
        responses = searcher.search_many(_requests())
    finally:
        del tiny.vectors.search
    together = [_key(r) for r in responses]
    assert together == alone
    # one FAISS call per filter group for the first round: unfiltered (2 queries), topic=science (2), the id list
    # (1); the hybrid requests whose Rocchio feedback moved their vector (the default fusion) rescore their first
    # round's passages instead of searching again
    moved = [response.query_info["stages"]["rocchio"] for response in responses
             if response.query_info.get("stages", {}).get("rocchio", {}).get("applied")]
    assert moved and all(evidence["rescored"] > 0 for evidence in moved)
    assert sorted(calls) == sorted([(1, False), (2, False), (2, True)])


SEARCH_AGAIN = FusionConfig(rocchio=RocchioConfig(rescore=False))


def _spied(collection):
    """(the calls list, the restore function) of a spy on the collection's vector searches: rows per call."""
    calls = []
    search = collection.vectors.search

    def spy(matrix, k, allowed=None):
        calls.append(np.asarray(matrix).shape[0])
        return search(matrix, k, allowed=allowed)

    collection.vectors.search = spy
    return calls, lambda: delattr(collection.vectors, "search")


def test_the_rocchio_searches_of_a_batch_are_one_faiss_call_per_group(tiny):
    """With ``rocchio.rescore: false`` the default fusion's second dense search is batched like the first: N hybrid
    requests of one filter group make two FAISS calls, not 1 + N (each request's second search was a call of its
    own, 16 ms on 100k)."""
    searcher = SearchPipeline(tiny, rerankers=[])
    requests = [SearchRequest(query=q, k=3, fusion=SEARCH_AGAIN)
                for q in ("moon ocean tides", "bread dough", "coffee roasting", "lava")]
    alone = [searcher.search_many([r])[0] for r in requests]
    assert all(r.query_info["stages"]["rocchio"]["applied"] for r in alone)
    calls, restore = _spied(tiny)
    try:
        together = searcher.search_many(requests)
    finally:
        restore()
    # the same hits; scores to float32 rounding (a batched FAISS call sums in another order than a single one)
    assert [[h.id for h in r.hits] for r in together] == [[h.id for h in r.hits] for r in alone]
    assert np.allclose([h.score for r in together for h in r.hits], [h.score for r in alone for h in r.hits],
                       atol=1e-4)
    assert [r.query_info["stages"]["rocchio"] for r in together] == [r.query_info["stages"]["rocchio"] for r in alone]
    assert calls == [4, 4]


def test_rocchio_rescores_the_first_round_without_a_second_search(tiny):
    """The default Rocchio pass scores the moved vector on the first dense round's passages: one FAISS call for
    a batch, not two, alone or batched. Where that round holds every passage of the index (tiny's), the hits and
    scores are the ones a second search over the whole index gives."""
    searcher = SearchPipeline(tiny, rerankers=[])
    queries = ("moon ocean tides", "bread dough", "coffee roasting", "lava")
    searched = searcher.search_many([SearchRequest(query=q, k=3, fusion=SEARCH_AGAIN) for q in queries])
    calls, restore = _spied(tiny)
    try:
        alone = [searcher.search_many([SearchRequest(query=q, k=3)])[0] for q in queries]
        assert calls == [1, 1, 1, 1]
        del calls[:]
        together = searcher.search_many([SearchRequest(query=q, k=3) for q in queries])
        assert calls == [4]
    finally:
        restore()
    for mine in (alone, together):
        assert [[h.id for h in r.hits] for r in mine] == [[h.id for h in r.hits] for r in searched]
        assert np.allclose([h.score for r in mine for h in r.hits], [h.score for r in searched for h in r.hits],
                           atol=1e-4)
        for r in mine:
            evidence = r.query_info["stages"]["rocchio"]
            assert evidence["applied"] and evidence["rescored"] == len(tiny.vectors)


def test_concurrent_searches_share_batches_and_match_alone(tiny):
    searcher = SearchPipeline(tiny, rerankers=[])
    requests = _requests() * 3
    alone = [_key(searcher.search(r)) for r in requests]
    searcher._batcher.max_wait_s = 0.05
    results = [None] * len(requests)
    start = threading.Barrier(len(requests))

    def caller(i):
        start.wait()
        results[i] = _key(searcher.search(requests[i]))

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(len(requests))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert results == alone
    assert searcher._batcher.largest > 1


def test_a_lone_search_runs_bm25_beside_its_encoding_with_the_same_results(tiny, monkeypatch):
    """Alone in the pipeline, a hybrid or bm25 search (filtered too) runs its BM25 retrieval in a second thread
    while its query is encoded (lower latency for one client); under load or with the switch off, BM25 runs in
    line. The results are the same either way."""
    import foveal.pipeline.search as search_module

    searcher = SearchPipeline(tiny, rerankers=[])
    threads = []
    lexical = searcher._lexical

    def spy(*args, **kwargs):
        threads.append(threading.current_thread().name)
        return lexical(*args, **kwargs)

    searcher._lexical = spy
    beside = [_key(searcher.search(r)) for r in _requests()]
    assert [name.startswith("foveal-bm25") for name in threads] == [True, True, True, True]
    threads.clear()
    monkeypatch.setattr(search_module, "BM25_BESIDE", False)
    inline = [_key(searcher.search(r)) for r in _requests()]
    assert not any(name.startswith("foveal-bm25") for name in threads) and len(threads) == 4
    assert beside == inline
    monkeypatch.setattr(search_module, "BM25_BESIDE", True)
    threads.clear()
    with searcher._batcher.active():  # another search in flight: BM25 in line
        searcher.search(_requests()[0])
    assert threads and not threads[0].startswith("foveal-bm25")


def _wait_until(condition, timeout: float = 30.0) -> None:
    """Poll ``condition`` until it holds; past ``timeout`` the test goes on (and its assertions say what failed)."""
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.005)


def _held_batch(searcher, requests):
    """Search ``requests`` from threads of their own while the first batch is held, so that the rest queue up
    behind it and share the next batch: ``(results or errors by request, {thread finishing: [queries]})``."""
    release = threading.Event()
    run_batch = searcher._batcher.run_batch
    finish = searcher._finish
    finished: dict[str, list[str]] = {}

    def held(items):
        release.wait(30)
        return run_batch(items)

    def spy(request, prepared):
        finished.setdefault(threading.current_thread().name, []).append(request.query)
        return finish(request, prepared)

    searcher._batcher.run_batch = held
    searcher._finish = spy
    searcher._batcher.max_wait_s = 0.05
    results: list = [None] * len(requests)

    def caller(i):
        try:
            results[i] = searcher.search(requests[i])
        except Exception as exc:  # noqa: BLE001 - compared by the test
            results[i] = exc

    threads = [threading.Thread(target=caller, args=(i,), name=f"caller-{i}") for i in range(len(requests))]
    for t in threads:
        t.start()
        if t is threads[0]:  # the first batch holds the way before the others come
            _wait_until(lambda: searcher._batcher._running > 0)
    _wait_until(lambda: searcher._batcher._active == len(requests))
    release.set()
    for t in threads:
        t.join(120)
    return results, finished


def test_the_leader_finishes_every_search_of_its_batch(tiny):
    """A follower sleeps until its batch is done: the batch's leader runs the rest of each search of its batch
    (BM25, fusion, fetch) in turn, instead of waking every follower at once to contend for the interpreter lock.
    On the code before, each of the five callers finished its own search (five threads)."""
    searcher = SearchPipeline(tiny, rerankers=[])
    requests = _requests()[:5]
    alone = [_key(searcher.search(r)) for r in requests]
    results, finished = _held_batch(searcher, requests)
    assert [_key(r) for r in results] == alone
    assert searcher._batcher.largest == 4  # the four that came while the first was held shared one batch
    assert sorted(len(queries) for queries in finished.values()) == [1, 4]
    four = next(queries for queries in finished.values() if len(queries) == 4)
    assert sorted(four) == sorted(r.query for r in requests[1:])


def test_a_search_that_fails_in_a_shared_batch_fails_alone(tiny):
    """The leader finishes the searches of its batch; one that raises gets its own error, raised in its own
    thread, and the others of the batch get their answers."""
    searcher = SearchPipeline(tiny, rerankers=[])
    requests = _requests()[:4]
    alone = [_key(searcher.search(r)) for r in requests]
    search_one = searcher._search_one

    def failing(request, prepared, *args):
        if request.query == requests[2].query:
            raise ValueError("this search fails")
        return search_one(request, prepared, *args)

    searcher._search_one = failing
    results, finished = _held_batch(searcher, requests)
    assert isinstance(results[2], ValueError) and str(results[2]) == "this search fails"
    assert [_key(r) for i, r in enumerate(results) if i != 2] == [alone[i] for i in (0, 1, 3)]
    assert searcher._batcher.largest == 3
