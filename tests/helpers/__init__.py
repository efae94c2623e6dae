"""Shared test helpers: tiny models, corpora and runners the test modules build on (no tests here)."""
