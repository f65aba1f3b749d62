"""`python -m api`: serve the API with uvicorn on the configured host and port."""

from __future__ import annotations

import logging

import uvicorn

from api.app import create_app
from ecomdream.config import Settings


def main() -> None:
    """Run the API until SIGINT/SIGTERM."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings()
    uvicorn.run(create_app(settings), host=settings.api_host, port=settings.api_port, log_level="info")


if __name__ == "__main__":
    main()
