"""The ASGI app, WebSocket protocol, HTTP API, auth, limits and the `salon` CLI."""
