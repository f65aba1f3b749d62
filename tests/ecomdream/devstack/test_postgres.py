"""The embedded Postgres starts from any checkout location, as root or not, and opens no folder of the user's."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from ecomdream.devstack import postgres_home
from ecomdream.devstack.postgres import EmbeddedPostgres
from ecomdream.devstack.processes import credentials, free_port

AS_ROOT = os.geteuid() == 0


@pytest.fixture
def private_dir() -> Iterator[Path]:
    """A folder only its owner may enter, as `mktemp -d` or a home directory makes it."""
    path = Path(tempfile.mkdtemp(prefix="ecomdream-private-"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o700
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def system_root(monkeypatch: pytest.MonkeyPatch, private_dir: Path) -> Iterator[Path]:
    """A fresh system folder for root's Postgres, and a wheel that only root can reach (inside private_dir)."""
    root = Path(tempfile.mkdtemp(prefix="ecomdream-system-"))
    root.chmod(0o755)
    wheel = private_dir / "venv-site-packages"
    source = postgres_home.wheel_root()
    for part in postgres_home.INSTALL_PARTS:
        shutil.copytree(source / part, wheel / part, symlinks=True)
    monkeypatch.setattr(postgres_home, "SYSTEM_ROOT", root)
    monkeypatch.setattr(postgres_home, "wheel_root", lambda: wheel)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def modes(paths: list[Path]) -> dict[Path, int]:
    """Permission bits of each path."""
    return {path: stat.S_IMODE(path.stat().st_mode) for path in paths}


async def query(server: EmbeddedPostgres, sql: str) -> object:
    """Run sql on the application database as the service connects (TCP); its first value, if any."""
    engine = create_async_engine(server.url())
    try:
        async with engine.begin() as conn:
            result = await conn.execute(text(sql))
            return result.scalar() if result.returns_rows else None
    finally:
        await engine.dispose()


async def test_starts_with_its_data_in_a_private_folder_and_changes_no_folder_mode(
    private_dir: Path, system_root: Path
) -> None:
    data_dir = private_dir / "checkout" / ".data"
    data_dir.mkdir(parents=True)
    around = [*data_dir.parents, data_dir, *postgres_home.wheel_root().parents]
    before = modes(around)
    earlier_version = system_root / "install" / "17.0.0-0123456789ab"
    earlier_version.mkdir(parents=True)

    server = EmbeddedPostgres(data_dir, free_port())
    server.start()
    try:
        await query(server, "CREATE TABLE kept (id int)")
    finally:
        server.stop()
    again = EmbeddedPostgres(data_dir, free_port())
    again.start()
    try:
        assert await query(again, "SELECT count(*) FROM kept") == 0  # a second start finds its data
        assert await query(again, "SELECT current_database()") == "ecomdream"
    finally:
        again.stop()

    assert modes(around) == before
    cluster = data_dir / "postgres" / "data"
    if AS_ROOT:
        assert cluster.is_symlink()
        assert cluster.resolve() == again.pgdata
        assert system_root in again.pgdata.parents
        assert system_root in again.bin_dir.parents
        assert not earlier_version.exists()  # replaced by this version's copy
    else:
        assert not cluster.is_symlink()
        assert again.pgdata == cluster
        assert earlier_version.exists()  # the system folder is root's alone
    assert (again.pgdata / "PG_VERSION").exists()


def earlier_cluster(server: EmbeddedPostgres) -> None:
    """A cluster where earlier versions kept it, data_dir/postgres/data, with a marker file in it."""
    legacy = server.link
    legacy.mkdir(parents=True, mode=0o700)
    ids = credentials(server.user)
    if server.install is not None:
        server.install.ensure()
        os.chown(legacy, ids["user"], ids["group"])
    subprocess.run(
        [str(server.bin_dir / "initdb"), "-D", str(legacy), "-U", "postgres", "--auth=trust"],
        check=True,
        capture_output=True,
        **ids,
    )
    (legacy / "earlier-marker").write_text("kept")


async def test_a_cluster_kept_in_the_data_directory_is_found_again(system_root: Path) -> None:
    # As root, earlier versions opened the way to it for Postgres' user: a folder everyone may enter here.
    data_dir = system_root / "earlier-checkout"
    server = EmbeddedPostgres(data_dir, free_port())
    earlier_cluster(server)

    server.start()
    try:
        assert await query(server, "SELECT 1") == 1
    finally:
        server.stop()
    assert (server.pgdata / "earlier-marker").read_text() == "kept"
    assert (data_dir / "postgres" / "data" / "earlier-marker").exists()


def test_the_cluster_of_a_deleted_data_directory_goes_with_it(private_dir: Path, system_root: Path) -> None:
    kept, deleted = private_dir / "kept", private_dir / "deleted"
    servers = [EmbeddedPostgres(data_dir, free_port()) for data_dir in (kept, deleted)]
    for server in servers:
        server.init()
    shutil.rmtree(deleted)

    removed = postgres_home.collect_orphans()

    assert (servers[0].pgdata / "PG_VERSION").exists()
    assert not (servers[1].pgdata / "PG_VERSION").exists()
    if AS_ROOT:
        assert removed == [postgres_home.cluster_slot(deleted)]
    else:  # the clusters live in the data directories: nothing was put in the system folder
        assert removed == []
        assert list(system_root.iterdir()) == []
