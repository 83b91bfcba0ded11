"""GraphiQL, served with its scripts and styles from the package (no CDN: it works offline).

The files under ``server/static/graphiql/`` are GraphiQL 2.4.7 and React 18.3.1
as published on the npm registry, unmodified, with their licences.
"""

from __future__ import annotations

import json
from importlib import resources

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

ASSETS = {
    "graphiql.min.js": "text/javascript; charset=utf-8",
    "graphiql.min.css": "text/css; charset=utf-8",
    "react.production.min.js": "text/javascript; charset=utf-8",
    "react-dom.production.min.js": "text/javascript; charset=utf-8",
}
PREFIX = "/graphiql/"

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>pledgeql GraphiQL</title>
<meta name="referrer" content="no-referrer">
<link rel="stylesheet" href="{prefix}graphiql.min.css"></head>
<body style="margin:0"><div id="graphiql" style="height:100vh"></div>
<script src="{prefix}react.production.min.js"></script>
<script src="{prefix}react-dom.production.min.js"></script>
<script src="{prefix}graphiql.min.js"></script>
<script>
const settings = {settings};
const fetcher = GraphiQL.createFetcher({{url: location.pathname}});
ReactDOM.createRoot(document.getElementById("graphiql")).render(React.createElement(GraphiQL, {{
  fetcher,
  defaultQuery: settings.query,
  defaultHeaders: settings.headers,
  shouldPersistHeaders: false,
}}));
</script></body></html>"""

PUBLIC_QUERY = (
    "# The public policy needs no token. Put one in the Authorization header (Headers, below) for the rest.\n"
)
PUBLIC_QUERY += "query PolicyVersions {\n  policyVersions\n}\n"
SIGNED_IN_QUERY = (
    "# Signed in with the demo token (Headers, below).\nquery Me {\n  me {\n    role\n    allowedPurposes\n  }\n}\n"
)


def graphiql_page(token: str | None) -> HTMLResponse:
    """The page; with a token (``serve --demo``) its Authorization header is prefilled, else empty."""
    headers = {"Authorization": f"Bearer {token}" if token else "", "X-Purpose": "INSTRUCTION"}
    settings = {
        "headers": json.dumps(headers, indent=2),
        "query": SIGNED_IN_QUERY if token else PUBLIC_QUERY,
    }
    # JSON inside a script element: "<" escaped so that no value can close it.
    embedded = json.dumps(settings).replace("<", "\\u003c")
    # The page may hold a development token: never kept by a browser's or a proxy's cache.
    return HTMLResponse(PAGE.format(prefix=PREFIX, settings=embedded), headers={"cache-control": "no-store"})


def graphiql_asset(request: Request) -> Response:
    name = request.path_params["name"]
    media = ASSETS.get(name)
    if media is None:
        return Response("Not found", 404, media_type="text/plain")
    body = resources.files("server").joinpath("static", "graphiql", name).read_bytes()
    return Response(body, media_type=media, headers={"cache-control": "public, max-age=86400"})
