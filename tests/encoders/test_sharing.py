"""One loaded model per distinct model config, shared by the indexes that use it and freed with the last one."""

from __future__ import annotations

import gc
import json
import weakref

import pytest

from foveal.config import EncoderConfig


def test_configs_that_only_change_batching_share_one_model(engine, encoder):
    a = engine.create_index("a", {"encoder": {"batch_size": 8}})
    b = engine.create_index("b", {"encoder": {"passage_overlap": 0, "max_seq_length": 128}})
    assert a.encoder is not b.encoder  # each keeps its own segmentation settings...
    assert a.encoder.model is b.encoder.model is encoder.model  # ...on the one loaded copy of the weights
    assert b.encoder.max_seq_length == 128 and a.encoder.max_seq_length == 256


def test_an_index_opens_without_its_model_and_loads_it_on_first_use(engine, home):
    from foveal.engine import Engine

    engine.create_index("lazy")
    engine.close()
    again = Engine(home)
    collection = again.get("lazy")
    assert collection._encoder is None and collection.dimension == 384  # from config.json
    assert collection.encoder.dimension == 384  # built on first use
    again.close()
    assert collection._encoder is None  # closing let go of it


def test_a_folder_without_a_recorded_dimension_still_opens(engine, home):
    """Indexes written before the dimension was recorded fall back to asking the model."""
    from foveal.engine import Engine

    engine.create_index("old")
    engine.close()
    config_file = home / "indexes" / "old" / "config.json"
    data = json.loads(config_file.read_text())
    del data["encoder"]["dimension"]
    config_file.write_text(json.dumps(data))
    again = Engine(home)
    assert again.get("old").dimension == 384
    again.open_or_create("old", None)
    from foveal.config import IndexConfig

    again.open_or_create("old", IndexConfig())  # an asked config without resolved keys is compatible
    again.close()


def test_a_wrong_dimension_is_refused_at_creation(engine):
    from foveal.errors import ConfigError

    with pytest.raises(ConfigError, match="384-dimensional"):
        engine.create_index("wrong", {"encoder": {"dimension": 99}})


def test_a_distinct_model_is_freed_when_its_last_index_is_deleted(engine, encoder):
    from foveal.encoders.sentence_transformer import loaded_models

    eager = engine.create_index("eager", {"encoder": {"attention": "eager"}})  # another graph: another model
    also = engine.create_index("eager2", {"encoder": {"attention": "eager", "batch_size": 4}})
    assert eager.encoder.model is also.encoder.model
    assert eager.encoder.model is not encoder.model
    model = weakref.ref(eager.encoder.loaded)
    assert sum(1 for m in loaded_models() if m.key[3] == "eager") == 1
    del also
    engine.delete_index("eager2")
    assert model() is not None  # "eager" still uses it
    del eager
    engine.delete_index("eager")
    gc.collect()
    assert model() is None  # the weights are gone with the last index
    assert encoder.loaded in loaded_models()  # the default model, still held by the session fixture, stays


def test_get_encoder_reuses_a_live_model():
    from foveal.encoders.sentence_transformer import get_encoder, model_key

    assert model_key(EncoderConfig(batch_size=3)) == model_key(EncoderConfig(max_seq_length=64))
    assert model_key(EncoderConfig(attention_temperature=1.0)) == model_key(EncoderConfig())
    assert model_key(EncoderConfig(attention_temperature=0.9)) != model_key(EncoderConfig())
    first = get_encoder(EncoderConfig())
    assert get_encoder(EncoderConfig(batch_size=3)).model is first.model
