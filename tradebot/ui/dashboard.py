"""The web dashboard at /: a page built from frontend/ (TypeScript, lightweight-charts) into
tradebot/ui/static by ``make ui``. Everything it loads is served from here: no CDN, works offline.
Where the page was never built (no node), / says how to build it and the API works as before."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse, HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).parent / "static"
router = APIRouter(include_in_schema=False)

NOT_BUILT = """<!doctype html><html><head><meta charset="utf-8"><title>tradebot</title></head>
<body style="font-family: sans-serif; max-width: 40em; margin: 3em auto">
<h1>tradebot</h1>
<p>The dashboard has not been built. It needs Node.js and npm; from the project folder run</p>
<pre>make ui</pre>
<p>and reload this page. Everything else works without it: <a href="/docs">API docs</a>,
<a href="/health">health</a>, <a href="/account">account</a>.</p>
</body></html>"""


@router.get("/")
async def index() -> Response:
    """The dashboard, or how to build it."""
    page = STATIC / "index.html"
    if page.is_file():
        return FileResponse(page, headers={"Cache-Control": "no-cache"})
    return HTMLResponse(NOT_BUILT)


def mount(app: FastAPI) -> None:
    """Serve the dashboard page and its assets."""
    app.include_router(router)
    app.mount("/ui", StaticFiles(directory=STATIC, check_dir=False), name="ui")
