"""Helpers for tests that use real parts: the tansu broker and PostgreSQL from pgserver."""
