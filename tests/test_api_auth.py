"""Exposure and auth: loopback by default, no token no exposure, bearer tokens, body limits, CORS."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import APIRouter, FastAPI

from tests.storage_fixtures import migrated_database
from tradebot.api.auth import TokenDep, check_exposure
from tradebot.api.history_service import create_app
from tradebot.common.config import Settings, SettingsError

probe = APIRouter()


@probe.post("/probe")
async def mutate(_: TokenDep, body: dict) -> dict:
    return {"changed": True, "size": len(body)}


async def client_for(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app: FastAPI = create_app(settings)
    app.include_router(probe)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client,
    ):
        yield client


@pytest.fixture(scope="module")
async def dsn(database_url: str) -> str:
    return await migrated_database(database_url, "auth_test")


@pytest.fixture
async def open_api(dsn: str) -> AsyncIterator[httpx.AsyncClient]:
    async for client in client_for(Settings(_env_file=None, database_url=dsn)):
        yield client


@pytest.fixture
async def guarded_api(dsn: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        _env_file=None,
        database_url=dsn,
        api_token="s3cret-token",
        api_max_body_bytes=2048,
        cors_origins="http://a.example",
    )
    async for client in client_for(settings):
        yield client


def test_the_api_listens_on_loopback_by_default() -> None:
    assert Settings(_env_file=None).api_host == "127.0.0.1"


def test_binding_beyond_loopback_without_a_token_refuses_to_start_in_one_line() -> None:
    with pytest.raises(SettingsError) as refused:
        check_exposure(Settings(_env_file=None, api_host="0.0.0.0"))
    assert "set API_TOKEN" in str(refused.value)
    assert "\n" not in str(refused.value)
    check_exposure(Settings(_env_file=None, api_host="0.0.0.0", api_token="t"))  # with a token it starts


async def test_mutating_without_a_configured_token_is_403_saying_what_to_set(open_api: httpx.AsyncClient) -> None:
    response = await open_api.post("/probe", json={})
    assert response.status_code == 403
    assert "set API_TOKEN" in response.json()["detail"]


@pytest.mark.parametrize(
    ("headers", "says"),
    [
        ({}, "missing bearer token"),
        ({"Authorization": "Bearer nope"}, "wrong"),
        ({"Authorization": "s3cret-token"}, "missing"),
    ],
)
async def test_a_missing_or_wrong_token_is_401(guarded_api: httpx.AsyncClient, headers: dict, says: str) -> None:
    response = await guarded_api.post("/probe", json={}, headers=headers)
    assert response.status_code == 401
    assert says in response.json()["detail"]
    assert response.headers["www-authenticate"] == "Bearer"


async def test_the_right_token_passes(guarded_api: httpx.AsyncClient) -> None:
    response = await guarded_api.post("/probe", json={"a": 1}, headers={"Authorization": "Bearer s3cret-token"})
    assert response.status_code == 200
    assert response.json() == {"changed": True, "size": 1}


async def test_a_body_over_the_limit_is_413_before_the_endpoint_runs(guarded_api: httpx.AsyncClient) -> None:
    big = {"x": "y" * 4096}
    response = await guarded_api.post("/probe", json=big, headers={"Authorization": "Bearer s3cret-token"})
    assert response.status_code == 413
    assert "API_MAX_BODY_BYTES" in response.json()["detail"]


async def test_cors_is_closed_by_default_and_open_only_to_named_origins(
    open_api: httpx.AsyncClient, guarded_api: httpx.AsyncClient
) -> None:
    asked = {"Origin": "http://a.example", "Access-Control-Request-Method": "GET"}
    assert "access-control-allow-origin" not in (await open_api.options("/health", headers=asked)).headers
    allowed = await guarded_api.options("/health", headers=asked)
    assert allowed.headers["access-control-allow-origin"] == "http://a.example"
    other = await guarded_api.get("/udf/config", headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in other.headers
