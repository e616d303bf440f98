"""Per-document vector sets in the document store (sentence vectors for Paraformer, frames for X-Pool): written in
the document's transaction, replaced and deleted with it, copied by snapshots, consistent after a SIGKILL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from foveal.config import IndexConfig
from foveal.documents import parse_document
from foveal.encoders.segment import sentence_spans
from foveal.errors import ConfigError
from foveal.index.collection import SENTENCES
from foveal.index.sqlite_store import PreparedDocument, SqliteDocStore, VectorSet
from foveal.snapshots import Snapshots
from tests.conftest import TINY_CORPUS
from tests.killharness import kill_at_hook

ROOT = Path(__file__).resolve().parents[2]


def _prepared(doc_id: str, sets: dict[str, VectorSet]) -> PreparedDocument:
    doc = parse_document({"_id": doc_id, "text": f"text of {doc_id}"})
    return PreparedDocument(doc, [(0, len(doc.full_text))], np.ones((1, 4), np.float32), 0, sets)


def _store_consistent(store: SqliteDocStore) -> None:
    """Every set belongs to a stored document (no orphan survives a delete or a replace)."""
    conn = store._connect()
    orphans = conn.execute("SELECT COUNT(*) FROM vector_sets WHERE doc_key NOT IN (SELECT doc_key FROM documents)")
    assert orphans.fetchone()[0] == 0


def test_store_writes_reads_replaces_and_deletes_sets(tmp_path):
    store = SqliteDocStore(tmp_path / "docs.sqlite")
    frames = np.arange(12, dtype=np.float32).reshape(3, 4) / 10
    keys = store.write([_prepared("a", {"sentences": VectorSet(frames, [(0, 4), (5, 7), (8, 9)]),
                                        "frames": VectorSet(frames[:1])}),
                        _prepared("b", {"sentences": VectorSet(frames[:2], [(0, 1), (2, 3)])})])
    a, b = keys["a"], keys["b"]
    got = store.vector_sets([a, b, 999], "sentences")
    assert set(got) == {a, b} and got[a].dtype == np.float16
    np.testing.assert_array_equal(got[a], frames.astype(np.float16))
    assert store.vector_sets([a], "sentences", with_spans=True)[a].spans == [(0, 4), (5, 7), (8, 9)]
    assert store.vector_sets([a], "frames", with_spans=True)[a].spans is None
    assert store.vector_set_stats("sentences") == {"documents": 2, "rows": 5, "bytes": 5 * 4 * 2}

    store.write([_prepared("a", {"sentences": VectorSet(frames[:1], [(0, 1)])})])  # a replace drops every old set
    assert store.vector_sets([a], "frames") == {}
    assert store.vector_sets([a], "sentences")[a].shape == (1, 4)
    store.write([], deletes=["b"])
    assert store.vector_sets([b], "sentences") == {}
    _store_consistent(store)


def test_a_bad_set_rolls_back_its_whole_batch(tmp_path):
    store = SqliteDocStore(tmp_path / "docs.sqlite")
    with pytest.raises(ValueError, match="kind"):
        store.write([_prepared("a", {"sentences": VectorSet(np.zeros((1, 4)))}),
                     _prepared("b", {"Bad Kind": VectorSet(np.zeros((1, 4)))})])
    assert store.count() == 0 and store.vector_set_stats("sentences")["documents"] == 0
    with pytest.raises(ValueError, match="spans"):
        VectorSet(np.zeros((2, 4)), [(0, 1)])


@pytest.mark.parametrize("mode", ["pooled", "faithful"])
def test_ingest_with_sentence_vectors_stores_one_set_per_document(engine, encoder, mode):
    collection = engine.create_index("sv", {"sentence_vectors": {"enabled": True, "mode": mode, "max_sentences": 2}})
    docs = [parse_document(d) for d in TINY_CORPUS] + [
        parse_document({"_id": "own", "text": "carries its vector", "vector": [1.0] * encoder.dimension})]
    collection.upsert(docs)
    keys = {d.id: collection.get(d.id).doc_key for d in docs}
    sets = collection.store.vector_sets(keys.values(), SENTENCES, with_spans=True)
    assert set(sets) == {keys[d["_id"]] for d in TINY_CORPUS}  # a document with its own vector gets none
    texts = [parse_document(d).full_text for d in TINY_CORPUS]
    for d, text in zip(TINY_CORPUS, texts):
        vset = sets[keys[d["_id"]]]
        assert vset.spans == sentence_spans(text)[:2] and len(vset.vectors) == len(vset.spans)
    # the stored vectors are what each mode computes (float16 of it)
    if mode == "pooled":
        expected = [v for v, _ in encoder.encode_sentence_spans(texts, 2)]
    else:
        expected = [encoder.encode_queries([t[a:b] for a, b in sentence_spans(t)[:2]]).vectors for t in texts]
    for d, want in zip(TINY_CORPUS, expected):
        np.testing.assert_allclose(sets[keys[d["_id"]]].vectors.astype(np.float32), want, atol=2e-3)
    # passage vectors are the ones ingest without sentence vectors makes
    ids, passages = collection.store.vectors_of([keys["tides"]])
    np.testing.assert_allclose(passages, encoder.encode_documents([texts[0]])[0].vectors, atol=1e-5)
    assert collection.stats()["vector_sets"][SENTENCES]["documents"] == len(TINY_CORPUS)

    collection.delete(["tides"])
    assert collection.store.vector_sets([keys["tides"]], SENTENCES) == {}
    changed = dict(TINY_CORPUS[1], text="Only one sentence now")
    collection.upsert([parse_document(changed)])
    assert len(collection.store.vector_sets([keys["bread"]], SENTENCES)[keys["bread"]]) == 1
    _store_consistent(collection.store)


def test_without_the_option_no_set_is_written(tiny):
    assert tiny.store.vector_set_stats(SENTENCES)["documents"] == 0
    assert "vector_sets" not in tiny.stats()


def test_snapshots_carry_the_sets(engine):
    collection = engine.create_index("snap", {"sentence_vectors": {"enabled": True}})
    collection.upsert([parse_document(d) for d in TINY_CORPUS[:3]])
    before = collection.store.vector_sets(range(1, 10), SENTENCES)
    snaps = Snapshots(engine)
    snaps.create("snap", "s1")
    collection.delete([TINY_CORPUS[0]["_id"]])
    snaps.restore("s1", "copy")
    after = engine.get("copy").store.vector_sets(range(1, 10), SENTENCES)
    assert set(after) == set(before) and all(np.array_equal(after[k], before[k]) for k in before)


def test_sentence_vectors_need_the_sqlite_store():
    with pytest.raises(ConfigError, match="sentence_vectors.enabled needs docstore.backend 'sqlite'"):
        IndexConfig.parse({"sentence_vectors": {"enabled": True}, "docstore": {"backend": "elasticsearch"}})
    with pytest.raises(ConfigError, match="max_sentences"):
        IndexConfig.parse({"sentence_vectors": {"max_sentences": 0}})
    with pytest.raises(ConfigError, match="mode"):
        IndexConfig.parse({"sentence_vectors": {"mode": "average"}})


def test_switching_sentence_vectors_on_needs_a_rebuild(engine):
    from foveal.errors import IncompatibleIndexError
    from foveal.index.collection import Collection

    collection = engine.create_index("plain")
    with pytest.raises(IncompatibleIndexError, match="sentence_vectors.enabled"):
        Collection.open(collection.path, "plain", IndexConfig(sentence_vectors={"enabled": True}))


def test_sigkill_mid_ingest_leaves_store_and_sets_consistent(engine, tmp_path):
    """A real ``foveal ingest`` (batches of 2, the model loaded) SIGKILLed while paused right after its first store
    commit (before FAISS and tantivy hold the batch): every stored document has its sentence set and no set outlives
    its document; re-running the ingest completes both and heals the derived indexes."""
    engine.create_index("killsv", {"sentence_vectors": {"enabled": True, "max_sentences": 4}})
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in TINY_CORPUS))
    hooks = tmp_path / "hooks.log"
    env = dict(os.environ, FOVEAL_TEST_HOOKS=str(hooks), FOVEAL_TEST_HOOK_PAUSE_S="120")
    command = [sys.executable, "-m", "foveal.cli", "ingest", str(corpus), "--index", "killsv", "--batch-size", "2"]
    kill_at_hook(command, env, hooks, cwd=ROOT)
    collection = engine.get("killsv")
    collection.refresh()
    store = collection.store
    assert store.count() == 2  # the first batch committed, the rest never started
    keys = [k for batch in store.iter_documents() for k in (d.doc_key for d in batch)]
    assert set(store.vector_sets(keys, SENTENCES)) == set(keys)
    _store_consistent(store)
    env.pop("FOVEAL_TEST_HOOKS")
    subprocess.run(command, env=env, cwd=ROOT, check=True, capture_output=True)
    collection.refresh()
    assert store.count() == len(TINY_CORPUS) == store.vector_set_stats(SENTENCES)["documents"]
    assert len(collection.lexical) == len(TINY_CORPUS)


def test_a_metadata_update_keeps_the_documents_vector_sets(engine):
    """A metadata update rewrites the document without encoding it again; it must carry its vector sets over (the
    sentence vectors here; a vector item's frames are the caller's own data). Before, the rewrite dropped them."""
    collection = engine.create_index("meta", {"sentence_vectors": {"enabled": True}})
    collection.upsert([parse_document(d) for d in TINY_CORPUS[:2]])
    key = collection.get(TINY_CORPUS[0]["_id"]).doc_key
    before = collection.store.vector_sets([key], SENTENCES, with_spans=True)[key]
    result = collection.update_metadata([(TINY_CORPUS[0]["_id"], {"topic": "moved"}, None, False)])
    assert result.updated == [TINY_CORPUS[0]["_id"]]
    assert collection.get(TINY_CORPUS[0]["_id"]).metadata["topic"] == "moved"
    after = collection.store.vector_sets([key], SENTENCES, with_spans=True)[key]
    assert np.array_equal(after.vectors, before.vectors) and after.spans == before.spans
    _store_consistent(collection.store)
