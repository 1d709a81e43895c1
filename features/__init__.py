"""Feast repo (definitions) and pure transforms from raw tables to per-cutoff feature tables."""
