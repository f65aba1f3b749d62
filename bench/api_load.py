"""Benchmark the read endpoints under many concurrent clients: /health, /versions/info and /prompts/list.

Run from the repo root: ``python bench/api_load.py [--seconds 30] [--clients 100]``.
Starts the embedded stack (free ports, temporary directory; stopped at the end, also on Ctrl-C), creates a
few ready models with some prompts through the customer flow, then loads each endpoint in its own phase
(``--seconds`` each, after a short warm-up) and prints requests/s, p50, p99 and errors side by side.
Only 127.0.0.1 is contacted; every loop ends at its phase deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import warnings
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    # Lets `python bench/api_load.py` run without the package being installed.
    sys.path.insert(0, str(REPO_ROOT))
# Harmless in a container without a login session (pytest filters it the same way).
warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")

import httpx  # noqa: E402
import psutil  # noqa: E402
from _stack import (  # noqa: E402
    MACHINE,
    PHOTO_COUNT,
    StackDied,
    StepFailed,
    api_client,
    browser_client,
    configure_replicate_sandbox,
    cpu_seconds,
    embedded_stack,
    fast_sandbox_env,
    fmt_ms,
    generate,
    log_tails,
    machine_busy_seconds,
    percentile,
    pool_limits,
    ready_model,
    run_watched,
    table,
)

from ecomdream.devstack.stack import Stack  # noqa: E402
from tests.fixtures.photos import valid_photos  # noqa: E402
from tests.fixtures.wallet import WALLET  # noqa: E402

SETUP_TIMEOUT_S = 120.0
CLIENTS = {
    "raw": "asyncio streams, one keep-alive HTTP/1.1 connection each",
    "httpx": "one httpx.AsyncClient, keep-alive pool",
}
SANDBOX_SECONDS = 0.05
ERROR_PAUSE_S = 0.01


@dataclass
class Phase:
    """One endpoint's load phase and what it measured."""

    name: str
    # The i-th request: (path, bearer token or None).
    path: Callable[[int], tuple[str, str | None]]
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    window: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)


class RawConnection:
    """A minimal HTTP/1.1 keep-alive GET client (Content-Length bodies only) that costs little CPU per request."""

    # httpx spends ~10x more CPU per request; with the load generator sharing the cores with the server,
    # that CPU would be taken from the server under test (measured: ~1 core of httpx for ~500 req/s).

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, path: str, token: str | None) -> int:
        """GET path (with the customer's token); returns the status code after reading the whole body."""
        if self.writer is None or self.reader is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        auth = f"Authorization: Bearer {token}\r\n" if token else ""
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n{auth}\r\n".encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = None
        for line in head.lower().split(b"\r\n")[1:]:
            if line.startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        if length is None:
            raise ValueError("response without Content-Length")
        await self.reader.readexactly(length)
        if b"\r\nconnection: close" in head.lower():
            self.close()
        return status

    def close(self) -> None:
        """Drop the connection (the next request opens a new one)."""
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


Getter = Callable[[str, str | None], Awaitable[int]]


async def one_client(
    get: Getter, phase: Phase, first: int, step: int, measure_from: float, deadline: float
) -> None:
    """Request back to back until the deadline; only requests started after `measure_from` are recorded."""
    i = first
    while (started := time.perf_counter()) < deadline:
        path, token = phase.path(i)
        i += step
        error = None
        try:
            status = await get(path, token)
            if status != 200:
                error = f"HTTP {status}"
        except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError, httpx.HTTPError) as exc:
            error = type(exc).__name__
        elapsed = time.perf_counter() - started
        if started >= measure_from:
            if error is None:
                phase.latencies.append(elapsed)
            else:
                phase.errors[error] += 1
        if error is not None:
            await asyncio.sleep(ERROR_PAUSE_S)


def raw_getter(stack: Stack, timeout: float) -> tuple[Getter, Callable[[], None]]:
    """One raw keep-alive connection: (get, close)."""
    connection = RawConnection("127.0.0.1", stack.ports.api)

    async def get(path: str, token: str | None) -> int:
        try:
            async with asyncio.timeout(timeout):
                return await connection.get(path, token)
        except BaseException:
            connection.close()
            raise

    return get, connection.close


