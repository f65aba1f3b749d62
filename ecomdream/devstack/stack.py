"""The embedded stack: Postgres, Temporal, S3, the provider sandboxes, the worker and the API, in order."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from temporalio.client import Client

from ecomdream.clients.temporal import connect_temporal
from ecomdream.config import SANDBOX_STRIPE_WEBHOOK_SECRET, ProviderMode, Settings
from ecomdream.devstack.codec import DevSecrets
from ecomdream.devstack.leftovers import check_ports, claim, release, stop_recorded
from ecomdream.devstack.mail import MailCatcher
from ecomdream.devstack.postgres import EmbeddedPostgres
from ecomdream.devstack.processes import ManagedProcess, free_port, http_ok
from ecomdream.devstack.s3 import SeaweedS3
from ecomdream.devstack.temporal import TemporalDevServer

log = logging.getLogger("ecomdream.devstack")

REPO_ROOT = Path(__file__).resolve().parents[2]
S3_ACCESS_KEY = "ecomdream"
S3_SECRET_KEY = "ecomdream-secret"
S3_BUCKET = "ecomdream"
# Development pace: look at a training every few seconds rather than production's 30 s (env overrides these).
DEV_DEFAULTS = {"ECOMDREAM_TRAINING_POLL_SECONDS": "5"}
MAIL_FROM = "ecomdream <models@ecomdream.localhost>"


@dataclass
class StackPorts:
    """Where each part listens; 0 means 'pick a free port'."""

    api: int = 8000
    postgres: int = 54329
    temporal: int = 7233
    temporal_ui: int | None = 8233
    s3: int = 8333
    stripe: int = 12111
    replicate: int = 12112
    metrics: int = 9100
    worker_metrics: int = 9101
    codec_server: int = 8234
    smtp: int = 1025

    @classmethod
    def free(cls) -> StackPorts:
        """Every port picked freely and no Web UI: for tests and benchmarks beside a running `make dev`."""
        return cls(
            api=0,
            postgres=0,
            temporal=0,
            temporal_ui=None,
            s3=0,
            stripe=0,
            replicate=0,
            metrics=0,
            worker_metrics=0,
            codec_server=0,
            smtp=0,
        )

    def resolved(self) -> StackPorts:
        """A copy where every 0 is replaced by a free port."""

        def pick(port: int) -> int:
            return port or free_port()

        ui = None if self.temporal_ui is None else pick(self.temporal_ui)
        return StackPorts(
            api=pick(self.api),
            postgres=pick(self.postgres),
            temporal=pick(self.temporal),
            temporal_ui=ui,
            s3=pick(self.s3),
            stripe=pick(self.stripe),
            replicate=pick(self.replicate),
            metrics=pick(self.metrics),
            worker_metrics=pick(self.worker_metrics),
            codec_server=pick(self.codec_server),
            smtp=pick(self.smtp),
        )


@dataclass
class Stack:
    """Starts and stops every part; `app_env()` is the environment the worker and API run with."""

    data_dir: Path
    ports: StackPorts = field(default_factory=StackPorts)
    run_app: bool = True
    extra_env: dict[str, str] = field(default_factory=dict)
    mode: ProviderMode = ProviderMode.SANDBOX

    def __post_init__(self) -> None:
        self.data_dir = self.data_dir.resolve()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        settings = Settings()
        self.mode = settings.provider_mode
        keys_configured = settings.payload_keys is not None or settings.payload_keys_file is not None
        self.secrets = DevSecrets(self.data_dir, keys_configured)
        self.requested_ports = self.ports
        self._assemble(self.requested_ports.resolved())

    def _assemble(self, ports: StackPorts) -> None:
        self.ports = p = ports
        self.postgres = EmbeddedPostgres(self.data_dir, p.postgres)
        codec_endpoint = self.codec_url if self.run_app else None
        self.temporal = TemporalDevServer(
            self.data_dir, p.temporal, p.temporal_ui, codec_endpoint=codec_endpoint
        )
        self.s3 = SeaweedS3(self.data_dir, p.s3, S3_BUCKET, S3_ACCESS_KEY, S3_SECRET_KEY)
        self.mail = MailCatcher(self.data_dir / "mail", p.smtp)
        self.stripe = self._python("stripe-sandbox", "-m", "ecomdream.sandbox.stripe", *self._stripe_args())
        self.replicate = self._python(
            "replicate-sandbox", "-m", "ecomdream.sandbox.replicate", *self._replicate_args()
        )
        self.worker = self._python("worker", str(REPO_ROOT / "worker.py"))
        self.api = self._python("api", "-m", "api")
        self.codec_server = self._python("codec-server", "-m", "ecomdream.codec")

    @property
    def api_url(self) -> str:
        """Base URL of the HTTP API."""
        return f"http://127.0.0.1:{self.ports.api}"

    @property
    def codec_url(self) -> str:
        """The codec server's endpoint (for `--codec-endpoint` and the Web UI)."""
        return f"http://127.0.0.1:{self.ports.codec_server}/codec"

    @property
    def stripe_url(self) -> str:
        """Base URL of the Stripe sandbox."""
        return f"http://127.0.0.1:{self.ports.stripe}"

    @property
    def replicate_url(self) -> str:
        """Base URL of the Replicate sandbox."""
        return f"http://127.0.0.1:{self.ports.replicate}"

    def app_env(self) -> dict[str, str]:
        """ECOMDREAM_* settings pointing the service at this stack."""
        env = {
            "ECOMDREAM_API_HOST": "127.0.0.1",
            "ECOMDREAM_API_PORT": str(self.ports.api),
            "ECOMDREAM_METRICS_PORT": str(self.ports.metrics),
            "ECOMDREAM_WORKER_METRICS_PORT": str(self.ports.worker_metrics),
            "ECOMDREAM_PUBLIC_API_URL": self.api_url,
            "ECOMDREAM_DATABASE_URL": self.postgres.url(),
            "ECOMDREAM_TEMPORAL_ADDRESS": self.temporal.address,
            "ECOMDREAM_S3_ENDPOINT_URL": self.s3.endpoint_url,
            "ECOMDREAM_S3_ACCESS_KEY_ID": S3_ACCESS_KEY,
            "ECOMDREAM_S3_SECRET_ACCESS_KEY": S3_SECRET_KEY,
            "ECOMDREAM_S3_BUCKET": S3_BUCKET,
            # Customer e-mail goes to the mail catcher, whatever `.env` says.
            "ECOMDREAM_SMTP_HOST": "127.0.0.1",
            "ECOMDREAM_SMTP_PORT": str(self.ports.smtp),
            "ECOMDREAM_SMTP_STARTTLS": "false",
            "ECOMDREAM_SMTP_TLS": "false",
            "ECOMDREAM_SMTP_FROM": MAIL_FROM,
        } | self.secrets.key_env()
        if self.mode is ProviderMode.SANDBOX:
            env |= {
                "ECOMDREAM_STRIPE_API_BASE": self.stripe_url,
                "ECOMDREAM_STRIPE_WEBHOOK_SECRET": SANDBOX_STRIPE_WEBHOOK_SECRET,
                "ECOMDREAM_REPLICATE_API_BASE": self.replicate_url,
            }
        return env

    def codec_server_env(self) -> dict[str, str]:
        """The codec server's own settings: its port, the operator token, and the dev Web UI let in."""
        ui = self.ports.temporal_ui
        env = {
            "ECOMDREAM_CODEC_SERVER_HOST": "127.0.0.1",
            "ECOMDREAM_CODEC_SERVER_PORT": str(self.ports.codec_server),
            "ECOMDREAM_CODEC_SERVER_TOKEN": self.secrets.token,
            "ECOMDREAM_CODEC_SERVER_OPEN_TO_UI": "false",
        }
        if ui is not None:
            # The dev UI has no login, so it cannot send the token: its origin is let in (development only).
            origins = f"http://127.0.0.1:{ui},http://localhost:{ui}"
            env |= {"ECOMDREAM_CODEC_SERVER_UI_ORIGINS": origins, "ECOMDREAM_CODEC_SERVER_OPEN_TO_UI": "true"}
        return env

    async def connect_temporal(self) -> Client:
        """A Temporal client of this stack with the service's data converter and payload keys."""
        return await connect_temporal(self.temporal.address, "default", self.secrets.payload_codec())

    def _python(self, name: str, *args: str) -> ManagedProcess:
        env = DEV_DEFAULTS | dict(os.environ) | self.extra_env
        return ManagedProcess.in_data_dir(
            name, [sys.executable, *args], self.data_dir, env=env, cwd=REPO_ROOT
        )

    def _stripe_args(self) -> list[str]:
        webhook = f"http://127.0.0.1:{self.ports.api}/api/v1/payments/webhook"
        return [
            "--host=127.0.0.1",
            f"--port={self.ports.stripe}",
            f"--webhook-url={webhook}",
            f"--webhook-secret={SANDBOX_STRIPE_WEBHOOK_SECRET}",
        ]

    def _replicate_args(self) -> list[str]:
        return ["--host=127.0.0.1", f"--port={self.ports.replicate}"]

    @property
    def run_dir(self) -> Path:
        """Where the launcher and every child record their pid."""
        return self.data_dir / "run"

    def wanted_ports(self) -> dict[str, int]:
        """The port of every part this stack will start, by the part's name."""
        p = self.ports
        wanted = {"Postgres": p.postgres, "Temporal": p.temporal, "S3": p.s3, "the mail catcher": p.smtp}
        if p.temporal_ui is not None:
            wanted["Temporal Web UI"] = p.temporal_ui
        if self.mode is ProviderMode.SANDBOX:
            wanted |= {"the Stripe sandbox": p.stripe, "the Replicate sandbox": p.replicate}
        if self.run_app:
            wanted |= {"the API": p.api, "API metrics": p.metrics, "worker metrics": p.worker_metrics}
            wanted["the codec server"] = p.codec_server
        return wanted

    def prepare(self) -> None:
        """Stop what a crashed run of this data directory left running, then check every port is free.

        Raises StartRefused (one line saying why) before anything is started.
        """
        claim(self.run_dir)
        stopped = stop_recorded(self.run_dir)
        for name in stopped:
            log.info("stopped %s, left running by an earlier run on %s", name, self.data_dir)
        if stopped:
            # Stopping them may have taken a while: by now a port found free before may serve another program.
            self._assemble(self.requested_ports.resolved())
        self.postgres.stop_leftover()
        check_ports(self.wanted_ports())
        self.secrets.ensure()

    def start_infrastructure(self) -> None:
        """Postgres, Temporal and S3 (started together) and the mail catcher, then migrations, then the
        sandboxes."""
        servers = (self.postgres, self.temporal, self.s3)
        for server in servers:
            server.launch()
        self.mail.start()
        for server in servers:
            server.wait()
        self.migrate()
        if self.mode is ProviderMode.SANDBOX:
            self.start_sandboxes()

    def start_sandboxes(self) -> None:
        """The Stripe and Replicate sandboxes."""
        for proc, url in ((self.stripe, self.stripe_url), (self.replicate, self.replicate_url)):
            proc.env = (proc.env or {}) | self.app_env()
            proc.start()
            proc.wait_ready(partial(http_ok, f"{url}/health"), timeout=30)

    def migrate(self) -> None:
        """Apply every migration to the stack's database."""
        from ecomdream.db.migrate import upgrade

        upgrade(self.postgres.url())

    def start_app(self) -> None:
        """The worker, the API and the codec server; ready when the worker polls its task queues and both
        servers answer."""
        worker_log = self.worker.log_path
        seen = worker_log.stat().st_size if worker_log.exists() else 0
        for proc in (self.worker, self.api):
            proc.env = (proc.env or {}) | self.app_env()
            proc.start()
        self.codec_server.env = (self.codec_server.env or {}) | self.app_env() | self.codec_server_env()
        self.codec_server.start()

        def polling() -> bool:
            with worker_log.open("rb") as log:
                log.seek(seen)
                return b"worker polling" in log.read()

        self.worker.wait_ready(polling, timeout=60)
        self.api.wait_ready(lambda: http_ok(f"{self.api_url}/ready"), timeout=60)
        health = f"http://127.0.0.1:{self.ports.codec_server}/health"
        self.codec_server.wait_ready(lambda: http_ok(health), timeout=30)

    def start(self) -> None:
        """Everything, in order, once the data directory is reclaimed and the ports checked."""
        self.prepare()
        self.start_infrastructure()
        if self.run_app:
            self.start_app()

    def stop(self) -> None:
        """Stop every child in reverse order; safe to call twice."""
        for part in (self.codec_server, self.api, self.worker, self.replicate, self.stripe):
            with contextlib.suppress(Exception):
                part.stop()
        for server in (self.temporal, self.s3, self.postgres, self.mail):
            with contextlib.suppress(Exception):
                server.stop()
        release(self.run_dir)
