"""Serving the operator console (``/console``) and the chat widget (``/console/widget.js``).

The pages are built from console/ (TypeScript + Preact, Vite) into
server/console_static/, which is committed: ``salon serve`` needs no Node.js.
Every path under ``/console/`` that is not a built file gets ``index.html``
(the console routes in the browser). Hashed assets are cached for a year;
``index.html`` never, so a new release is picked up on reload. The pages get a
strict Content-Security-Policy (scripts only from this server, no framing).
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

STATIC_DIR = Path(__file__).parent / "console_static"

CSP = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",  # Preact sets style attributes (brand colours)
        "img-src 'self' data: blob: https:",  # tenant logos, signed media URLs
        "media-src 'self' blob: https:",
        "connect-src 'self' ws: wss: blob: data: https:",  # the ops socket, avatar GLBs
        "worker-src 'self' blob:",
        "font-src 'self' data:",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _not_built() -> Response:
    return JSONResponse(
        {
            "error": {
                "code": "console_not_built",
                "message": "the console is not built: run scripts/build-console",
            }
        },
        503,
    )


async def console_root(request: Request) -> Response:
    return RedirectResponse("/console/", status_code=308)


async def console_page(request: Request) -> Response:
    rel = request.path_params.get("path", "")
    root = STATIC_DIR.resolve()
    target = (root / rel).resolve() if rel else root / "index.html"
    # Only files inside the build folder; ``..`` or links out of it get the page.
    if rel and target.is_file() and root in target.parents:
        if target.name == "widget.js":
            # Embedded on other sites: no hash in its name, so revalidate each time.
            return FileResponse(
                target,
                media_type="text/javascript",
                headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
            )
        if target.suffix == ".html":  # index.html asked for by name: still the page
            return FileResponse(target, media_type="text/html", headers=PAGE_HEADERS)
        cache = "public, max-age=31536000, immutable" if rel.startswith("assets/") else "no-cache"
        return FileResponse(
            target, headers={"Cache-Control": cache, "X-Content-Type-Options": "nosniff"}
        )
    if "." in rel.rsplit("/", 1)[-1]:
        # A missing file (an old asset after a deploy): a 404, not the page.
        return JSONResponse({"error": {"code": "not_found", "message": "no such file"}}, 404)
    index = root / "index.html"
    if not index.is_file():
        return _not_built()
    return FileResponse(index, media_type="text/html", headers=PAGE_HEADERS)


console_routes: list[BaseRoute] = [
    Route("/console", console_root, methods=["GET", "HEAD"]),
    Route("/console/", console_page, methods=["GET", "HEAD"]),
    Route("/console/{path:path}", console_page, methods=["GET", "HEAD"]),
]
