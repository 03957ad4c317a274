"""The explorer: GraphiQL, with every script, style and font it loads served by chatql itself.

The page is `page.html`; `static/` holds our glue (`explorer.js`) and the pinned third-party
bundles (`static/vendor/`, their licences beside them; `vendor.sh` fetches them again).
The page's Content-Security-Policy allows nothing from elsewhere, so an asset that slipped
back to a CDN would fail loudly in the browser test instead of working only when online.
"""

from __future__ import annotations

from pathlib import Path

from starlette.responses import HTMLResponse
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"
PREFIX = "/explorer"
PAGE = (HERE / "page.html").read_text(encoding="utf-8")

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        # React and CodeMirror set inline style attributes.
        "style-src 'self' 'unsafe-inline'",
        # GraphiQL's fonts and icons are data: URLs inside its stylesheet.
        "font-src 'self' data:",
        "img-src 'self' data:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)


def page() -> HTMLResponse:
    return HTMLResponse(
        PAGE,
        headers={
            "Content-Security-Policy": CONTENT_SECURITY_POLICY,
            "Cache-Control": "no-cache",
            "X-Content-Type-Options": "nosniff",
        },
    )


def routes() -> list[BaseRoute]:
    return [Mount(PREFIX, app=StaticFiles(directory=STATIC_DIR), name="explorer")]
