"""A development stack's payload keys and codec server token: generated once into its data directory."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ecomdream.codec.encryption import EncryptionCodec, codec_from_settings
from ecomdream.codec.keys import new_key
from ecomdream.config import Settings

DEV_KEY_ID = "dev1"


def secret_file(path: Path, make: Callable[[], str]) -> str:
    """The content of path, which is first created readable by its owner only, from make(), if missing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text()
    with os.fdopen(fd, "w") as file:
        file.write(make())
    return path.read_text()


@dataclass
class DevSecrets:
    """`payload-keys` (unless the environment configures its own keys) and `codec-server-token`."""

    data_dir: Path
    keys_configured: bool

    @property
    def keys_file(self) -> Path:
        """The generated key file (one `id:base64key` line; add newer keys below it to rotate)."""
        return self.data_dir / "payload-keys"

    @property
    def token_file(self) -> Path:
        """The operator token of the stack's codec server."""
        return self.data_dir / "codec-server-token"

    def ensure(self) -> None:
        """Generate whatever is missing; existing files are kept, so old histories still decode."""
        if not self.keys_configured:
            secret_file(self.keys_file, lambda: new_key(DEV_KEY_ID) + "\n")
        secret_file(self.token_file, lambda: secrets.token_urlsafe(32))

    @property
    def token(self) -> str:
        """The codec server's operator token."""
        return self.token_file.read_text().strip()

    def key_env(self) -> dict[str, str]:
        """ECOMDREAM_* settings that give a process the stack's keys."""
        return {} if self.keys_configured else {"ECOMDREAM_PAYLOAD_KEYS_FILE": str(self.keys_file)}

    def payload_codec(self) -> EncryptionCodec:
        """The codec of the stack's API and worker, for clients outside them (tests, benchmarks, recorders)."""
        settings = Settings() if self.keys_configured else Settings(payload_keys_file=self.keys_file)
        codec = codec_from_settings(settings)
        assert codec is not None, "keys are configured or generated"
        return codec