def cpu_snapshot(stack: Stack) -> dict[str, float]:
    """CPU seconds so far: the API, this process, and the whole machine."""
    parts = cpu_seconds(stack)
    return {"api": parts["api"], "bench": parts["bench (load gen)"], MACHINE: machine_busy_seconds()}


async def run_phase(stack: Stack, phase: Phase, args: argparse.Namespace) -> None:
    """Load one endpoint with `--clients` concurrent clients for warm-up + `--seconds`."""
    start = time.perf_counter()
    measure_from = start + args.warmup
    deadline = measure_from + args.seconds

    async def measure_cpu() -> None:
        await asyncio.sleep(max(0.0, measure_from - time.perf_counter()))
        before = cpu_snapshot(stack)
        await asyncio.sleep(max(0.0, deadline - time.perf_counter()))
        after = cpu_snapshot(stack)
        phase.cpu = {name: (after[name] - before[name]) / args.seconds for name in after}

    def clients(getters: Sequence[Getter]) -> list[Awaitable[None]]:
        return [
            one_client(get, phase, n, args.clients, measure_from, deadline) for n, get in enumerate(getters)
        ]

    if args.client == "httpx":
        async with httpx.AsyncClient(
            base_url=stack.api_url, timeout=httpx.Timeout(args.timeout), limits=pool_limits(args.clients)
        ) as client:

            async def get(path: str, token: str | None) -> int:
                headers = {"Authorization": f"Bearer {token}"} if token else None
                return (await client.get(path, headers=headers)).status_code

            await asyncio.gather(measure_cpu(), *clients([get] * args.clients))
    else:
        pairs = [raw_getter(stack, args.timeout) for _ in range(args.clients)]
        try:
            await asyncio.gather(measure_cpu(), *clients([get for get, _ in pairs]))
        finally:
            for _, close in pairs:
                close()
    phase.window = deadline - measure_from


async def setup(stack: Stack, args: argparse.Namespace) -> list[tuple[str, str]]:
    """Ready models with prompts, made through the customer flow; returns (version id, its token) each."""
    await configure_replicate_sandbox(stack, SANDBOX_SECONDS, SANDBOX_SECONDS)
    temporal = await stack.connect_temporal()
    photos = valid_photos(PHOTO_COUNT)
    async with (
        api_client(stack, args.models * 4 + 10, SETUP_TIMEOUT_S) as api,
        browser_client(args.models * 2 + 10, SETUP_TIMEOUT_S) as browser,
    ):

        async def model_with_prompts(index: int) -> str:
            _, version_id = await ready_model(api, browser, temporal, photos, SETUP_TIMEOUT_S)
            for n in range(args.prompts):
                await generate(api, version_id, f"model {index} prompt {n} on a beach", SETUP_TIMEOUT_S)
            return version_id

        versions = await asyncio.gather(*(model_with_prompts(i) for i in range(args.models)))
        for version_id in versions:
            listed = (await api.get(f"/api/v1/prompts/list/{version_id}", params={"limit": 100})).json()
            if len(listed["prompts"]) != args.prompts:
                raise StepFailed("setup", f"{version_id} lists {len(listed['prompts'])} prompts")
    return [(version_id, WALLET.token(version_id)) for version_id in versions]


def with_token(route: str, versions: Sequence[tuple[str, str]], i: int) -> tuple[str, str]:
    """The i-th request of a customer route: rotate over the models, each with its owner's token."""
    version_id, token = versions[i % len(versions)]
    return f"{route}/{version_id}", token


def header(args: argparse.Namespace, versions: Sequence[tuple[str, str]]) -> str:
    """What is measured, and the caveat about the shared machine."""
    cores = psutil.cpu_count() or 1
    return f"""\
ecomdream API load bench: {args.clients} concurrent clients ({CLIENTS[args.client]}), \
{args.seconds:g} s per endpoint after a {args.warmup:g} s warm-up, endpoints one after another
data: {len(versions)} ready models x {args.prompts} prompts (1 image each); info and list requests rotate \
over the models, each request with its owner's `Authorization: Bearer` token (checked on every request); \
list uses the default page (limit 20)
NOTE: the load generator runs in this Python process on the same {cores} cores as the API (one uvicorn \
process), Postgres, Temporal, the worker and S3, so the figures are a floor for what the API can serve;
      the CPU columns show who used the cores during each phase (cores, i.e. 1.00 = one core fully busy).
latency: client-side, request sent -> response read; p50/p99 over successful requests; errors = non-200 \
or transport errors (timeout {args.timeout:g} s)."""


