"""Run Alembic migrations programmatically (make dev, the tests, the compose `migrate` service)."""

from __future__ import annotations

import sys
from pathlib import Path

from alembic import command
from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"


def alembic_config(url: str) -> Config:
    """An Alembic config for our migrations directory and the given database URL."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option(
        "file_template", "%%(year)d-%%(month).2d-%%(day).2d-%%(hour).2d%%(minute).2d_%%(slug)s"
    )
    config.attributes["database_url"] = url
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Apply migrations up to revision."""
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str = "base") -> None:
    """Revert migrations down to revision."""
    command.downgrade(alembic_config(url), revision)


def main() -> None:
    """`python -m ecomdream.db.migrate [upgrade|downgrade] [revision]` with the URL from settings."""
    from ecomdream.config import Settings

    action = sys.argv[1] if len(sys.argv) > 1 else "upgrade"
    url = Settings().database_url.get_secret_value()
    if action == "downgrade":
        downgrade(url, sys.argv[2] if len(sys.argv) > 2 else "base")
    else:
        upgrade(url, sys.argv[2] if len(sys.argv) > 2 else "head")


if __name__ == "__main__":
    main()
