"""A killed launcher takes its children along; the next one on the same data directory stops whatever
survived; a port held by another program stops the launcher with one clear line, before it starts anything."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import httpx
import psutil
import pytest

from ecomdream.devstack.leftovers import ProcessRecord, StartRefused, stop_recorded
from ecomdream.devstack.processes import http_ok
from ecomdream.devstack.stack import REPO_ROOT, Stack, StackPorts
from tests.ecomdream.devstack.test_postgres import query
from tests.fixtures.stack import eventually

PORT_FLAGS = (
    "api",
    "temporal",
    "temporal-ui",
    "postgres",
    "s3",
    "stripe",
    "replicate",
    "metrics",
    "worker-metrics",
    "codec-server",
    "smtp",
)
CHILDREN = {
    "postgres",
    "temporal",
    "s3",
    "stripe-sandbox",
    "replicate-sandbox",
    "worker",
    "api",
    "codec-server",
}


def launcher_argv(data_dir: Path, **ports: int) -> list[str]:
    """`python -m ecomdream.devstack` on data_dir, every port free unless given (`postgres=5432`)."""
    chosen = dict.fromkeys(PORT_FLAGS, 0) | {name.replace("_", "-"): p for name, p in ports.items()}
    flags = [f"--{flag}-port={port}" for flag, port in chosen.items()]
    return [sys.executable, "-m", "ecomdream.devstack", f"--data-dir={data_dir}", *flags]


def alive(pid: int) -> bool:
    """Whether pid runs (a zombie waiting to be reaped has stopped)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def recorded(data_dir: Path) -> dict[str, int]:
    """The children the data directory's run files name, by name."""
    pids = {}
    for path in (data_dir / "run").glob("*.pid"):
        record = ProcessRecord.read(path)
        if record is not None and path.stem != "launcher":
            pids[path.stem] = record.pid
    return pids


class Launcher:
    """One launcher process with its output in a file."""

    def __init__(self, data_dir: Path, output: Path) -> None:
        self.output = output
        with output.open("wb") as out:
            self.proc = subprocess.Popen(
                launcher_argv(data_dir), stdout=out, stderr=subprocess.STDOUT, cwd=REPO_ROOT
            )

    async def up(self) -> str:
        """Wait for the banner; the launcher's whole output."""

        async def text() -> str:
            return self.output.read_text(errors="replace")

        def done(out: str) -> bool:
            return "ecomdream is up" in out or self.proc.poll() is not None

        out = await eventually(text, done, within=150, every=0.2)
        assert "ecomdream is up" in out, out[-3000:]
        return out


@pytest.fixture
def launchers(tmp_path: Path) -> Iterator[list[Launcher]]:
    """Launchers a test starts; killed at the end, with anything they recorded in tmp_path/data."""
    started: list[Launcher] = []
    yield started
    for launcher in started:
        launcher.proc.kill()
        launcher.proc.wait()
    stop_recorded(tmp_path / "data" / "run")


async def test_a_killed_launcher_takes_every_child_along_and_the_next_one_comes_up(
    tmp_path: Path, launchers: list[Launcher]
) -> None:
    data_dir = tmp_path / "data"
    first = Launcher(data_dir, tmp_path / "first.out")
    launchers.append(first)
    await first.up()
    children = recorded(data_dir)
    assert set(children) == CHILDREN
    backends = [p.pid for p in psutil.Process(children["postgres"]).children()]
    assert backends

    first.proc.send_signal(signal.SIGKILL)  # as a crashed terminal does: no cleanup at all
    first.proc.wait()

    async def survivors() -> list[int]:
        return [pid for pid in [*children.values(), *backends] if alive(pid)]

    await eventually(survivors, lambda pids: pids == [], within=60)

    second = Launcher(data_dir, tmp_path / "second.out")
    launchers.append(second)
    banner = await second.up()
    api = re.search(r"API +(http://\S+)", banner)
    assert api is not None
    assert http_ok(f"{api[1]}/ready")
    # The Web UI decodes payloads through the codec server.
    ui, codec = re.search(r"Web UI +(http://\S+)", banner), re.search(r"codec server +(http://\S+)", banner)
    assert ui is not None
    assert codec is not None
    async with httpx.AsyncClient() as http:
        settings = (await http.get(f"{ui[1]}/api/v1/settings")).json()
    assert settings["Codec"]["Endpoint"] == codec[1]
    second.proc.send_signal(signal.SIGTERM)
    assert second.proc.wait(timeout=90) == 0
    assert list((data_dir / "run").glob("*.pid")) == []


async def test_the_next_stack_stops_the_servers_a_crashed_run_left_running(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    crashed = Stack(data_dir=data_dir, ports=StackPorts.free(), run_app=False)
    following = Stack(data_dir=data_dir, ports=crashed.ports, run_app=False)
    try:
        crashed.postgres.start()
        crashed.replicate.start()
        crashed.replicate.wait_ready(partial(http_ok, f"{crashed.replicate_url}/health"), timeout=30)
        await query(crashed.postgres, "CREATE TABLE kept (id int)")
        # The crashed launcher is gone: its Postgres is found through Postgres' own postmaster.pid alone.
        (data_dir / "run" / "postgres.pid").unlink()
        assert crashed.postgres.process.proc is not None
        assert crashed.replicate.proc is not None
        left = [crashed.postgres.process.proc.pid, crashed.replicate.proc.pid]

        following.prepare()

        assert [pid for pid in left if alive(pid)] == []
        following.postgres.start()  # same port, same cluster
        assert await query(following.postgres, "SELECT count(*) FROM kept") == 0
    finally:
        following.stop()
        crashed.stop()


def test_a_port_held_by_another_program_stops_the_launcher_with_one_line(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = subprocess.run(
            launcher_argv(data_dir, postgres=port), capture_output=True, text=True, cwd=REPO_ROOT, timeout=120
        )

    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert f"port {port} wanted by Postgres is taken by pid {os.getpid()} (" in line
    assert "pytest" in line
    assert not (data_dir / "logs").exists()  # nothing was started


def test_a_recorded_pid_now_used_by_another_program_is_left_alone(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    other = subprocess.Popen(["sleep", "60"])
    try:
        record = ProcessRecord.of(other.pid)
        recycled = ProcessRecord(pid=other.pid, started=record.started - 5, stop_signal=signal.SIGTERM)
        recycled.write(run_dir / "api.pid")
        assert stop_recorded(run_dir) == []
        assert other.poll() is None

        record.write(run_dir / "api.pid")
        assert stop_recorded(run_dir) == ["api"]
        assert not alive(other.pid)
    finally:
        other.kill()
        other.wait()


def test_a_data_dir_in_use_by_a_running_stack_is_refused(tmp_path: Path) -> None:
    running = subprocess.Popen(["sleep", "60"])
    try:
        ProcessRecord.of(running.pid).write(tmp_path / "run" / "launcher.pid")
        with pytest.raises(StartRefused, match=rf"in use by another running stack \(pid {running.pid} "):
            Stack(data_dir=tmp_path, ports=StackPorts.free()).prepare()
    finally:
        running.kill()
        running.wait()
    Stack(data_dir=tmp_path, ports=StackPorts.free()).prepare()  # its launcher is gone: the data dir is free
