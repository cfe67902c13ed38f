"""Metadata stores: memory, and SQLite, PostgreSQL and Redis for what must survive."""
