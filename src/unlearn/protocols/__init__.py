"""Benchmark protocols: one module each, one registry (see docs/architecture.md)."""
