"""Persistence: models, engine and sessions, data access and migrations."""
