"""Property-based run over the app's own OpenAPI document (schemathesis + hypothesis): no input gives a 5xx.

Every operation gets a bounded number of generated requests (schemathesis's pytest fixture loader does not work
with this pytest, so the strategies are driven with hypothesis directly)."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings

from foveal.service.settings import ServiceSettings

EXAMPLES = 12


def test_no_input_gives_a_5xx(engine, tiny):
    from foveal.api.app import create_app

    app = create_app(engine, settings=ServiceSettings(max_batch_docs=20, max_doc_bytes=20_000))
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    seen = []
    for result in schema.get_all_operations():
        operation = result.ok()
        seen.append(f"{operation.method.upper()} {operation.path}")

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
        def check(case):
            response = case.call()
            assert response.status_code < 500, (
                f"{case.method} {case.formatted_path} {case.body!r} -> {response.status_code}: {response.text}")

        check()
    assert "POST /v1/indexes/{name}/documents" in seen and "GET /v1/jobs/{job_id}" in seen
