"""A property-based fuzzer (schemathesis) against a running `fcl web`, driven by the service's own
`/openapi.json`: valid and invalid paths, queries and bodies for every operation, with and
without the token. No answer may be a 5xx, and every answer must match what the document says
(status codes, content types, response schemas); POSTs must refuse a missing token."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.config._checks import NEGATIVE_DATA_REJECTION_EXPECTED_STATUSES, NegativeDataRejectionConfig
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from fcl.contract import model_types
from fcl.storage.db import Database
from fcl.web.routes import ENDPOINTS
from tests import factories
from tests.conftest import RunStack
from tests.integration.service_support import Service

# Its module fixtures are expensive: under xdist the whole module runs on one worker.
pytestmark = pytest.mark.xdist_group("test_api_fuzz")

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
    ignored_auth,
]


async def _seed(url: str) -> None:
    """Rows for the fuzzer to land on: a default dataset per model type, jobs and history."""
    db = Database(url, pool_size=1)
    try:
        for model_type in model_types.names():
            await factories.store(db, f"fincoach-{model_type}", model_type, threshold=1)
        await factories.failed_attempt(db, "fuzz", "goal", error_type="InvalidDataError")
    finally:
        await db.close()


@pytest.fixture(scope="session")  # once per worker: xdist may run other modules in between
def fuzzed(stack: RunStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    svc = Service(stack, tmp_path_factory.mktemp("fuzz"))
    try:
        asyncio.run(_seed(svc.database_url))
        svc.start("web")
        yield svc
    finally:
        svc.stop()


@pytest.fixture(scope="session")  # once per worker: xdist may run other modules in between
def web_schema(fuzzed: Service) -> schemathesis.BaseSchema:
    """The document the running service serves (not one built in this process)."""
    schema = schemathesis.openapi.from_url(fuzzed.base_url + "/openapi.json")
    # A negative body can be any size: one over FCL_HTTP_MAX_BODY_BYTES is refused with 413 before
    # it is read, which is a rejection too (schemathesis' list leaves it out).
    schema.config.checks.negative_data_rejection = NegativeDataRejectionConfig(
        expected_statuses=[*NEGATIVE_DATA_REJECTION_EXPECTED_STATUSES, "413"]
    )
    return schema


# One test per operation of the route table; each asks the served document for its operation.
# (schemathesis' lazy `from_fixture` loader does not work with pytest 9, so the loop is ours.)
# Negative cases need something to break: operations without parameters or body get positive ones.
OPERATIONS = [
    (e.method, e.path, mode)
    for e in ENDPOINTS
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if mode is GenerationMode.POSITIVE or e.path_params or e.query or e.body
]


@pytest.mark.parametrize(("method", "path", "mode"), OPERATIONS, ids=[f"{m} {p} {g.value}" for m, p, g in OPERATIONS])
def test_fuzzed_requests_get_documented_answers_and_never_a_5xx(
    web_schema: schemathesis.BaseSchema, fuzzed: Service, method: str, path: str, mode: GenerationMode
) -> None:
    operation = web_schema[path][method]
    headers = fuzzed.auth() if method == "POST" else None
    calls = []

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=int(os.environ.get("FCL_FUZZ_EXAMPLES", "40")),
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    def run(case: schemathesis.Case[Any]) -> None:
        response = case.call_and_validate(base_url=fuzzed.base_url, headers=headers, checks=CHECKS)
        calls.append(response.status_code)

    run()
    assert calls, "the fuzzer sent no request"
    assert all(status < 500 for status in calls)
