"""Signed callbacks to API clients: where they may go (addresses) and how their secrets are kept (sealing)."""
