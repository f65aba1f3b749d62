"""Benchmark N concurrent customer journeys end to end: pay → train → ready → one prompt.

Run from the repo root: ``python bench/journeys.py [--journeys 50] [--concurrency N] [--workers N]
[--drop-webhooks]``.
Starts the embedded stack (free ports, temporary directory; stopped at the end, also on Ctrl-C) with the
sandboxes almost instant, drives every journey over HTTP like a customer, and prints the time per stage and
the Temporal (orchestration) overhead per stage, then what Replicate saw: calls per training and
prediction, the busiest second against each budget (all workers together), and how late after a job's end
the customer saw it (with --drop-webhooks: how late a lost webhook was noticed). Exits 1 if any journey
failed.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import traceback
import uuid
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    # Lets `python bench/journeys.py` run without the package being installed.
    sys.path.insert(0, str(REPO_ROOT))
# Harmless in a container without a login session (pytest filters it the same way).
warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")

import httpx  # noqa: E402
import psutil  # noqa: E402
from _histories import (  # noqa: E402
    ACTION_RULE,
    BREAKDOWN_HEADERS,
    BREAKDOWN_NOTE,
    actions_line,
    breakdown_rows,
    journey_histories,
)
from _replicate import calls_line, extra_workers, rate_lines, run_calls, sandbox_jobs, seen_late  # noqa: E402
from _stack import (  # noqa: E402
    PHOTO_COUNT,
    POLL_FRACTION,
    POLL_MAX_S,
    POLL_MIN_S,
    POLLS,
    CpuSampler,
    StackDied,
    StepFailed,
    api_client,
    browser_client,
    configure_replicate_sandbox,
    create_payment,
    embedded_stack,
    fast_sandbox_env,
    fmt_ms,
    generate,
    journey_state,
    log_tails,
    open_checkout,
    percentile,
    run_watched,
    scrape,
    submit_checkout,
    table,
    temporal_table,
    train,
    wait_ready,
    wait_stage,
    worker_metrics_url,
)
from temporalio.client import Client  # noqa: E402

from ecomdream.config import Settings  # noqa: E402
from ecomdream.contracts import journey_id, prompt_workflow_id  # noqa: E402
from ecomdream.devstack.stack import Stack  # noqa: E402
from tests.fixtures.photos import valid_photos  # noqa: E402

PAID_TIMEOUT_S = 300.0


@dataclass
class Timings:
    """What one journey measured, in seconds (perf_counter differences)."""

    create: float
    pay_request: float
    to_paid: float
    upload: float
    to_submitted: float
    to_ready: float
    prompt: float
    prompt_202: bool
    not_ready_retries: int
    not_ready_wait: float
    total: float
    version_id: str
    marker: str
    ready_wall: float
    images_wall: float
    payment_id: str
    prompt_id: str
    # Each stage's [start, end) on the wall clock, to find the stage's events in the histories.
    windows: dict[str, tuple[float, float]]


@dataclass
class Failure:
    """Why one journey did not complete."""

    index: int
    step: str
    detail: str


@dataclass
class Run:
    """Everything the clients share."""

    api: httpx.AsyncClient
    browser: httpx.AsyncClient
    temporal: Client
    photos: list[tuple[str, bytes]]
    gate: asyncio.Semaphore
    timeout: float


async def journey(run: Run, index: int) -> Timings:
    """One customer: create payment, pay at the hosted checkout, upload photos, wait until ready, prompt."""
    async with run.gate:
        start = time.perf_counter()
        payment_id, url = await create_payment(run.api)
        created = time.perf_counter()
        await open_checkout(run.browser, url)
        pay_start = time.perf_counter()
        await submit_checkout(run.browser, url, f"bench-{index}-{uuid.uuid4().hex[:6]}@example.com")
        pay_end = time.perf_counter()
        paid = await wait_stage(run.temporal, payment_id, "paid", PAID_TIMEOUT_S)
        upload_start = time.perf_counter()
        version_id = await train(run.api, payment_id, run.photos)
        accepted, accepted_wall = time.perf_counter(), time.time()
        ready = await wait_ready(run.api, version_id, run.timeout)
        # When the journey submitted the training (its own clock, the same machine's wall clock).
        started_at = (await journey_state(run.temporal, payment_id)).training_started_at
        assert started_at is not None
        submitted = accepted + (started_at.timestamp() - accepted_wall)
        marker = f"journey {index} on a beach at sunset"
        result = await generate(run.api, version_id, marker, run.timeout)
        wall = time.time() - time.perf_counter()
        bounds = [
            ("create payment", start, created),
            ("pay -> paid", pay_start, paid),
            ("upload -> photos accepted", upload_start, accepted),
            ("accepted -> training submitted", accepted, submitted),
            ("training submitted -> ready", submitted, ready),
            ("prompt request -> images", result.started, result.finished),
        ]
        return Timings(
            create=created - start,
            pay_request=pay_end - pay_start,
            to_paid=paid - pay_start,
            upload=accepted - upload_start,
            to_submitted=submitted - accepted,
            to_ready=ready - submitted,
            prompt=result.finished - result.started,
            prompt_202=result.accepted_later,
            not_ready_retries=result.not_ready_retries,
            not_ready_wait=result.not_ready_wait,
            total=result.finished - start,
            version_id=version_id,
            marker=marker,
            ready_wall=wall + ready,
            images_wall=wall + result.finished,
            payment_id=payment_id,
            prompt_id=result.prompt_id,
            windows={name: (wall + a, wall + b) for name, a, b in bounds},
        )


async def guarded(run: Run, index: int) -> Timings | Failure:
    """A journey whose failure is recorded instead of raised."""
    try:
        return await journey(run, index)
    except StepFailed as exc:
        return Failure(index, exc.step, exc.detail)
    except httpx.HTTPError as exc:
        return Failure(index, f"HTTP {type(exc).__name__}", f"{exc!r} ({exc.request.url})")
    except Exception as exc:
        last = traceback.extract_tb(exc.__traceback__)[-1]
        return Failure(index, type(exc).__name__, f"{exc} (at {last.filename}:{last.lineno})")


async def run_all(
    args: argparse.Namespace, api_url_client: httpx.AsyncClient, temporal: Client
) -> tuple[list[Timings], list[Failure], float]:
    """Run every journey under the concurrency limit; returns (timings, failures, wall seconds)."""
    connections = args.concurrency + 10
    async with browser_client(connections, args.timeout) as browser:
        run = Run(
            api=api_url_client,
            browser=browser,
            temporal=temporal,
            photos=valid_photos(PHOTO_COUNT),
            gate=asyncio.Semaphore(args.concurrency),
            timeout=args.timeout,
        )
        started = time.perf_counter()
        results = await asyncio.gather(*(guarded(run, i) for i in range(args.journeys)))
        wall = time.perf_counter() - started
    timings = [r for r in results if isinstance(r, Timings)]
    failures = [r for r in results if isinstance(r, Failure)]
    return timings, failures, wall


def method_header(args: argparse.Namespace, share: float, sandbox: dict[str, object]) -> str:
    """What is measured and how the Temporal overhead is derived."""
    return f"""\
