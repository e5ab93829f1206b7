"""Prometheus metrics of conversations (exposed by the server's /metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

MESSAGES = Counter("salon_messages_total", "Messages processed", ["role", "channel"])
TOKENS = Counter("salon_tokens_total", "Reply pieces streamed by the LLM provider", ["provider"])
RESPONSES = Counter("salon_responses_total", "Replies finished, by outcome", ["outcome"])
FIRST_TOKEN = Histogram(
    "salon_llm_first_token_seconds",
    "Time from request to the first streamed piece",
    ["provider"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
RESPONSE_TIME = Histogram(
    "salon_llm_response_seconds",
    "Time from request to the end of the reply",
    ["provider"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
