"""The labels the benchmarks print beside their figures name the precision the queries really ran in."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import peers  # noqa: E402


@pytest.mark.parametrize("settings,label", [
    ({}, "documents torch, queries onnx mixed int8"),  # the default for new indexes
    ({"query_quantize": "none"}, "documents torch, queries onnx fp32"),
    ({"query_quantize": "int8"}, "documents torch, queries onnx int8"),
    ({"backend": "onnx", "quantize": "int8"}, "documents onnx int8, queries onnx int8"),
])
def test_peers_names_the_query_precision(settings, label):
    assert peers.encoder_label(settings) == label
