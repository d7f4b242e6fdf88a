"""Shared foundations: where data lives, run records, typed parameters, model configs, book helpers."""
