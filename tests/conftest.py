"""Shared fixtures: the model loads once per session; every test gets its own FOVEAL_HOME."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# the fp32 ONNX export that CPU query passes run (encoder.query_backend auto): one cache for every test's home, so
# the export is made once per machine and all homes share one loaded model, as one server's indexes do
os.environ.setdefault("FOVEAL_ONNX_CACHE", os.path.join(os.environ.get("TMPDIR", "/tmp"), "foveal-test-onnx"))

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"

#: A handful of short documents with known answers, used across the pipeline tests.
TINY_CORPUS = [
    {"_id": "tides", "title": "Ocean tides", "text": "The gravitational pull of the moon raises the sea twice a day.",
     "metadata": {"topic": "science"}, "timestamp": "2024-01-05T00:00:00Z"},
    {"_id": "bread", "title": "Baking bread", "text": "Yeast ferments sugars in dough and releases carbon dioxide, so the loaf rises.",
     "metadata": {"topic": "cooking"}},
    {"_id": "python", "title": "Python lists", "text": "A list comprehension builds a new list from an iterable in a single expression.",
     "metadata": {"topic": "computing"}},
    {"_id": "volcano", "title": "Volcanoes", "text": "Magma rises through cracks in the crust and erupts as lava and ash.",
     "metadata": {"topic": "science"}},
    {"_id": "chess", "title": "Chess openings", "text": "The Sicilian Defence answers the king's pawn opening with the c-pawn.",
     "metadata": {"topic": "games"}},
    {"_id": "coffee", "title": "Coffee roasting", "text": "Roasting turns green coffee beans brown through the Maillard reaction.",
     "metadata": {"topic": "cooking"}},
]


@pytest.fixture(scope="session")
def encoder():
    from foveal.config import EncoderConfig
    from foveal.encoders.sentence_transformer import get_encoder

    return get_encoder(EncoderConfig())


@pytest.fixture(scope="session")
def fp32_encoder():
    """The default encoder with fp32 query passes (``encoder.query_quantize: none``; the default is ``mixed``): for
    tests that compare query vectors with torch's to float rounding."""
    from foveal.config import EncoderConfig
    from foveal.encoders.sentence_transformer import get_encoder

    return get_encoder(EncoderConfig(query_quantize="none"))


@pytest.fixture()
def home(tmp_path, monkeypatch):
    path = tmp_path / "home"
    monkeypatch.setenv("FOVEAL_HOME", str(path))
    return path


@pytest.fixture()
def engine(home, encoder):
    from foveal.engine import Engine

    eng = Engine(home)
    yield eng
    eng.close()


@pytest.fixture()
def tiny(engine):
    """An index 'tiny' holding TINY_CORPUS."""
    from foveal.documents import parse_document

    collection = engine.create_index("tiny")
    collection.upsert([parse_document(d) for d in TINY_CORPUS])
    collection.flush()
    return collection
