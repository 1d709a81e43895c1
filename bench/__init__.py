"""Benchmarks of the platform: `python -m bench [NAME ...]` prints tables and writes JSON."""
