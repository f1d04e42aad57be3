"""schemathesis against the collector's own OpenAPI document, served by a real process.

Every documented operation gets generated requests, schema-conforming and not. Each
response must not be a 5xx and must match the document: a status it lists, the content type
it lists and, where it gives one, the response schema. POST requests to the collect paths
run twice, once as generated and once with a valid server key, so that generated bodies get
past authentication to the parser.

The cases come from ``APIOperation.as_strategy`` under ``hypothesis.given`` because the
pytest loader ``schemathesis.pytest.from_fixture`` of schemathesis 4.32 fails on pytest 9
(``'Function' object has no attribute '_nodeid'``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import CollectorProcess, Keys

# Generated cases per operation. Operations without parameters stop after one case, so
# the module takes a few seconds.
MAX_EXAMPLES = 100
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
# The operations the document must list; a new route fails the listing test until added.
OPERATIONS = [
    "GET /healthz",
    "GET /readyz",
    "GET /metrics",
    "GET /sdk.js",
    "POST /collect",
    "OPTIONS /collect",
    "POST /debug/collect",
]
COLLECT_POSTS = {"POST /collect", "POST /debug/collect"}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[CollectorProcess, Keys]]:
    folder = tmp_path_factory.mktemp("openapi")
    keys = Keys(folder / "keys.json")
    process = CollectorProcess(folder / "data", {"COLLECTOR_KEYS_FILE": str(keys.path)})
    process.start()
    yield process, keys
    process.stop()


@pytest.fixture(scope="module")
def document(served: tuple[CollectorProcess, Keys]) -> schemathesis.BaseSchema:
    collector, _ = served
    loaded = schemathesis.openapi.from_url(collector.url + "/openapi.json", timeout=10)
    loaded.config.update(base_url=collector.url, request_timeout=10)
    return loaded


def label(operation: schemathesis.APIOperation) -> str:
    return f"{operation.method.upper()} {operation.path}"


def test_document_lists_every_operation(document: schemathesis.BaseSchema) -> None:
    labels = [label(result.ok()) for result in document.get_all_operations()]
    assert sorted(labels) == sorted(OPERATIONS)


def test_document_is_served_as_json(served: tuple[CollectorProcess, Keys]) -> None:
    collector, _ = served
    response = httpx.get(collector.url + "/openapi.json", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")


@pytest.mark.parametrize("operation_label", OPERATIONS)
def test_operation_conforms(
    document: schemathesis.BaseSchema,
    served: tuple[CollectorProcess, Keys],
    operation_label: str,
    tmp_path: Path,
) -> None:
    _, keys = served
    operation = document.find_operation_by_label(operation_label)
    assert operation is not None, f"{operation_label} is not in the document"
    cases = st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
    )

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        # No shrinking: a failure is reported with the case schemathesis printed for it.
        phases=[Phase.explicit, Phase.reuse, Phase.generate],
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    @given(case=cases)
    def check(case: schemathesis.Case) -> None:
        case.call_and_validate(checks=CHECKS)
        if operation_label in COLLECT_POSTS:
            case.call_and_validate(headers={"X-API-Key": keys.server}, checks=CHECKS)

    check()
