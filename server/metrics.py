"""Prometheus metrics of the transport layer."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

CONNECTIONS = Gauge("salon_ws_connections", "Open WebSocket connections")
FRAMES_IN = Counter("salon_ws_frames_received_total", "WebSocket frames received")
EVENTS_OUT = Counter("salon_ws_events_sent_total", "WebSocket events sent")
CLIENT_ERRORS = Counter("salon_ws_errors_total", "Error events sent to clients", ["code"])
REFUSED = Counter("salon_ws_refused_total", "WebSocket upgrades refused", ["reason"])
