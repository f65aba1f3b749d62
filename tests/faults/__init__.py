"""Fault injection against the real embedded stack: crashes, outages, misbehaving providers, hostile webhooks."""
