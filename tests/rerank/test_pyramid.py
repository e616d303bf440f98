"""The split cross-encoder: 0 lower layers is the plain cross-encoder, all lower layers means no interaction,
and a saved model reloads to identical scores."""

from __future__ import annotations

import pytest
import torch

from foveal.errors import ConfigError
from foveal.rerank.pyramid import PyramidRanker

QUERY = "does the moon cause ocean tides"
TITLES = ["Ocean tides", "Baking bread at home with a long title about sourdough starters"]
SUMMARIES = ["The gravitational pull of the moon raises the sea twice a day.", "Yeast ferments sugars."]


def plain_cross_encoder(ranker: PyramidRanker, query, titles, summaries) -> torch.Tensor:
    """The reference: one BertModel call per pair on [CLS] q [SEP] title [SEP] summary [SEP] (types 0 then 1,
    positions 0..n-1), the head on the final [CLS]."""
    a_ids, a_mask, b_ids, b_mask = ranker.encode(query, titles, summaries)
    logits = []
    for row in range(len(titles)):
        a = a_ids[row, : int(a_mask[row].sum())]
        b = b_ids[row, : int(b_mask[row].sum())]
        ids = torch.cat([a, b])[None, :]
        types = torch.cat([torch.zeros_like(a), torch.ones_like(b)])[None, :]
        hidden = ranker.model.bert(input_ids=ids, token_type_ids=types).last_hidden_state
        logits.append(ranker.model.head(hidden[:, 0]).squeeze(-1))
    return torch.cat(logits)


@torch.inference_mode()
def test_zero_lower_layers_is_the_plain_cross_encoder(tiny_ranker):
    tiny_ranker.model.lower_layers = 0
    pyramid = torch.from_numpy(tiny_ranker.logits(QUERY, TITLES, SUMMARIES))
    reference = plain_cross_encoder(tiny_ranker, QUERY, TITLES, SUMMARIES)
    torch.testing.assert_close(pyramid, reference, atol=1e-5, rtol=1e-5)


@torch.inference_mode()
def test_a_split_differs_from_the_plain_cross_encoder(tiny_ranker):
    tiny_ranker.model.lower_layers = 2
    pyramid = torch.from_numpy(tiny_ranker.logits(QUERY, TITLES, SUMMARIES))
    assert not torch.allclose(pyramid, plain_cross_encoder(tiny_ranker, QUERY, TITLES, SUMMARIES), atol=1e-5)


@torch.inference_mode()
def test_all_lower_layers_means_no_interaction(tiny_ranker):
    tiny_ranker.model.lower_layers = tiny_ranker.model.num_layers
    one = tiny_ranker.logits(QUERY, TITLES, SUMMARIES)
    other = tiny_ranker.logits(QUERY, TITLES, ["Completely different words here, and more of them.", "x"])
    assert one.tolist() == pytest.approx(other.tolist(), abs=1e-6)
    tiny_ranker.model.lower_layers = tiny_ranker.model.num_layers - 1
    one = tiny_ranker.logits(QUERY, TITLES, SUMMARIES)
    other = tiny_ranker.logits(QUERY, TITLES, ["Completely different words here, and more of them.", "x"])
    assert abs(one[0] - other[0]) > 1e-6


@torch.inference_mode()
def test_batching_does_not_change_scores(tiny_ranker):
    together = tiny_ranker.logits(QUERY, TITLES, SUMMARIES)
    apart = [tiny_ranker.logits(QUERY, [t], [s])[0] for t, s in zip(TITLES, SUMMARIES)]
    assert together.tolist() == pytest.approx(apart, abs=1e-5)


def test_split_out_of_range_is_refused(tiny_ranker):
    with pytest.raises(ConfigError, match="lower_layers"):
        tiny_ranker.model.lower_layers = 9


def test_saved_model_reloads_to_identical_scores(tiny_ranker, tmp_path):
    # one training step so the weights are not the seeded initialisation
    tiny_ranker.model.train()
    optimizer = torch.optim.SGD(tiny_ranker.model.parameters(), lr=0.1)
    tiny_ranker.model(*tiny_ranker.encode(QUERY, TITLES, SUMMARIES)).sum().backward()
    optimizer.step()
    tiny_ranker.settings.combination = {"first_stage": 0.3, "pyramid": 0.7}
    before = tiny_ranker.score(QUERY, TITLES, SUMMARIES)
    loaded = PyramidRanker.load(tiny_ranker.save(tmp_path / "model"))
    assert loaded.score(QUERY, TITLES, SUMMARIES).tolist() == before.tolist()
    assert loaded.settings.combination == {"first_stage": 0.3, "pyramid": 0.7}
    assert loaded.settings.lower_layers == tiny_ranker.settings.lower_layers
    assert PyramidRanker.load(tmp_path / "model", lower_layers=0).model.lower_layers == 0


def test_loading_a_folder_without_a_model_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="no pyramid rerank model"):
        PyramidRanker.load(tmp_path)


@torch.inference_mode()
def test_the_packaged_minilm_split_at_zero_is_the_plain_cross_encoder():
    ranker = PyramidRanker.from_base("all-MiniLM-L6-v2", lower_layers=0)
    pyramid = torch.from_numpy(ranker.logits(QUERY, TITLES, SUMMARIES))
    torch.testing.assert_close(pyramid, plain_cross_encoder(ranker, QUERY, TITLES, SUMMARIES), atol=1e-5, rtol=1e-5)
