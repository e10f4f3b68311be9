"""An OpenAPI fuzz of the whole API (schemathesis) against a real API process: no request, valid or
not, gets a 5xx, and a request the schema calls valid is never refused (the schema states every
constraint the API enforces). Bounded: a fixed number of examples per operation."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.helpers import free_port

EXAMPLES_PER_OPERATION = 25
# Refusals of schema-valid requests that OpenAPI cannot state: constraints between two parameters
# (start after end), bounds on a date-time (OpenAPI has no minimum for formats) and an opaque page
# cursor that only the server can make. Each is a 422 that says what to fix; every other
# constraint is in the schema.
UNSTATEABLE = (
    "is after end",
    "must be between 1970-01-01 and 2100-01-01",
    "must be before to",
    "must not be after to",
    "pass the next_cursor of a previous page",
)
READY_TIMEOUT_S = 60.0


@pytest.fixture(scope="module")
def api_url(redis_url: str, database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``python -m tradebot.api.history_service`` on a free port, against the test servers."""
    port = free_port()
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "DATABASE_URL": database_url,
        "API_PORT": str(port),
        "DATA_DIR": str(tmp_path_factory.mktemp("fuzz")),
        "LOG_LEVEL": "WARNING",
    }
    log = (tmp_path_factory.mktemp("fuzz-log") / "api.log").open("w")
    process = subprocess.Popen([sys.executable, "-m", "tradebot.api.history_service"], env=env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not _answers(url):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the API did not come up; see {log.name}")
            time.sleep(0.1)  # polling a condition (the port answering), bounded by the deadline
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/openapi.json", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def api_schema(api_url: str) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{api_url}/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schemathesis.check
def valid_requests_are_accepted(ctx: object, response: schemathesis.Response, case: schemathesis.Case) -> bool | None:
    """positive_data_acceptance, except for the refusals OpenAPI cannot express (UNSTATEABLE)."""
    if response.status_code == 422 and any(reason in response.text for reason in UNSTATEABLE):
        return None
    return positive_data_acceptance(ctx, response, case)  # type: ignore[arg-type]


@schema.parametrize()
@hypothesis_settings(
    max_examples=EXAMPLES_PER_OPERATION, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True
)
def test_no_request_gets_a_5xx_and_valid_ones_are_accepted(case: schemathesis.Case) -> None:
    case.call_and_validate(checks=[not_a_server_error, valid_requests_are_accepted])


def test_the_fuzz_reaches_every_documented_operation(api_url: str) -> None:
    paths = httpx.get(f"{api_url}/openapi.json").json()["paths"]
    assert {"/history/{symbol}", "/udf/history", "/webhooks/tradingview", "/health"} <= set(paths)