ecomdream journeys bench: {args.journeys} journeys, concurrency {args.concurrency}, one embedded stack on \
this machine ({psutil.cpu_count()} cores shared by the bench client, API, worker, Temporal dev server, Postgres, S3, sandboxes)
sandbox: training {sandbox["training_seconds"]} s, prediction {sandbox["prediction_seconds"]} s, \
Replicate API latency {sandbox["latency_ms"]} ms, no faults, webhooks \
{"dropped" if sandbox["drop_webhooks"] else "delivered"}; {args.workers} worker process(es) share \
{share:g} of Replicate's limits;
         only the webhook awaited for {args.training_expected_seconds:g} s (training) / \
{args.prompt_expected_seconds:g} s (prediction), then polls at most {args.training_poll_seconds:g} s / \
{args.prompt_poll_seconds:g} s apart; prompt wait {Settings().prompt_wait_seconds:g} s before a 202
stages (per journey, client-side clock):
  create payment     POST /payments/create latency (DB insert, Stripe sandbox session, start JourneyWorkflow)
  pay -> paid        from POSTing the checkout form until the journey's JourneyStage is "paid" (Temporal describe)
  upload -> accepted  POST /versions/train latency: multipart parse, S3 staging, the `train` update
                     (photo check, version row); it answers before the zip and the submission
  accepted -> submitted  from that answer until the journey submitted the training (its training_started_at):
                     the training zip (photos normalised in parallel) and create_training on the Replicate queue
  submitted -> ready from the submission until GET /versions/info says "ready"
  info ready -> prompt accepted  while POST /prompts/create still answers 409 "Please wait for your model to
                     be ready" although /versions/info says ready (retried every {POLL_MIN_S * 1000:.0f} ms; 0 if accepted at once)
  prompt -> images   POST /prompts/create latency until 201 with images (a 202 is followed until succeeded)
