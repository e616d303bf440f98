import math

import pytest

from foveal.documents import MAX_DOCUMENT_CHARS, format_timestamp, parse_document, parse_timestamp
from foveal.errors import DocumentError

#: The documented range of timestamps, 0001-01-01T00:00:00Z .. 9999-12-31T23:59:59Z, in epoch seconds.
MIN_TIMESTAMP, MAX_TIMESTAMP = -62135596800.0, 253402300799.0


def test_minimal_document_and_hash_is_content_based():
    a = parse_document({"_id": "x", "text": "hello"})
    b = parse_document({"_id": "x", "text": "hello", "metadata": {}})
    c = parse_document({"_id": "x", "text": "hello!"})
    assert a.id == "x" and a.title == "" and a.full_text == "hello"
    assert a.content_hash == b.content_hash != c.content_hash


def test_metadata_change_changes_hash():
    a = parse_document({"_id": "x", "text": "t", "metadata": {"a": 1}})
    b = parse_document({"_id": "x", "text": "t", "metadata": {"a": 2}})
    assert a.content_hash != b.content_hash


@pytest.mark.parametrize(
    "raw, message",
    [
        ([1, 2], "expected a JSON object"),
        ({"title": "t"}, "missing '_id'"),
        ({"_id": "  ", "text": "t"}, "'_id' is empty"),
        ({"_id": "a", "text": 5}, "'text' must be a string"),
        ({"_id": "a"}, "nothing to index"),
        ({"_id": "a", "title": "", "text": "   "}, "nothing to index"),
        ({"_id": "a", "text": "t", "metadata": [1]}, "'metadata' must be a JSON object"),
        ({"_id": "a", "text": "t", "timestamp": "yesterday"}, "not ISO 8601"),
        ({"_id": "a", "text": "t", "vector": [1.0, float("nan")]}, "NaN or infinite"),
        ({"_id": "a", "text": "t", "vector": [0.0, 0.0]}, "all zeros"),
        ({"_id": "a", "text": "t", "vector": ["x"]}, "numbers only"),
        ({"_id": "a", "text": "t", "vector": [True, 1.0]}, "numbers only"),
    ],
)
def test_bad_documents_say_why(raw, message):
    with pytest.raises(DocumentError, match=message):
        parse_document(raw, line=7)


def test_line_number_is_in_the_message():
    with pytest.raises(DocumentError) as info:
        parse_document({"_id": "a"}, line=42)
    assert info.value.line == 42 and str(info.value).startswith("line 42:")


def test_huge_document_is_refused_with_its_size():
    with pytest.raises(DocumentError, match="limit"):
        parse_document({"_id": "a", "text": "x" * (MAX_DOCUMENT_CHARS + 1)})


def test_vector_dimension_is_checked():
    with pytest.raises(DocumentError, match="dimension 3"):
        parse_document({"_id": "a", "text": "t", "vector": [1, 2, 3]}, dimension=4)
    doc = parse_document({"_id": "a", "vector": [1, 2, 3, 4]}, dimension=4)
    assert doc.vector == (1.0, 2.0, 3.0, 4.0)


def test_timestamps():
    assert parse_timestamp("1970-01-01T00:00:10Z") == 10.0
    assert parse_timestamp("1970-01-01T01:00:10+01:00") == 10.0
    assert parse_timestamp("1970-01-01T00:00:10") == 10.0  # naive is UTC
    assert parse_timestamp(12) == 12.0 and parse_timestamp(None) is None
    with pytest.raises(ValueError):
        parse_timestamp(math.inf)
    assert format_timestamp(10.0) == "1970-01-01T00:00:10Z"


@pytest.mark.parametrize("value", [1e300, -1e15, 10**400, "9999-12-31T23:59:59-05:00", "0001-01-01T00:00:00+00:01",
                                   "9999-12-31T23:59:59.5Z", MAX_TIMESTAMP + 1, MIN_TIMESTAMP - 1])
def test_timestamps_outside_years_1_to_9999_utc_are_refused(value):
    with pytest.raises(DocumentError, match="timestamp .* out of range"):
        parse_document({"_id": "a", "text": "t", "timestamp": value})


def test_timestamps_at_the_edges_are_kept_and_render():
    for text in ("0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z"):
        seconds = parse_document({"_id": "a", "text": "t", "timestamp": text}).timestamp
        assert format_timestamp(seconds) == text
    assert parse_timestamp(MIN_TIMESTAMP) == MIN_TIMESTAMP and parse_timestamp(MAX_TIMESTAMP) == MAX_TIMESTAMP
    from foveal import documents

    assert (documents.MIN_TIMESTAMP, documents.MAX_TIMESTAMP) == (MIN_TIMESTAMP, MAX_TIMESTAMP)


def test_a_stored_out_of_range_timestamp_still_renders():
    """An index written before the range was enforced may hold one: reads show its epoch seconds, never fail."""
    assert format_timestamp(1e300) == "1e+300" and format_timestamp(-1e15) == "-1000000000000000.0"


@pytest.mark.parametrize(
    "vector, message",
    [
        ([1.0, 1e39], r"'vector'\[1\] is 1e\+39: beyond float32"),
        ([-1e39, 1.0], r"'vector'\[0\] is -1e\+39"),
        ([1.0, 0.0, 1e-40], r"'vector'\[2\] is 1e-40: below float32's smallest normal"),
        ([1.0, -1e-320], r"'vector'\[1\]"),
        ([1e-30, 1e-30], "norm float32 cannot compute"),
        ([1e20, 1e20], "norm float32 cannot compute"),
        ([float("inf"), 1.0], r"'vector'\[0\] is inf: NaN or infinite"),
    ],
)
def test_vectors_float32_cannot_hold_are_refused_with_the_position(vector, message):
    with pytest.raises(DocumentError, match=message):
        parse_document({"_id": "a", "vector": vector})


def test_vectors_float32_can_hold_are_kept():
    for vector in ([1e18, 1.2e-38], [1e-15, 2e-15], [0.0, -3.0]):
        assert parse_document({"_id": "a", "vector": vector}).vector == tuple(vector)
