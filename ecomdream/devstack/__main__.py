"""`python -m ecomdream.devstack`: the whole embedded stack in the foreground; Ctrl-C stops every part.

If the launcher itself is killed, every part stops with it, and the next launcher on the same data
directory stops whatever survived before it starts.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from ecomdream.config import ProviderMode
from ecomdream.devstack.leftovers import StartRefused
from ecomdream.devstack.stack import Stack, StackPorts


def parse_args() -> argparse.Namespace:
    """Command-line flags (ports: 0 picks a free one)."""
    defaults = StackPorts()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", type=Path, default=Path(".data"))
    parser.add_argument("--api-port", type=int, default=defaults.api)
    parser.add_argument("--temporal-port", type=int, default=defaults.temporal)
    parser.add_argument("--temporal-ui-port", type=int, default=defaults.temporal_ui)
    parser.add_argument("--postgres-port", type=int, default=defaults.postgres)
    parser.add_argument("--s3-port", type=int, default=defaults.s3)
    parser.add_argument("--stripe-port", type=int, default=defaults.stripe)
    parser.add_argument("--replicate-port", type=int, default=defaults.replicate)
    parser.add_argument("--metrics-port", type=int, default=defaults.metrics)
    parser.add_argument("--worker-metrics-port", type=int, default=defaults.worker_metrics)
    parser.add_argument("--codec-server-port", type=int, default=defaults.codec_server)
    parser.add_argument("--smtp-port", type=int, default=defaults.smtp, help="the mail catcher")
    return parser.parse_args()


def banner(stack: Stack) -> str:
    """Every URL a developer needs, and which providers are in use."""
    p = stack.ports
    mode = (
        "SANDBOX (Stripe and Replicate sandboxes shipped with the project; no real money moves)"
        if stack.mode is ProviderMode.SANDBOX
        else "LIVE (real Stripe and Replicate keys are configured)"
    )
    lines = [
        "",
        "ecomdream is up",
        f"  providers        {mode}",
        f"  API              {stack.api_url}",
        f"  API docs         {stack.api_url}/docs",
        f"  readiness        {stack.api_url}/ready",
        f"  API metrics      http://127.0.0.1:{p.metrics}/metrics",
        f"  worker metrics   http://127.0.0.1:{p.worker_metrics}/metrics",
        f"  Temporal         127.0.0.1:{p.temporal}",
        f"  Temporal Web UI  http://127.0.0.1:{p.temporal_ui} (payloads decoded by the codec server)",
        f"  codec server     {stack.codec_url}",
        f"                   temporal ... --codec-endpoint {stack.codec_url} "
        f'--codec-auth "Bearer $(cat {stack.secrets.token_file})"',
        f"  payload keys     {stack.secrets.keys_file if not stack.secrets.keys_configured else 'from settings'}",
        f"  Postgres         {stack.postgres.url(driver='postgresql')}",
        f"  S3               {stack.s3.endpoint_url} (bucket {stack.s3.bucket})",
        f"  mail catcher     smtp://127.0.0.1:{p.smtp}: customer e-mail is kept, not sent, as .eml files in",
        f"                   {stack.mail.folder}",
    ]
    if stack.mode is ProviderMode.SANDBOX:
        lines += [f"  Stripe sandbox   {stack.stripe_url}", f"  Replicate sandbox {stack.replicate_url}"]
    lines += [f"  logs             {stack.data_dir / 'logs'}", "Press Ctrl-C to stop.", ""]
    return "\n".join(lines)


def main() -> None:
    """Start everything, print the URLs, wait for Ctrl-C or SIGTERM, stop everything."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args()
    ports = StackPorts(
        api=args.api_port,
        postgres=args.postgres_port,
        temporal=args.temporal_port,
        temporal_ui=args.temporal_ui_port,
        s3=args.s3_port,
        stripe=args.stripe_port,
        replicate=args.replicate_port,
        metrics=args.metrics_port,
        worker_metrics=args.worker_metrics_port,
        codec_server=args.codec_server_port,
        smtp=args.smtp_port,
    )
    stack = Stack(data_dir=args.data_dir, ports=ports)
    stop = threading.Event()
    # SIGHUP: the terminal closed.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: stop.set())
    try:
        stack.prepare()
    except StartRefused as refused:
        sys.exit(f"ecomdream.devstack: {refused}")
    try:
        stack.start_infrastructure()
        stack.start_app()
        print(banner(stack), flush=True)
        while not stop.wait(1.0):
            for part in (stack.api, stack.worker, stack.codec_server):
                if not part.running:
                    print(f"{part.name} stopped unexpectedly:\n{part.log_tail()}", flush=True)
                    stop.set()
    finally:
        print("stopping…", flush=True)
        stack.stop()
        print("stopped.", flush=True)


if __name__ == "__main__":
    main()
