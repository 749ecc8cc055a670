"""Crash-safe, private storage under the home directory: atomic writes, a lock, keys, sealed files."""
