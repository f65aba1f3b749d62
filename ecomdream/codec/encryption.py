"""The payload codec of every Temporal client (API, worker, tests, replay): AES-256-GCM, key id in the metadata.

Temporal keeps workflow inputs, results, signals and updates for the retention period; with this codec it
keeps them encrypted. Two kinds of payload stay readable on purpose, so operators can find their way without
the codec: a bare string (summaries, current details, provider ids — never personal data, which travels only
inside contract models) and the SDK's workflow metadata (the current details the Web UI shows).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.converter import PayloadCodec

from ecomdream.codec.keys import PayloadKey, keys_from_settings
from ecomdream.config import Settings

ENCODING = b"binary/encrypted"
KEY_ID = "encryption-key-id"
NONCE_BYTES = 12
# Payloads the Web UI and CLI show without a codec: UI texts and ids, and the SDK's workflow metadata.
READABLE_MESSAGE_TYPES = {b"temporal.api.sdk.v1.WorkflowMetadata"}


class PayloadDecryptError(ValueError):
    """An encrypted payload that the configured keys cannot open."""


class EncryptionCodec(PayloadCodec):
    """Encrypts with the newest key; decrypts with whichever configured key the payload names."""

    def __init__(self, keys: Sequence[PayloadKey]) -> None:
        if not keys:
            raise ValueError("the payload codec needs at least one key")
        self._ciphers = {key.key_id: AESGCM(key.secret) for key in keys}
        self.current_key_id = keys[-1].key_id

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        """Encrypt every payload that is not meant to stay readable."""
        return [payload if stays_readable(payload) else self._encrypt(payload) for payload in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        """Decrypt our payloads; others (plaintext histories recorded earlier) pass unchanged."""
        return [self._decrypt(payload) if is_encrypted(payload) else payload for payload in payloads]

    def _encrypt(self, payload: Payload) -> Payload:
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._ciphers[self.current_key_id].encrypt(nonce, payload.SerializeToString(), None)
        return Payload(
            metadata={"encoding": ENCODING, KEY_ID: self.current_key_id.encode()}, data=nonce + sealed
        )

    def _decrypt(self, payload: Payload) -> Payload:
        key_id = payload.metadata.get(KEY_ID, b"").decode(errors="replace")
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            known = ", ".join(sorted(self._ciphers))
            raise PayloadDecryptError(
                f"payload encrypted with key {key_id!r}, which is not configured (keys: {known}); "
                "add it back to the payload keys"
            )
        try:
            plain = cipher.decrypt(payload.data[:NONCE_BYTES], payload.data[NONCE_BYTES:], None)
        except InvalidTag:
            raise PayloadDecryptError(f"payload does not authenticate with key {key_id!r}") from None
        return Payload.FromString(plain)


def codec_from_settings(settings: Settings) -> EncryptionCodec | None:
    """The codec for the configured keys; None when none are (development without `make dev` only)."""
    keys = keys_from_settings(settings)
    return EncryptionCodec(keys) if keys else None


def is_encrypted(payload: Payload) -> bool:
    """Whether the payload was encrypted by this codec."""
    return payload.metadata.get("encoding") == ENCODING


def stays_readable(payload: Payload) -> bool:
    """A bare JSON string (a summary, details, an id) or the SDK's workflow metadata."""
    if payload.metadata.get("messageType") in READABLE_MESSAGE_TYPES:
        return True
    return payload.metadata.get("encoding") == b"json/plain" and payload.data.startswith(b'"')
