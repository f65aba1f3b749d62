"""What a crashed run of the same data directory left running, and ports that another program holds.

Each child's pid file records its pid and start time, so a pid the system has since given to another
program is never signalled.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

LAUNCHER = "launcher"


class StartRefused(RuntimeError):
    """The stack cannot start; the message is one line that says why and what to do."""


@dataclass(frozen=True)
class ProcessRecord:
    """One running child, as written to `<data-dir>/run/<name>.pid`."""

    pid: int
    started: float
    stop_signal: int

    @classmethod
    def of(cls, pid: int, stop_signal: int = signal.SIGTERM) -> ProcessRecord:
        """The record of a live process."""
        return cls(pid=pid, started=psutil.Process(pid).create_time(), stop_signal=stop_signal)

    @classmethod
    def read(cls, path: Path) -> ProcessRecord | None:
        """The record in path, or None if it is missing or unreadable."""
        try:
            return cls(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def write(self, path: Path) -> None:
        """Write the record (atomically: a reader never sees half of it)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".tmp")
        partial.write_text(json.dumps(asdict(self)))
        partial.replace(path)

    def process(self) -> psutil.Process | None:
        """The recorded process if it still runs; None once it exited or its pid went to another program."""
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(self.pid)
            if abs(proc.create_time() - self.started) < 0.05 and proc.status() != psutil.STATUS_ZOMBIE:
                return proc
        return None


def stop_trees(targets: list[tuple[psutil.Process, int]], timeout: float = 30.0) -> None:
    """Send each process its signal, wait for them and their descendants; SIGKILL what runs after timeout."""
    family: list[psutil.Process] = []
    for proc, sig in targets:
        with contextlib.suppress(psutil.Error):
            family += [proc, *proc.children(recursive=True)]
            proc.send_signal(sig)
    _, alive = psutil.wait_procs(family, timeout=timeout)
    for member in alive:
        with contextlib.suppress(psutil.Error):
            member.kill()
    psutil.wait_procs(alive, timeout=5)


def claim(run_dir: Path) -> None:
    """Record this process as the data directory's launcher; refuse if another live launcher uses it."""
    path = run_dir / f"{LAUNCHER}.pid"
    previous = ProcessRecord.read(path)
    proc = previous.process() if previous is not None else None
    if proc is not None and proc.pid != os.getpid():
        raise StartRefused(
            f"{run_dir.parent} is in use by another running stack ({describe(proc)}): stop it first"
        )
    ProcessRecord.of(os.getpid()).write(path)


def release(run_dir: Path) -> None:
    """Forget this process as the data directory's launcher."""
    (run_dir / f"{LAUNCHER}.pid").unlink(missing_ok=True)


def stop_recorded(run_dir: Path) -> list[str]:
    """Stop every child a previous run recorded and left running; the names of those stopped."""
    targets: dict[str, tuple[psutil.Process, int]] = {}
    for path in sorted(run_dir.glob("*.pid")):
        if path.stem == LAUNCHER:
            continue
        record = ProcessRecord.read(path)
        proc = record.process() if record is not None else None
        if record is not None and proc is not None:
            targets[path.stem] = (proc, record.stop_signal)
        path.unlink(missing_ok=True)
    stop_trees(list(targets.values()))
    return list(targets)


def check_ports(wanted: Mapping[str, int]) -> None:
    """Refuse to start if any wanted port (part name → port) is already held on 127.0.0.1."""
    for part, port in wanted.items():
        if not _bindable(port):
            raise StartRefused(
                f"port {port} wanted by {part} is taken by {port_owner(port)}: "
                "stop that program or choose another port (0 picks a free one)"
            )


def port_owner(port: int) -> str:
    """Who listens on a TCP port: pid and command line when visible, else 'another program'."""
    with contextlib.suppress(psutil.Error):
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
                return describe(psutil.Process(conn.pid))
    return "another program"


def describe(proc: psutil.Process) -> str:
    """`pid N (command line)`, the command line cut to fit one line."""
    try:
        command = " ".join(proc.cmdline()) or proc.name()
    except psutil.Error:
        return f"pid {proc.pid}"
    if len(command) > 120:
        command = command[:117] + "..."
    return f"pid {proc.pid} ({command})"


def _bindable(port: int) -> bool:
    # SO_REUSEADDR as servers set it: only a listener (not a closing connection) makes the bind fail.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
