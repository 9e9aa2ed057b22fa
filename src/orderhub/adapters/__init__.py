"""Adapters: everything that talks to the outside world (database, platforms, files)."""
