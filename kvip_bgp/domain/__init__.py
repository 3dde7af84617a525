"""Frozen values and pure decisions; imports only the standard library."""
