"""Test session: the real embedded stack, shared by every test."""

pytest_plugins = ["tests.fixtures.stack", "tests.fixtures.mail"]
