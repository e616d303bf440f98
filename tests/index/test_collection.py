import json

import numpy as np
import pytest

from foveal.config import IndexConfig
from foveal.documents import parse_document
from foveal.errors import IncompatibleIndexError, IndexExistsError, IndexNotFoundError, InvalidInputError
from foveal.index.collection import Collection
from foveal.index.sqlite_store import PreparedDocument
from tests.conftest import TINY_CORPUS


def _docs(*items):
    return [parse_document(d) for d in items]


def _everywhere(collection, doc_id):
    """Where a document is: (store, lexical, vectors)."""
    stored = collection.get(doc_id)
    key = stored.doc_key if stored else None
    in_lexical = any(k == key for k, _ in collection.lexical.search(stored.title, 50)) if stored else False
    in_vectors = False
    if stored:
        ids, vecs = collection.store.vectors_of([key])
        _, found = collection.vectors.search(vecs[:1], 5)
        in_vectors = ids[0] in found[0]
    return stored is not None, in_lexical, in_vectors


def test_upsert_skips_unchanged_and_updates_changed(tiny):
    again = tiny.upsert(_docs(*TINY_CORPUS))
    assert len(again.unchanged) == len(TINY_CORPUS) and not again.added and again.passages == 0
    changed = dict(TINY_CORPUS[0], text="The sun also pulls on the oceans.")
    result = tiny.upsert(_docs(changed))
    assert result.updated == ["tides"]
    assert tiny.get("tides").text == "The sun also pulls on the oceans."
    assert tiny.store.count() == len(TINY_CORPUS)
    assert [k for k, _ in tiny.lexical.search("sun", 5)] == [tiny.get("tides").doc_key]


def test_last_version_in_a_batch_wins(tiny):
    a = dict(TINY_CORPUS[1], text="first version")
    b = dict(TINY_CORPUS[1], text="second version")
    tiny.upsert(_docs(a, b))
    assert tiny.get("bread").text == "second version"


def test_delete_removes_from_every_store(tiny):
    key = tiny.get("chess").doc_key
    result = tiny.delete(["chess", "nope"])
    assert result.deleted == ["chess"] and result.missing == ["nope"]
    assert tiny.get("chess") is None
    assert all(k != key for k, _ in tiny.lexical.search("sicilian chess", 10))
    ids, _ = tiny.store.vectors_of([key])
    assert len(ids) == 0
    assert len(tiny.vectors) == tiny.store.passage_count()


def test_reopen_restores_everything(engine, tiny):
    tiny.close()
    reopened = Collection.open(tiny.path, "tiny")
    assert reopened.store.count() == len(TINY_CORPUS)
    assert len(reopened.vectors) == reopened.store.passage_count()
    assert all(_everywhere(reopened, d["_id"]) == (True, True, True) for d in TINY_CORPUS)


def test_crash_after_store_commit_heals_on_open(engine, tiny, encoder):
    """The store committed a batch but the process died before FAISS and tantivy saw it."""
    tiny.flush()
    doc = parse_document({"_id": "late", "title": "Glaciers", "text": "Ice sheets carve valleys."})
    (enc,) = encoder.encode_documents([doc.full_text])
    tiny.store.write([PreparedDocument(doc, [(p.char_start, p.char_end) for p in enc.passages], enc.vectors)])
    tiny.store.close()  # "crash": no catch-up, no save
    reopened = Collection.open(tiny.path, "tiny")
    assert _everywhere(reopened, "late") == (True, True, True)


def test_lost_vector_file_is_rebuilt_from_the_store(engine, tiny):
    tiny.close()
    (tiny.path / "vectors.npz").unlink()
    reopened = Collection.open(tiny.path, "tiny")
    assert len(reopened.vectors) == reopened.store.passage_count() > 0
    assert _everywhere(reopened, "volcano") == (True, True, True)


def test_a_second_process_view_sees_committed_writes(engine, tiny):
    reader = Collection.open(tiny.path, "tiny")
    tiny.upsert(_docs({"_id": "new", "title": "Bees", "text": "Bees dance to share where flowers are."}))
    reader.refresh()
    assert _everywhere(reader, "new") == (True, True, True)
    tiny.delete(["new"])
    reader.refresh()
    assert reader.get("new") is None and len(reader.vectors) == reader.store.passage_count()


def test_config_is_recorded_and_checked(engine, tiny):
    saved = json.loads((tiny.path / "config.json").read_text())
    assert saved["encoder"]["max_seq_length"] == 256  # resolved, not None
    with pytest.raises(IncompatibleIndexError, match="vector.factory"):
        Collection.open(tiny.path, "tiny", IndexConfig.parse({"vector": {"factory": "HNSW32"}}))
    with pytest.raises(IndexExistsError):
        engine.create_index("tiny")
    with pytest.raises(IndexNotFoundError):
        engine.get("absent")
    with pytest.raises(InvalidInputError, match="invalid index name"):
        engine.create_index("../escape")


def test_precomputed_vectors_skip_encoding(engine, encoder):
    collection = engine.create_index("vec")
    vector = np.zeros(384, np.float32)
    vector[3] = 2.0
    collection.upsert(_docs({"_id": "v", "title": "precomputed", "vector": vector.tolist()}))
    ids, stored = collection.store.vectors_of([collection.get("v").doc_key])
    assert len(ids) == 1 and stored[0, 3] == pytest.approx(1.0)  # normalized
    with pytest.raises(InvalidInputError, match="dimension"):
        collection.upsert([parse_document({"_id": "w", "vector": [1.0, 2.0]})])


def test_hnsw_index_deletes(engine):
    collection = engine.create_index("hnsw", {"vector": {"factory": "HNSW16"}})
    collection.upsert(_docs(*TINY_CORPUS))
    collection.delete(["coffee"])
    key_gone = {d["_id"] for d in TINY_CORPUS} - {"coffee"}
    assert len(collection.vectors) == collection.store.passage_count()
    from foveal.pipeline.request import SearchRequest
    from foveal.pipeline.search import SearchPipeline

    hits = SearchPipeline(collection).search(SearchRequest(query="coffee beans roasting", pipeline="dense", k=10)).hits
    assert {h.id for h in hits} == key_gone