Temporal overhead = stage time - time the sandbox itself spent in the stage:
  pay -> paid: minus the checkout POST latency (the Stripe sandbox completing the session); the rest is
    webhook delivery, signature check, signal, workflow task, ledger activity and the stage change.
  upload -> accepted, accepted -> submitted: minus Replicate API latency x calls = 0 (latency knob 0 ms); the
    rest includes the photo/zip/S3 work of the activities, not only Temporal.
  submitted -> ready: minus the configured sandbox training seconds.
  prompt -> images: minus the configured sandbox prediction seconds.
"waits" are polled: interval = {POLL_FRACTION:.0%} of the time already waited, clamped to \
{POLL_MIN_S * 1000:.0f}-{POLL_MAX_S * 1000:.0f} ms, so those stage ends are seen up to that late."""


def stage_rows(timings: Sequence[Timings], args: argparse.Namespace) -> list[list[str]]:
    """One row per stage: count, p50/p95/max of the stage and of its Temporal overhead."""
    stages: list[tuple[str, Callable[[Timings], float], Callable[[Timings], float] | None]] = [
        ("create payment", lambda t: t.create, None),
        ("pay -> paid", lambda t: t.to_paid, lambda t: t.to_paid - t.pay_request),
        ("upload -> photos accepted", lambda t: t.upload, lambda t: t.upload),
        ("accepted -> training submitted", lambda t: t.to_submitted, lambda t: t.to_submitted),
        (
            "training submitted -> ready",
            lambda t: t.to_ready,
            lambda t: t.to_ready - args.training_seconds,
        ),
        ("info ready -> prompt accepted", lambda t: t.not_ready_wait, lambda t: t.not_ready_wait),
        ("prompt request -> images", lambda t: t.prompt, lambda t: t.prompt - args.prediction_seconds),
        ("whole journey", lambda t: t.total, None),
    ]
    rows = []
    for name, value, overhead in stages:
        values = [value(t) for t in timings]
        cells = [name, str(len(values))]
        cells += [fmt_ms(percentile(values, q)) for q in (50, 95, 100)]
        if overhead is None:
            cells += ["", "", ""]
        else:
            extra = [overhead(t) for t in timings]
            cells += [fmt_ms(percentile(extra, q)) for q in (50, 95, 100)]
        rows.append(cells)
    return rows


def report(
    args: argparse.Namespace, timings: Sequence[Timings], failures: Sequence[Failure], wall: float, cpu: str
) -> str:
    """The results table and notes."""
    ok = len(timings)
    lines = [
        "",
        f"N = {args.journeys}   completed = {ok}   failed = {len(failures)}   "
        f"wall = {wall:.2f} s   throughput = {ok / wall:.2f} journeys/s",
        cpu,
        "",
        table(
            [
                "stage",
                "n",
                "p50 ms",
                "p95 ms",
                "max ms",
                "overhead p50",
                "overhead p95",
                "overhead max",
            ],
            stage_rows(timings, args),
        ),
    ]
    late = [t for t in timings if t.prompt_202]
    retried = [t for t in timings if t.not_ready_retries]
    lines.append("")
    polls = ", ".join(f"{count} x {what}" for what, count in POLLS.most_common())
    lines.append(f"bench's own polling during the run: {polls} ({sum(POLLS.values()) / wall:.0f} calls/s)")
    lines.append(
        f"prompts answered 202 (slower than ECOMDREAM_PROMPT_WAIT_SECONDS, then followed): {len(late)}"
    )
    if retried:
        waits = [t.not_ready_wait for t in retried]
        lines.append(
            f"prompts refused 409 'wait for your model to be ready' after /versions/info said ready: "
            f"{len(retried)} journeys, {sum(t.not_ready_retries for t in retried)} retries, "
            f"extra wait p50 {fmt_ms(percentile(waits, 50))} ms, max {fmt_ms(max(waits))} ms "
            "(the 'info ready -> prompt accepted' row; not counted in the prompt stage)"
        )
    else:
        lines.append("prompts refused 409 'not ready' after /versions/info said ready: 0")
    if failures:
        lines.append("")
        lines.append(f"FAILED journeys: {len(failures)}")
        by_reason = Counter((f.step, f.detail[:300]) for f in failures)
        for (step, detail), count in by_reason.most_common():
            journeys = [str(f.index) for f in failures if (f.step, f.detail[:300]) == (step, detail)]
            lines.append(f"  {count} x {step}: {detail}  (journeys {', '.join(journeys[:10])})")
    return "\n".join(lines)


async def replicate_report(
    stack: Stack, args: argparse.Namespace, timings: Sequence[Timings], since: float
) -> str:
    """Calls per job, the busiest seconds against the budgets, and how late the customer saw each job end."""
    calls = await run_calls(stack, since)
    trainings, predictions = await sandbox_jobs(stack)
    late_training = seen_late(
        trainings,
        {t.version_id: t.ready_wall for t in timings},
        lambda job: str(job["request"].get("destination", "")).rsplit("ecomdream-", 1)[-1],
    )
    late_images = seen_late(
        predictions,
        {t.marker: t.images_wall for t in timings},
        lambda job: str(job["request"]["input"].get("prompt", "")).split(", ", 1)[-1],
    )
    webhooks = "dropped (lost webhooks, noticed by polls)" if args.drop_webhooks else "delivered"
    lines = [
        "",
        f"Replicate, {args.workers} worker process(es), webhooks {webhooks}:",
        "  " + calls_line(calls, len(timings), len(timings)),
        *rate_lines(calls, worker_settings(args)),
    ]
    for what, values in (("training", late_training), ("prediction", late_images)):
        if values:
            lines.append(
                f"  {what} ended at the sandbox -> the customer saw it: p50 {fmt_ms(percentile(values, 50))} ms, "
                f"max {fmt_ms(max(values))} ms ({len(values)} jobs)"
            )
    return "\n".join(lines)


BROKEN_DOWN = [
    "create payment",
    "pay -> paid",
    "upload -> photos accepted",
    "accepted -> training submitted",
    "training submitted -> ready",
    "prompt request -> images",
]


async def history_report(temporal: Client, timings: Sequence[Timings]) -> str:
    """Actions per journey and each stage's time by where it went, from the workflow histories."""
    ids = [(journey_id(t.payment_id), prompt_workflow_id(t.prompt_id)) for t in timings]
    histories = await journey_histories(temporal, ids)
    rows = breakdown_rows(
        BROKEN_DOWN, [(t.windows, h) for t, h in zip(timings, histories, strict=True)], fmt_ms
    )
    return "\n".join(
        ["", actions_line(histories), ACTION_RULE, "", BREAKDOWN_NOTE, table(BREAKDOWN_HEADERS, rows)]
    )


