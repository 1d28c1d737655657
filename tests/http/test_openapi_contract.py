"""The OpenAPI document is the contract: schemathesis generates requests from it for every
non-destructive operation (valid and invalid ones) and checks every answer against it: status
codes declared, bodies that match their schemas, content types, no server errors. Random bytes in a
schema-valid file field are rightly refused, so that one check (positive_data_acceptance) is off;
deleting the caller's account, keys or history and rolling keys are left out."""

from __future__ import annotations

import logging

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

pytestmark = [pytest.mark.http, pytest.mark.slow]

log = logging.getLogger(__name__)

EXAMPLES = 25


def _destructive(method: str, path: str) -> bool:
    return method == "DELETE" or path.endswith("/roll")


def test_the_app_keeps_to_its_openapi_document(client, service_module, auth_headers) -> None:
    from schemathesis.checks import positive_data_acceptance

    schema = schemathesis.openapi.from_asgi("/openapi.json", service_module.app)
    failures, exercised = [], []
    for result in schema.get_all_operations():
        operation = result.ok()
        method = operation.method.upper()
        if _destructive(method, operation.path):
            continue
        calls = 0

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        def check(case) -> None:
            nonlocal calls
            calls += 1
            case.call_and_validate(headers=auth_headers, excluded_checks=[positive_data_acceptance])

        try:
            check()
        except BaseException as exc:  # hypothesis raises schemathesis' failure group
            failures.append(f"{method} {operation.path}: {str(exc)[:2000]}")
        exercised.append((method, operation.path, calls))
    log.info("exercised %s", exercised)
    assert len(exercised) >= 15 and all(calls > 0 for *_, calls in exercised), exercised
    assert not failures, "\n\n".join(failures)


def test_openapi_names_its_security_schemes_and_email_format(client) -> None:
    spec = client.get("/openapi.json").json()
    schemes = spec["components"]["securitySchemes"]
    assert schemes["APIKeyHeader"] == {
        "type": "apiKey",
        "in": "header",
        "name": "x-api-key",
        "description": "an API key (vk_live_...)",
    }
    assert schemes["HTTPBearer"]["scheme"] == "bearer"
    usage = spec["paths"]["/v1/usage"]["get"]
    assert {"APIKeyHeader": []} in usage["security"] and {"HTTPBearer": []} in usage["security"]
    assert spec["components"]["schemas"]["Credentials"]["properties"]["email"]["format"] == "email"
