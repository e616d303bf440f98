import math

import pytest

from foveal.documents import MAX_DOCUMENT_CHARS, format_timestamp, parse_document, parse_timestamp
from foveal.errors import DocumentError


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
