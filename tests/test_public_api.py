import foveal


def test_exported_members():
    assert sorted(foveal.__all__) == sorted(
        ["Document", "Engine", "FovealError", "Hit", "IndexConfig", "Pipeline", "SearchRequest", "SearchResponse",
         "parse_document", "__version__"]
    )
    for name in foveal.__all__:
        assert getattr(foveal, name) is not None
