"""Durable store, migrations, hot state and the event log.

This layer imports nothing else of Salon's: agents and the server build on it.
"""
