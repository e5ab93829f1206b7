"""Personas, the turn engine, LLM providers and conversation logic (no sockets, no HTTP)."""
