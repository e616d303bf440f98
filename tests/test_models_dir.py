"""``foveal train …`` registers what it makes in the operator's models folder (FOVEAL_MODELS_DIR, default
$FOVEAL_HOME/models) under a name, atomically, never over an existing name without --force, and prints the name an
index config uses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from foveal.errors import ConfigError, ConflictError


def _writer(text: str):
    def write(folder):
        (folder / "weights.bin").write_text(text)
    return write


def test_register_is_atomic_named_and_refuses_to_overwrite(tmp_path, monkeypatch):
    from foveal.config import allowed_models, models_dir, resolve_model_name
    from foveal.models_dir import register_model

    monkeypatch.delenv("FOVEAL_MODELS_DIR", raising=False)
    monkeypatch.setenv("FOVEAL_HOME", str(tmp_path / "home"))
    assert models_dir() == tmp_path / "home" / "models"

    folder = register_model(_writer("one"), "rr-1")
    assert folder == models_dir() / "rr-1" and (folder / "weights.bin").read_text() == "one"
    assert "rr-1" in allowed_models() and resolve_model_name("rr-1") == str(folder)
    with pytest.raises(ConflictError, match="--force"):
        register_model(_writer("two"), "rr-1")
    assert (folder / "weights.bin").read_text() == "one"
    register_model(_writer("two"), "rr-1", force=True)
    assert (folder / "weights.bin").read_text() == "two"

    def broken(folder):
        (folder / "weights.bin").write_text("half")
        raise RuntimeError("training crashed")

    with pytest.raises(RuntimeError):
        register_model(broken, "rr-2")
    assert sorted(p.name for p in models_dir().iterdir()) == ["rr-1"]  # no name, no temporary folder left
    with pytest.raises(ConfigError, match="--name"):
        register_model(_writer("x"), "../outside")


@pytest.fixture()
def fake_training(monkeypatch):
    """``train_rerank`` stands in for a real run (minutes on a CPU): it writes a model folder and a record."""
    calls = []

    def train_rerank(data, out, **kwargs):
        calls.append((out, kwargs))
        (out / "pyramid.json").write_text("{}")
        return {"total_seconds": 1.0, "dev_ndcg10_curve": []}

    monkeypatch.setattr("foveal.rerank.train.train_rerank", train_rerank)
    return calls


def test_train_rerank_registers_and_prints_the_name(tmp_path, monkeypatch, fake_training):
    from foveal.cli import app

    monkeypatch.setenv("FOVEAL_MODELS_DIR", str(tmp_path / "models"))
    run = ["train", "rerank", "--data", str(tmp_path / "data"), "--home", str(tmp_path / "home")]
    result = CliRunner().invoke(app, [*run, "--name", "scifact-rr"])
    assert result.exit_code == 0, result.output
    assert '{"rerank": {"model": "scifact-rr"}}' in result.output
    assert (tmp_path / "models" / "scifact-rr" / "pyramid.json").exists()
    out, kwargs = fake_training[0]
    assert out.parent == tmp_path / "models" and out.name.startswith(".")  # written aside, then renamed
    assert kwargs["cache_dir"] == tmp_path / "home" / "cache" / "train-rerank"  # mined candidates stay out of models

    again = CliRunner().invoke(app, [*run, "--name", "scifact-rr"])
    assert again.exit_code == 2 and "already exists" in again.output and "--force" in again.output
    assert len(fake_training) == 1  # refused before training
    assert CliRunner().invoke(app, [*run, "--name", "scifact-rr", "--force"]).exit_code == 0

    default = CliRunner().invoke(app, run)
    assert default.exit_code == 0, default.output
    name = json.loads(default.stdout.strip().splitlines()[-1])["model"]
    assert name.startswith("rerank-") and (tmp_path / "models" / name).is_dir()


def test_train_rerank_also_takes_folder_index_pairs(tmp_path, monkeypatch, fake_training):
    from foveal.cli import app

    monkeypatch.setenv("FOVEAL_MODELS_DIR", str(tmp_path / "models"))
    run = ["train", "rerank", "--data", str(tmp_path / "data"), "--home", str(tmp_path / "home"), "--name", "u"]
    result = CliRunner().invoke(app, [*run, "--also", "../shared/data/cacm=cacm", "--also", "x=y=lisa",
                                      "--also-split", "test"])
    assert result.exit_code == 0, result.output
    _, kwargs = fake_training[0]
    assert kwargs["also"] == [(Path("../shared/data/cacm"), "cacm"), (Path("x=y"), "lisa")]
    assert kwargs["also_split"] == "test"
    result = CliRunner().invoke(app, [*run, "--force", "--also", "cacm"])
    assert result.exit_code != 0 and "FOLDER=INDEX" in result.output
