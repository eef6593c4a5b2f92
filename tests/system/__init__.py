"""Runs of the whole program, marked system (tests/conftest.py)."""
