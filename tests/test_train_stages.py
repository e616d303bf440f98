"""``foveal train paraformer`` and ``foveal train lexsem`` on a tiny SciFact-format folder built here (no network)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from foveal.cli import app
from foveal.training import Bm25Okapi, read_train_split
from tests.conftest import TINY_CORPUS

runner = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"})

QUERIES = {
    "q1": ("why does the sea rise twice a day", "tides"),
    "q2": ("how does bread dough rise", "bread"),
    "q3": ("what builds a new list in python", "python"),
    "q4": ("where does lava come from", "volcano"),
    "q5": ("opening with the c-pawn", "chess"),
    "q6": ("how are coffee beans roasted", "coffee"),
}


@pytest.fixture()
def scifact_like(tmp_path):
    folder = tmp_path / "data"
    (folder / "qrels").mkdir(parents=True)
    with open(folder / "corpus.jsonl", "w") as handle:
        for doc in TINY_CORPUS:
            handle.write(json.dumps({"_id": doc["_id"], "title": doc["title"], "text": doc["text"]}) + "\n")
    with open(folder / "queries.jsonl", "w") as handle:
        for qid, (text, _) in QUERIES.items():
            handle.write(json.dumps({"_id": qid, "text": text}) + "\n")
    lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t1" for q, (_, d) in QUERIES.items()]
    (folder / "qrels" / "train.tsv").write_text("\n".join(lines) + "\n")
    return folder


def test_train_split_and_bm25(scifact_like):
    split = read_train_split(scifact_like, dev_fraction=0.34, seed=1)
    assert sorted(split.train_ids + split.dev_ids) == sorted(QUERIES) and len(split.dev_ids) == 2
    assert split.text("tides").startswith("Ocean tides\n")
    bm25 = Bm25Okapi(split.corpus)
    assert bm25.top("lava and ash from magma", 3)[0][0] == "volcano"
    assert bm25.top("zzz unknown", 3) == []


def test_train_paraformer_writes_a_checkpoint_that_serves(scifact_like, tmp_path, encoder, monkeypatch):
    monkeypatch.setenv("FOVEAL_MODELS_DIR", str(tmp_path / "models"))
    out = tmp_path / "paraformer"
    result = runner.invoke(app, ["train", "paraformer", "--data", str(scifact_like), "--out", str(out),
                                 "--epochs", "1", "--negatives-from-top", "3", "--name", "para-1"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout.strip().splitlines()[-1])
    # registered by name in the operator's models folder (and copied to --out)
    assert record["model"] == "para-1" and (tmp_path / "models" / "para-1").is_dir()
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["para-1"]  # no temporary folder left
    taken = runner.invoke(app, ["train", "paraformer", "--data", str(scifact_like), "--name", "para-1"])
    assert taken.exit_code == 2 and "already exists" in taken.output
    assert record["pairs"] > record["train_queries"] and record["dev_queries"] >= 1
    assert set(record["weights"]) == {"first_stage", "paraformer"}
    from foveal.rerank.paraformer import ParaformerHead

    head = ParaformerHead.load(out)
    assert head.settings.weights == record["weights"] and head.settings.hidden_size == encoder.dimension


def test_train_paraformer_fits_its_weight_over_the_index_it_will_serve(scifact_like, tmp_path, monkeypatch):
    """--index: the combination weight is fitted over that index's served hybrid search, not an in-memory BM25
    (a weight fitted over one first stage is 0 over another for the SciFact head); an unknown index is refused."""
    from foveal.documents import parse_document
    from foveal.engine import Engine

    monkeypatch.setenv("FOVEAL_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("FOVEAL_HOME", str(tmp_path / "home"))
    engine = Engine(tmp_path / "home")
    engine.create_index("served").upsert([parse_document(d) for d in TINY_CORPUS])
    engine.close()
    args = ["train", "paraformer", "--data", str(scifact_like), "--epochs", "1", "--negatives-from-top", "3"]
    result = runner.invoke(app, args + ["--name", "para-served", "--index", "served"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout.strip().splitlines()[-1])
    assert record["weights_fitted_over"] == "the given first stage" and record["dev_queries"] >= 1
    plain = json.loads(runner.invoke(app, args + ["--name", "para-bm25"]).stdout.strip().splitlines()[-1])
    assert plain["weights_fitted_over"] == "bm25 (in memory)"
    missing = runner.invoke(app, args + ["--name", "para-x", "--index", "nope"])
    assert missing.exit_code == 2 and "nope" in missing.output


def test_train_lexsem_writes_an_encoder_and_modulation(scifact_like, tmp_path, encoder, monkeypatch):
    monkeypatch.setenv("FOVEAL_MODELS_DIR", str(tmp_path / "models"))
    out = tmp_path / "lexsem"
    result = runner.invoke(app, ["train", "lexsem", "--data", str(scifact_like), "--out", str(out),
                                 "--paradigm", "llr", "--batch-size", "2", "--passage-max-length", "32",
                                 "--learning-rate", "1e-4", "--name", "tuned"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout.strip().splitlines()[-1])
    # the encoder is a model name a config can use; the modulation weights are registered beside it
    assert (record["model"], record["modulation"]) == ("tuned", "tuned-modulation")
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["tuned", "tuned-modulation"]
    from foveal.config import IndexConfig, resolve_model_name

    assert resolve_model_name("tuned") == str(tmp_path / "models" / "tuned")
    IndexConfig.parse({"encoder": {"model": "tuned"}}, source="rest")  # a tenant may name it
    assert record["steps"] >= 2 and all(np.isfinite(record["losses"]))
    from foveal.config import EncoderConfig
    from foveal.encoders.lexsem import LexSemBridge, LexSemBridgeStage
    from foveal.encoders.sentence_transformer import SentenceTransformerEncoder

    tuned = SentenceTransformerEncoder(EncoderConfig(model=resolve_model_name("tuned")))
    texts = ["how does bread dough rise"]
    plain = encoder.encode_queries(texts).vectors
    encoded = tuned.encode_queries(texts, with_tokens=True)
    assert not np.array_equal(encoded.vectors, plain)  # it trained
    bridge = LexSemBridge.load(tmp_path / "models" / "tuned-modulation")
    assert (out / "encoder").is_dir() and (out / "lexsem").is_dir()  # --out still gets a copy
    assert bridge.paradigm.value == "llr" and bridge.config.encoder == "all-MiniLM-L6-v2"
    vector, evidence = LexSemBridgeStage(bridge).apply(None, encoded.vectors[0], encoded.tokens(0))
    assert abs(float(np.linalg.norm(vector)) - 1) < 1e-5 and evidence["paradigm"] == "llr"


def test_train_commands_explain_bad_input(tmp_path):
    result = runner.invoke(app, ["train", "paraformer", "--data", str(tmp_path), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "corpus.jsonl" in result.output
    result = runner.invoke(app, ["train", "lexsem", "--data", str(tmp_path), "--paradigm", "dense"])
    assert result.exit_code == 2 and "allowed: slr, llr, clr" in result.output


def test_train_xpool_from_pairs_registers_a_checkpoint(tmp_path, monkeypatch):
    from foveal.rerank.xpool import XPool
    from tests.conftest import SAMPLES

    monkeypatch.setenv("FOVEAL_MODELS_DIR", str(tmp_path / "models"))
    args = ["train", "xpool", "--pairs", str(SAMPLES / "video" / "pairs.jsonl"), "--epochs", "2", "--name", "xp-1"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout.strip().splitlines()[-1])
    assert record["model"] == "xp-1" and record["pairs"] == 60 and len(record["epochs"]) == 2
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["xp-1"]
    assert XPool.load(tmp_path / "models" / "xp-1").settings.dim == 8
    again = runner.invoke(app, args)  # a taken name is refused before training
    assert again.exit_code != 0 and "already exists" in again.output
    neither = runner.invoke(app, ["train", "xpool"])
    assert neither.exit_code != 0 and "--pairs" in neither.output


def test_train_xpool_on_a_beir_folder(scifact_like, tmp_path, encoder, monkeypatch):
    monkeypatch.setenv("FOVEAL_MODELS_DIR", str(tmp_path / "models"))
    result = runner.invoke(app, ["train", "xpool", "--data", str(scifact_like), "--epochs", "1", "--batch-size", "4",
                                 "--name", "xp-beir"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout.strip().splitlines()[-1])
    assert record["pairs"] == len(QUERIES)
    assert json.loads((tmp_path / "models" / "xp-beir" / "xpool.json").read_text())["dim"] == encoder.dimension
