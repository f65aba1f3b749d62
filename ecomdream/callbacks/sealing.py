"""Callback signing secrets: made once, shown once, kept sealed (AES-256-GCM) in Postgres.

The sealing keys derive (HKDF) from the payload keys, which every real deployment must configure already
(`ECOMDREAM_PAYLOAD_KEYS`): one secret to keep and rotate, and a database dump alone opens no secret. A
sealed secret names the payload key it derives from, so it still opens after newer payload keys are added.
Without payload keys (sandbox development only; settings refuse live mode without them) a fixed,
public sandbox key is used.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import uuid
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ecomdream.codec.keys import PayloadKey, keys_from_settings
from ecomdream.config import ProviderMode, Settings

SECRET_BYTES = 32
SECRET_PREFIX = "whsec_"
SEAL_VERSION = "v1"
NONCE_BYTES = 12
SEAL_INFO = b"ecomdream callback secret"
# Public on purpose, like the sandboxes' own secrets: it protects nothing, and live mode never uses it.
SANDBOX_KEY = PayloadKey("sandbox", hashlib.sha256(b"ecomdream sandbox callback secrets").digest())


class SealedSecretError(ValueError):
    """A stored secret that the configured keys cannot open (the message names the key id, never a key)."""


def new_secret() -> str:
    """A fresh signing secret: `whsec_` + base64 of 32 random bytes (the Standard Webhooks format)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def _derive(key: PayloadKey) -> AESGCM:
    return AESGCM(HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=SEAL_INFO).derive(key.secret))


class SecretBox:
    """Seals with the newest key; opens with whichever key a sealed secret names."""

    def __init__(self, keys: Sequence[PayloadKey]) -> None:
        if not keys:
            raise ValueError("the secret box needs at least one key")
        self._ciphers = {key.key_id: _derive(key) for key in keys}
        self.current_key_id = keys[-1].key_id

    @classmethod
    def from_settings(cls, settings: Settings) -> SecretBox:
        """Keys derived from the payload keys; the public sandbox key only in sandbox development."""
        keys = keys_from_settings(settings)
        if keys:
            return cls(keys)
        if settings.provider_mode is ProviderMode.LIVE or settings.env == "production":
            raise ValueError(
                "set ECOMDREAM_PAYLOAD_KEYS: callback secrets are sealed with keys derived from them"
            )
        return cls([SANDBOX_KEY])

    def seal(self, secret: str, payment_id: uuid.UUID) -> str:
        """`v1:<key id>:<base64 nonce+ciphertext>`, bound to its payment (a copy on another row won't open)."""
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._ciphers[self.current_key_id].encrypt(nonce, secret.encode(), payment_id.bytes)
        return f"{SEAL_VERSION}:{self.current_key_id}:{base64.b64encode(nonce + sealed).decode()}"

    def open(self, sealed: str, payment_id: uuid.UUID) -> str:
        """The secret a `seal` stored for this payment."""
        version, _, rest = sealed.partition(":")
        key_id, _, data = rest.partition(":")
        cipher = self._ciphers.get(key_id)
        if version != SEAL_VERSION or cipher is None:
            raise SealedSecretError(f"callback secret sealed with key {key_id!r}, which is not configured")
        raw = base64.b64decode(data)
        try:
            return cipher.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], payment_id.bytes).decode()
        except InvalidTag:
            raise SealedSecretError(f"callback secret does not open with key {key_id!r}") from None
