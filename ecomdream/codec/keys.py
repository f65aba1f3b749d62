"""Payload keys: `id:base64key` entries (32-byte AES keys), newest last, from settings or a generated file."""

from __future__ import annotations

import base64
import binascii
import os
import re
from dataclasses import dataclass, field

from ecomdream.config import Settings

KEY_BYTES = 32
KEY_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


class PayloadKeyError(ValueError):
    """A key entry that cannot be used; the message names the entry, never the key."""


@dataclass(frozen=True)
class PayloadKey:
    """One AES-256 key and the id written next to every payload it encrypts."""

    key_id: str
    secret: bytes = field(repr=False)


def parse_keys(text: str, *, source: str) -> list[PayloadKey]:
    """Keys from `id:base64key` entries separated by commas or lines (`#` starts a comment), in order."""
    entries = [line.split("#", 1)[0].strip() for line in re.split(r"[,\n]", text)]
    keys = [_parse_entry(entry, source) for entry in entries if entry]
    ids = [key.key_id for key in keys]
    duplicates = sorted({key_id for key_id in ids if ids.count(key_id) > 1})
    if duplicates:
        raise PayloadKeyError(f"{source}: key id {', '.join(duplicates)} appears more than once")
    return keys


def _parse_entry(entry: str, source: str) -> PayloadKey:
    key_id, colon, encoded = entry.partition(":")
    if not colon or not KEY_ID.fullmatch(key_id):
        raise PayloadKeyError(
            f"{source}: an entry is not `id:base64key` with an id of letters, digits, `.`, `_` or `-`"
        )
    try:
        secret = base64.b64decode(encoded.strip(), validate=True)
    except binascii.Error:
        raise PayloadKeyError(f"{source}: key {key_id!r} is not valid base64") from None
    if len(secret) != KEY_BYTES:
        raise PayloadKeyError(f"{source}: key {key_id!r} has {len(secret)} bytes, AES-256 needs {KEY_BYTES}")
    return PayloadKey(key_id, secret)


def keys_from_settings(settings: Settings) -> list[PayloadKey]:
    """The configured keys, oldest first (none when encryption is not configured)."""
    if settings.payload_keys is not None:
        source, text = "ECOMDREAM_PAYLOAD_KEYS", settings.payload_keys.get_secret_value()
    elif settings.payload_keys_file is not None:
        path = settings.payload_keys_file
        source, text = f"ECOMDREAM_PAYLOAD_KEYS_FILE ({path})", path.read_text()
    else:
        return []
    keys = parse_keys(text, source=source)
    if not keys:
        raise PayloadKeyError(f"{source}: no key")
    return keys


def new_key(key_id: str) -> str:
    """A fresh random key as an `id:base64key` entry."""
    if not KEY_ID.fullmatch(key_id):
        raise PayloadKeyError(f"{key_id!r} cannot be a key id")
    return f"{key_id}:{base64.b64encode(os.urandom(KEY_BYTES)).decode()}"
