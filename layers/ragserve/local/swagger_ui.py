"""Swagger UI at /docs on the local server, over GET /v1/openapi.json, with the assets
of the ``swagger-ui-bundle-v2`` package (the demo extra): offline, no CDN. Local only:
API Gateway does not serve it."""

from __future__ import annotations

from pathlib import Path

from ragserve.local.gateway import GatewayResponse, _json_error

PREFIX = "/docs"
SPEC_URL = "/v1/openapi.json"
ASSETS = ("swagger-ui.css", "swagger-ui-bundle.js", "swagger-ui-standalone-preset.js", "favicon-32x32.png",
          "favicon-16x16.png")
CONTENT_TYPES = {".css": "text/css; charset=utf-8", ".js": "application/javascript; charset=utf-8",
                 ".png": "image/png"}

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>ragserve API</title>
  <link rel="stylesheet" href="{prefix}/swagger-ui.css">
  <link rel="icon" type="image/png" href="{prefix}/favicon-32x32.png" sizes="32x32">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="{prefix}/swagger-ui-bundle.js"></script>
  <script src="{prefix}/swagger-ui-standalone-preset.js"></script>
  <script>
    window.ui = SwaggerUIBundle({{
      url: "{spec}", dom_id: "#swagger-ui", deepLinking: true, persistAuthorization: true,
      presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset], layout: "StandaloneLayout"
    }});
  </script>
</body>
</html>
"""


def assets_dir() -> Path | None:
    """Where the installed bundle keeps its files; None without the demo extra."""
    try:
        from swagger_ui_bundle import swagger_ui_path
    except ImportError:
        return None
    return Path(str(swagger_ui_path))


def swagger_ui(method: str, path: str) -> GatewayResponse | None:
    """The answer for /docs and its assets; None for any other request."""
    if path != PREFIX and not path.startswith(PREFIX + "/"):
        return None
    if method not in ("GET", "HEAD"):
        return _json_error(405, "method_not_allowed", f"{method} is not allowed on {path}", "")
    name = path[len(PREFIX):].lstrip("/")
    directory = assets_dir()
    if directory is None:
        return _json_error(404, "not_found", "Swagger UI needs the demo extra: pip install -e '.[demo]'", "")
    if name in ("", "index.html"):
        page = PAGE.format(prefix=PREFIX, spec=SPEC_URL)
        return GatewayResponse(200, {"Content-Type": "text/html; charset=utf-8"}, page.encode("utf-8"))
    if name not in ASSETS:  # a fixed list: no path from the request ever reaches the file system
        return _json_error(404, "not_found", f"no route for {method} {path}", "")
    data = (directory / name).read_bytes()
    return GatewayResponse(200, {"Content-Type": CONTENT_TYPES[Path(name).suffix],
                                 "Cache-Control": "max-age=3600"}, data)