def report(phases: Sequence[Phase]) -> str:
    """The side-by-side table and any error breakdown."""
    rows = []
    for phase in phases:
        ok = phase.latencies
        rows.append(
            [
                phase.name,
                f"{len(ok):,}",
                f"{len(ok) / phase.window:,.0f}",
                fmt_ms(percentile(ok, 50)),
                fmt_ms(percentile(ok, 99)),
                fmt_ms(max(ok) if ok else float("nan")),
                str(sum(phase.errors.values())),
                f"{phase.cpu.get('api', 0.0):.2f}",
                f"{phase.cpu.get('bench', 0.0):.2f}",
                f"{phase.cpu.get(MACHINE, 0.0):.2f}",
            ]
        )
    lines = [
        "",
        table(
            [
                "endpoint",
                "ok requests",
                "req/s",
                "p50 ms",
                "p99 ms",
                "max ms",
                "errors",
                "API cpu",
                "loadgen cpu",
                "machine cpu",
            ],
            rows,
        ),
    ]
    for phase in phases:
        if phase.errors:
            detail = ", ".join(f"{count} x {reason}" for reason, count in phase.errors.most_common())
            lines.append(f"errors in {phase.name}: {detail}")
    return "\n".join(lines)


async def bench(stack: Stack, args: argparse.Namespace) -> int:
    """Create the data, run the three phases, print the report; returns the exit code."""
    started = time.perf_counter()
    versions = await run_watched(stack, setup(stack, args))
    print(f"setup: {len(versions)} models x {args.prompts} prompts in {time.perf_counter() - started:.1f} s")
    print(header(args, versions), flush=True)
    phases = [
        Phase("GET /health", lambda i: ("/health", None)),
        Phase("GET /api/v1/versions/info/{id}", lambda i: with_token("/api/v1/versions/info", versions, i)),
        Phase("GET /api/v1/prompts/list/{id}", lambda i: with_token("/api/v1/prompts/list", versions, i)),
    ]
    for phase in phases:
        print(f"loading {phase.name} ...", file=sys.stderr, flush=True)
        await run_watched(stack, run_phase(stack, phase, args))
    print(report(phases), flush=True)
    if any(phase.errors for phase in phases):
        print(log_tails(stack), file=sys.stderr, flush=True)
        return 1
    return 0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line flags."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument(
        "--seconds", type=float, default=30.0, help="measured seconds per endpoint (default 30)"
    )
    parser.add_argument("--clients", type=int, default=100, help="concurrent clients (default 100)")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each phase")
    parser.add_argument("--models", type=int, default=3, help="ready models to create (default 3)")
    parser.add_argument("--prompts", type=int, default=10, help="prompts per model (default 10)")
    parser.add_argument("--timeout", type=float, default=10.0, help="per request, seconds")
    parser.add_argument(
        "--client",
        choices=["raw", "httpx"],
        default="raw",
        help="load client: raw asyncio HTTP/1.1 keep-alive (default, cheap) or httpx.AsyncClient",
    )
    parser.add_argument("--keep-data", action="store_true", help="keep the stack's data and logs directory")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.warmup < 0 or args.timeout <= 0:
        parser.error("--seconds and --timeout must be positive, --warmup not negative")
    if args.clients < 1 or args.models < 1 or args.prompts < 0:
        parser.error("--clients and --models must be at least 1, --prompts not negative")
    return args


def main() -> None:
    """Entry point: exit code 1 when setup or any request failed or a part of the stack died, 130 on Ctrl-C."""
    args = parse_args()
    env = fast_sandbox_env(SANDBOX_SECONDS, SANDBOX_SECONDS)
    try:
        # The stack starts and stops outside the event loop, so Ctrl-C during start-up stops it at once.
        with embedded_stack(env, keep_data=args.keep_data) as stack:
            try:
                code = asyncio.run(bench(stack, args))
            except StepFailed as exc:
                print(f"setup failed: {exc}", file=sys.stderr)
                print(log_tails(stack), file=sys.stderr, flush=True)
                code = 1
    except StackDied as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        print("interrupted; the stack was stopped", file=sys.stderr)
        code = 130
    sys.exit(code)


if __name__ == "__main__":
    main()
