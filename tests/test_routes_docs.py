"""/docs and /redoc work offline: their pages name no other host, and a real headless browser with
every other host unreachable renders them from the API's own assets."""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import uvicorn

from tests.helpers import free_port
from tests.storage_fixtures import migrated_database
from tradebot.api.history_service import create_app
from tradebot.common.config import Settings

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
URL = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']|url\(\s*["']?([^"')]+)""")
# Everything but the API's own address fails to resolve: the browser is offline.
OFFLINE = "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"


@pytest.fixture(scope="module")
async def dsn(database_url: str) -> str:
    return await migrated_database(database_url, "docs_test")


@pytest.fixture
async def client(dsn: str) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(Settings(_env_file=None, database_url=dsn))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http,
    ):
        yield http


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_docs_pages_reference_no_external_host(client: httpx.AsyncClient, page: str) -> None:
    html = (await client.get(page)).text
    references = [a or b for a, b in URL.findall(html)]
    assert references, html
    assert [ref for ref in references if re.match(r"(https?:)?//", ref)] == []
    assert not re.search(r"https?://", html), "an absolute URL would be fetched from elsewhere"
    for ref in references:
        asset = await client.get(ref)
        assert asset.status_code == 200, ref
        assert len(asset.content) > 1000, ref


@pytest.fixture
def served(dsn: str) -> Iterator[str]:
    """The API over HTTP on a free port, in a thread of this process."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(Settings(_env_file=None, database_url=dsn)), port=port))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(300):  # bounded wait for the socket (each try blocks up to 0.1 s)
            try:
                httpx.get(f"http://127.0.0.1:{port}/openapi.json", timeout=0.1)
                break
            except httpx.TransportError:
                thread.join(timeout=0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.mark.skipif(CHROMIUM is None, reason="needs chromium (the CI installs it)")
@pytest.mark.parametrize(("page", "rendered"), [("/docs", 'class="opblock-summary-path"'), ("/redoc", "api-content")])
def test_an_offline_browser_renders_the_docs(served: str, page: str, rendered: str) -> None:
    dom = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            OFFLINE,
            "--virtual-time-budget=15000",
            "--dump-dom",
            served + page,
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=True,
    ).stdout
    assert rendered in dom, dom[:2000]  # drawn by the JavaScript, from the OpenAPI document
    assert "/signals" in dom