def worker_settings(args: argparse.Namespace) -> Settings:
    """The settings the workers run with (as far as the budgets go)."""
    return Settings(replicate_rate_share=args.replicate_share) if args.replicate_share else Settings()


async def bench(stack: Stack, args: argparse.Namespace) -> int:
    """Run the journeys on a started stack and print the report; returns the exit code."""
    sandbox = await configure_replicate_sandbox(
        stack, args.training_seconds, args.prediction_seconds, drop_webhooks=args.drop_webhooks
    )
    print(method_header(args, worker_settings(args).replicate_rate_share, sandbox), flush=True)
    temporal = await stack.connect_temporal()
    since = time.time()
    async with api_client(stack, args.concurrency * 2 + 10, args.timeout) as api:
        metrics_before = await asyncio.to_thread(scrape, worker_metrics_url(stack))
        with CpuSampler(stack) as cpu:
            timings, failures, wall = await run_watched(stack, run_all(args, api, temporal))
        metrics_after = await asyncio.to_thread(scrape, worker_metrics_url(stack))
    print(report(args, timings, failures, wall, cpu.report()), flush=True)
    print(await replicate_report(stack, args, timings, since), flush=True)
    print("", temporal_table(metrics_before, metrics_after), sep="\n", flush=True)
    if timings:
        print(await history_report(temporal, timings), flush=True)
    if failures:
        print(log_tails(stack), file=sys.stderr, flush=True)
        return 1
    return 0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line flags."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--journeys", type=int, default=50, help="journeys to run (default 50)")
    parser.add_argument("--concurrency", type=int, default=None, help="journeys at once (default: all)")
    parser.add_argument("--training-seconds", type=float, default=0.05, help="sandbox training duration")
    parser.add_argument("--prediction-seconds", type=float, default=0.05, help="sandbox prediction duration")
    parser.add_argument(
        "--training-expected-seconds",
        type=float,
        default=2.0,
        help="ECOMDREAM_TRAINING_EXPECTED_MINUTES x 60: only the webhook is awaited that long",
    )
    parser.add_argument(
        "--prompt-expected-seconds", type=float, default=1.0, help="ECOMDREAM_PROMPT_EXPECTED_SECONDS"
    )
    parser.add_argument(
        "--training-poll-seconds", type=float, default=1.0, help="ECOMDREAM_TRAINING_POLL_SECONDS"
    )
    parser.add_argument(
        "--prompt-poll-seconds", type=float, default=1.0, help="ECOMDREAM_PROMPT_POLL_SECONDS"
    )
    parser.add_argument(
        "--replicate-share",
        type=float,
        default=None,
        help="ECOMDREAM_REPLICATE_RATE_SHARE for the workers (default: the product's setting)",
    )
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument(
        "--drop-webhooks", action="store_true", help="the Replicate sandbox drops every webhook"
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="per request / per wait, seconds")
    parser.add_argument("--keep-data", action="store_true", help="keep the stack's data and logs directory")
    args = parser.parse_args(argv)
    if args.journeys < 1:
        parser.error("--journeys must be at least 1")
    args.concurrency = args.concurrency or args.journeys
    if args.concurrency < 1:
        parser.error("--concurrency must be at least 1")
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if args.training_seconds <= 0 or args.prediction_seconds <= 0:
        parser.error("sandbox durations must be positive")
    return args


def main() -> None:
    """Entry point: exit code 1 when any journey failed or a part of the stack died, 130 on Ctrl-C."""
    args = parse_args()
    env = fast_sandbox_env(
        args.training_seconds,
        args.prediction_seconds,
        training_expected_seconds=args.training_expected_seconds,
        prompt_expected_seconds=args.prompt_expected_seconds,
        training_poll_seconds=args.training_poll_seconds,
        prompt_poll_seconds=args.prompt_poll_seconds,
        replicate_share=args.replicate_share,
    )
    try:
        # The stack starts and stops outside the event loop, so Ctrl-C during start-up stops it at once.
        with embedded_stack(env, keep_data=args.keep_data) as stack, extra_workers(stack, args.workers - 1):
            code = asyncio.run(bench(stack, args))
    except StackDied as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        print("interrupted; the stack was stopped", file=sys.stderr)
        code = 130
    sys.exit(code)


if __name__ == "__main__":
    main()
