"""`python -m ecomdream.codec`: serve the codec server with uvicorn on its own host and port."""

from __future__ import annotations

import logging

import uvicorn

from ecomdream.codec.encryption import codec_from_settings
from ecomdream.codec.server import CodecServerConfig, create_codec_app
from ecomdream.config import Settings

log = logging.getLogger("ecomdream.codec")


def config_from_settings(settings: Settings) -> CodecServerConfig:
    """Namespace, token and Web UI origins from settings."""
    token = settings.codec_server_token.get_secret_value() if settings.codec_server_token else None
    origins = tuple(o.strip().rstrip("/") for o in settings.codec_server_ui_origins.split(",") if o.strip())
    return CodecServerConfig(
        namespace=settings.temporal_namespace,
        token=token,
        ui_origins=origins,
        open_to_ui=settings.codec_server_open_to_ui,
    )


def main() -> None:
    """Run until SIGINT/SIGTERM; refuse to start without payload keys."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings()
    codec = codec_from_settings(settings)
    if codec is None:
        raise SystemExit("the codec server needs ECOMDREAM_PAYLOAD_KEYS or ECOMDREAM_PAYLOAD_KEYS_FILE")
    config = config_from_settings(settings)
    if config.token is None and not config.open_to_ui:
        log.warning("no ECOMDREAM_CODEC_SERVER_TOKEN: every request will be refused")
    app = create_codec_app(codec, config)
    uvicorn.run(app, host=settings.codec_server_host, port=settings.codec_server_port, log_level="info")


if __name__ == "__main__":
    main()
