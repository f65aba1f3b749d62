"""Shared by the HTTP bench scripts: the embedded stack on free ports, the customer's steps, and statistics.

The scripts put the repo root on ``sys.path`` before importing this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import httpx
import psutil
from prometheus_client.parser import text_string_to_metric_families
from temporalio.client import Client

from ecomdream.config import Settings
from ecomdream.contracts import REPLICATE_OTHER_TASK_QUEUE, REPLICATE_PREDICT_TASK_QUEUE, journey_id
from ecomdream.contracts.payment import JourneyState
from ecomdream.contracts.search import JOURNEY_STAGE
from ecomdream.devstack.processes import ManagedProcess
from ecomdream.devstack.stack import Stack, StackPorts
from tests.fixtures.wallet import WALLET
from workflows.journey import JourneyWorkflow

T = TypeVar("T")

INITIAL_PLAN = 1
PHOTO_COUNT = 5
# Waiting for a state change by polling: the interval grows with the time already waited (10 %), so the
# measured stage time is at most ~10 % (and at least POLL_MIN_S) late, without flooding the server.
POLL_MIN_S = 0.02
POLL_FRACTION = 0.1
POLL_MAX_S = 0.25
NOT_READY = "Please wait for your model to be ready"
# Probe calls made by `poll`, by what was awaited: the bench's own load on the stack.
POLLS: Counter[str] = Counter()


class StepFailed(Exception):
    """A customer step did not end as a customer expects; `step` names it for the failure summary."""

    def __init__(self, step: str, detail: str) -> None:
        super().__init__(f"{step}: {detail}")
        self.step = step
        self.detail = detail


def fast_sandbox_env(
    training_seconds: float,
    prediction_seconds: float,
    *,
    training_expected_seconds: float = 2.0,
    prompt_expected_seconds: float = 1.0,
    training_poll_seconds: float = 1.0,
    prompt_poll_seconds: float = 1.0,
    replicate_share: float | None = None,
) -> dict[str, str]:
    """ECOMDREAM_* settings for a stack whose sandboxes answer almost at once."""
    env = {
        "ECOMDREAM_SANDBOX_TRAINING_SECONDS": str(training_seconds),
        "ECOMDREAM_SANDBOX_PREDICTION_SECONDS": str(prediction_seconds),
        # Completion arrives by webhook; polls start only once a job is overdue (a lost webhook).
        "ECOMDREAM_TRAINING_EXPECTED_MINUTES": str(training_expected_seconds / 60),
        "ECOMDREAM_PROMPT_EXPECTED_SECONDS": str(prompt_expected_seconds),
        "ECOMDREAM_TRAINING_POLL_SECONDS": str(training_poll_seconds),
        "ECOMDREAM_PROMPT_POLL_SECONDS": str(prompt_poll_seconds),
        # Every customer of the bench comes from 127.0.0.1: the per-address abuse limits would refuse them.
        "ECOMDREAM_CHECKOUT_RATE_LIMIT": "100000/second",
        "ECOMDREAM_UPLOADS_IN_FLIGHT": "100000",
    }
    if replicate_share is not None:
        env["ECOMDREAM_REPLICATE_RATE_SHARE"] = str(replicate_share)
    return env


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


START_ATTEMPTS = 2
FAST_STOP_S = 3.0
WORKER_READY_LINE = "worker polling"
WORKER_READY_TIMEOUT_S = 30.0


class StackDied(Exception):
    """A part of the stack exited (at start-up or during the run)."""


def dead_parts(stack: Stack) -> list[str]:
    """Names of the stack's children that are not running."""
    return [name for name, part in stack_parts(stack).items() if not part.running]


def _death_report(stack: Stack, dead: Sequence[str], lines: int = 12) -> str:
    parts = stack_parts(stack)
    tails = [f"--- {name} log (last {lines} lines) ---\n{parts[name].log_tail(lines)}" for name in dead]
    return f"{', '.join(dead)} exited:\n" + "\n".join(tails)


def _wait_worker(stack: Stack) -> None:
    """`Stack.start` waits for the API only; wait until the worker polls (it may die on a port clash)."""
    deadline = time.monotonic() + WORKER_READY_TIMEOUT_S
    while WORKER_READY_LINE not in stack.worker.log_tail(400):
        dead = dead_parts(stack)
        if dead:
            raise StackDied(_death_report(stack, dead))
        if time.monotonic() > deadline:
            raise StackDied(f"the worker did not start polling within {WORKER_READY_TIMEOUT_S:.0f}s")
        time.sleep(0.1)


def _stop(stack: Stack, data_dir: Path, keep_data: bool) -> None:
    # A second Ctrl-C must not leave half the children running.
    interrupt = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        print("stopping the embedded stack ...", file=sys.stderr, flush=True)
        # The data is thrown away: no need for the API's and worker's graceful waits (15-20 s when
        # interrupted mid-run); Stack.stop() then stops the servers in order.
        for part in (stack.codec_server, stack.api, stack.worker, stack.replicate, stack.stripe):
            with contextlib.suppress(Exception):
                part.stop(timeout=FAST_STOP_S)
        stack.stop()
        if keep_data:
            print(f"data and logs kept in {data_dir}", file=sys.stderr, flush=True)
        else:
            shutil.rmtree(data_dir, ignore_errors=True)
    finally:
        signal.signal(signal.SIGINT, interrupt)


def _start(extra_env: dict[str, str], keep_data: bool) -> tuple[Stack, Path]:
    """Start the stack; once more on fresh ports if a part died at start-up (free ports are picked racily)."""
    for attempt in range(1, START_ATTEMPTS + 1):
        data_dir = Path(tempfile.mkdtemp(prefix="ecomdream-bench-"))
        stack = Stack(data_dir=data_dir, ports=StackPorts.free(), extra_env=extra_env)
        print(f"starting the embedded stack in {data_dir} ...", file=sys.stderr, flush=True)
        started = time.perf_counter()
        try:
            stack.start()
            _wait_worker(stack)
        except (StackDied, RuntimeError, TimeoutError) as exc:
            print(f"the stack did not start: {exc}", file=sys.stderr, flush=True)
            _stop(stack, data_dir, keep_data)
            if attempt == START_ATTEMPTS:
                raise StackDied(f"the stack did not start after {attempt} attempts") from exc
            print("retrying on fresh ports ...", file=sys.stderr, flush=True)
            continue
        except BaseException:
            _stop(stack, data_dir, keep_data)
            raise
        print(f"stack up in {time.perf_counter() - started:.1f}s", file=sys.stderr, flush=True)
        for url in (stack.api_url, stack.stripe_url, stack.replicate_url):
            assert url.startswith("http://127.0.0.1:"), url
        return stack, data_dir
    raise AssertionError("unreachable")


@contextlib.contextmanager
def embedded_stack(extra_env: dict[str, str], *, keep_data: bool = False) -> Iterator[Stack]:
    """The whole stack on free ports in a temporary directory; stopped (and removed) on exit, Ctrl-C or SIGTERM."""
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        stack, data_dir = _start(extra_env, keep_data)
        try:
            yield stack
        finally:
            _stop(stack, data_dir, keep_data)
    finally:
        signal.signal(signal.SIGTERM, previous)


async def run_watched(stack: Stack, work: Awaitable[T], every: float = 1.0) -> T:
    """Await work, but raise StackDied (cancelling it) as soon as a part of the stack exits."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=every)
            if done:
                return task.result()
            dead = dead_parts(stack)
            if dead:
                raise StackDied(_death_report(stack, dead))
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def log_tails(stack: Stack, lines: int = 15) -> str:
    """The last lines of the API and worker logs, for failure reports."""
    parts = []
    for proc in (stack.api, stack.worker):
        parts.append(f"--- {proc.name} log (last {lines} lines) ---\n{proc.log_tail(lines)}")
    return "\n".join(parts)


async def configure_replicate_sandbox(
    stack: Stack, training_seconds: float, prediction_seconds: float, *, drop_webhooks: bool = False
) -> dict[str, Any]:
    """Set the Replicate sandbox's speed knobs (no added latency, no faults) and return its whole config."""
    async with httpx.AsyncClient(base_url=stack.replicate_url, timeout=10) as sandbox:
        response = await sandbox.post(
            "/_sandbox/config",
            json={
                "latency_ms": 0,
                "error_rate": 0.0,
                "drop_webhooks": drop_webhooks,
                "fail_trainings": False,
                "fail_predictions": False,
                "training_seconds": training_seconds,
                "prediction_seconds": prediction_seconds,
            },
        )
        response.raise_for_status()
        config: dict[str, Any] = response.json()
    return config


# uvicorn closes a keep-alive connection after 5 s idle; reusing one just as it closes fails the request
# (httpx ReadError on a POST it may not retry). Idle connections are dropped by the client well before that.
KEEPALIVE_EXPIRY_S = 2.0


def pool_limits(connections: int) -> httpx.Limits:
    """A connection pool for `connections` requests at once whose idle connections expire before uvicorn's."""
    return httpx.Limits(
        max_connections=connections,
        max_keepalive_connections=connections,
        keepalive_expiry=KEEPALIVE_EXPIRY_S,
    )


def api_client(stack: Stack, connections: int, timeout: float) -> httpx.AsyncClient:
    """An HTTP client on the API with a pool large enough for `connections` requests at once."""
    return httpx.AsyncClient(
        base_url=stack.api_url,
        timeout=httpx.Timeout(timeout, connect=30.0),
        limits=pool_limits(connections),
        # Remembers each customer's access token and sends it, as a storefront would.
        auth=WALLET,
    )


def browser_client(connections: int, timeout: float) -> httpx.AsyncClient:
    """An HTTP client for the sandbox's hosted checkout pages (absolute URLs)."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout, connect=30.0),
        limits=pool_limits(connections),
    )


def multipart(photos: Sequence[tuple[str, bytes]]) -> list[tuple[str, tuple[str, bytes, str]]]:
    """The photos as `images` multipart fields."""
    return [("images", (name, data, "image/jpeg")) for name, data in photos]


def _brief(response: httpx.Response) -> str:
    return f"HTTP {response.status_code} {response.text[:200]!r}"


async def poll(
    probe: Callable[[], Awaitable[T]], done: Callable[[T], bool], *, within: float, what: str
) -> tuple[T, float]:
    """Call probe until done(value) holds; returns (value, perf_counter when seen). Interval: see POLL_*."""
    started = time.perf_counter()
    while True:
        value = await probe()
        POLLS[what] += 1
        now = time.perf_counter()
        if done(value):
            return value, now
        waited = now - started
        if waited > within:
            raise StepFailed(what, f"not reached within {within:.0f}s; last seen {value!r}")
        await asyncio.sleep(min(POLL_MAX_S, max(POLL_MIN_S, waited * POLL_FRACTION)))


async def create_payment(api: httpx.AsyncClient, plan_id: int = INITIAL_PLAN) -> tuple[str, str]:
    """POST /payments/create; returns (payment id, hosted checkout URL)."""
    response = await api.post("/api/v1/payments/create", json={"plan_id": plan_id})
    if response.status_code != 201:
        raise StepFailed("create payment", _brief(response))
    body = response.json()
    return str(body["payment_id"]), str(body["url"])


async def open_checkout(browser: httpx.AsyncClient, url: str) -> None:
    """GET the hosted checkout page, as the customer's browser does."""
    page = await browser.get(url)
    if page.status_code != 200:
        raise StepFailed("checkout page", _brief(page))


async def submit_checkout(browser: httpx.AsyncClient, url: str, email: str) -> None:
    """POST the checkout form (press Pay)."""
    response = await browser.post(url, data={"email": email, "method": "card"})
    if response.status_code != 200 or "Payment received" not in response.text:
        raise StepFailed("pay", _brief(response))


async def journey_stage(temporal: Client, payment_id: str) -> str | None:
    """The journey's `JourneyStage` search attribute, read by DescribeWorkflowExecution."""
    # Describe is answered by the Temporal server from the workflow's mutable state (no worker round-trip,
    # unlike a query), and the stage is upserted by the same workflow task that changes it.
    described = await temporal.get_workflow_handle(journey_id(payment_id)).describe()
    return described.typed_search_attributes.get(JOURNEY_STAGE)


async def journey_state(temporal: Client, payment_id: str) -> JourneyState:
    """The journey's own view of itself (a query: answered by a worker)."""
    handle = temporal.get_workflow_handle_for(JourneyWorkflow.run, journey_id(payment_id))
    return await handle.query(JourneyWorkflow.get_state)


async def wait_stage(temporal: Client, payment_id: str, stage: str, within: float) -> float:
    """Wait until the journey is at `stage` (failing early if it ended elsewhere); returns when seen."""
    ended = {"checkout_failed", "expired", "payment_failed", "failed", "cancelled"} - {stage}

    def reached(value: str | None) -> bool:
        if value in ended:
            raise StepFailed(f"wait {stage}", f"journey ended as {value}")
        return value == stage

    _, seen = await poll(
        lambda: journey_stage(temporal, payment_id), reached, within=within, what=f"wait {stage}"
    )
    return seen


async def train(
    api: httpx.AsyncClient, payment_id: str, photos: Sequence[tuple[str, bytes]], cls: str = "teapot"
) -> str:
    """POST the photos for training; returns the version id once training is submitted."""
    response = await api.post(
        f"/api/v1/versions/train/{payment_id}", params={"class": cls}, files=multipart(photos)
    )
    if response.status_code != 201:
        raise StepFailed("train", _brief(response))
    return str(response.json()["version_id"])


async def version_info(api: httpx.AsyncClient, version_id: str) -> dict[str, Any]:
    """GET /versions/info."""
    response = await api.get(f"/api/v1/versions/info/{version_id}")
    if response.status_code != 200:
        raise StepFailed("version info", _brief(response))
    body: dict[str, Any] = response.json()
    return body


async def wait_ready(api: httpx.AsyncClient, version_id: str, within: float) -> float:
    """Poll /versions/info until the model is ready (failing early if it failed); returns when seen."""

    def ready(info: dict[str, Any]) -> bool:
        if info["status"] == "failed":
            raise StepFailed("training", f"model failed: {info.get('error')}")
        return bool(info["status"] == "ready")

    _, seen = await poll(lambda: version_info(api, version_id), ready, within=within, what="wait ready")
    return seen


@dataclass
class PromptResult:
    """One generated prompt as the customer saw it."""

    prompt_id: str
    images: int
    started: float
    finished: float
    accepted_later: bool
    not_ready_retries: int
    not_ready_wait: float


async def _prompt_done(api: httpx.AsyncClient, prompt_id: str, within: float) -> tuple[int, float]:
    async def one() -> dict[str, Any]:
        response = await api.get(f"/api/v1/prompts/{prompt_id}")
        if response.status_code != 200:
            raise StepFailed("prompt status", _brief(response))
        body: dict[str, Any] = response.json()
        if body["status"] == "failed":
            raise StepFailed("prompt", f"generation failed: {body.get('error')}")
        return body

    body, seen = await poll(one, lambda b: b["status"] == "succeeded", within=within, what="prompt 202")
    return len(body["images"]), seen


async def generate(
    api: httpx.AsyncClient, version_id: str, text: str, within: float, *, not_ready_grace: float = 60.0
) -> PromptResult:
    """POST /prompts/create for one image; a 202 is followed to the images, a 409 'not ready' retried."""
    # /versions/info turns ready (record_version_outcome) before the journey's stage does (after the
    # cleanup activity), so a 409 "wait for your model to be ready" right after it is retried and counted.
    first = time.perf_counter()
    retries = 0
    while True:
        started = time.perf_counter()
        response = await api.post(
            f"/api/v1/prompts/create/{version_id}", json={"prompt": text, "amount_images": 1}
        )
        now = time.perf_counter()
        if response.status_code == 409 and NOT_READY in response.text and now - first < not_ready_grace:
            retries += 1
            await asyncio.sleep(POLL_MIN_S)
            continue
        break
    if response.status_code == 201:
        body = response.json()
        images, finished, later = len(body["images"]), now, False
        prompt_id = str(body["prompt_id"])
    elif response.status_code == 202:
        prompt_id = str(response.json()["prompt_id"])
        images, finished = await _prompt_done(api, prompt_id, within)
        later = True
    else:
        raise StepFailed("prompt", _brief(response))
    if images < 1:
        raise StepFailed("prompt", f"succeeded with {images} images")
    return PromptResult(
        prompt_id=prompt_id,
        images=images,
        started=started,
        finished=finished,
        accepted_later=later,
        not_ready_retries=retries,
        not_ready_wait=started - first,
    )


async def ready_model(
    api: httpx.AsyncClient,
    browser: httpx.AsyncClient,
    temporal: Client,
    photos: Sequence[tuple[str, bytes]],
    within: float,
) -> tuple[str, str]:
    """Pay, train and wait until the model is ready; returns (payment id, version id)."""
    payment_id, url = await create_payment(api)
    await open_checkout(browser, url)
    await submit_checkout(browser, url, f"bench-{uuid.uuid4().hex[:8]}@example.com")
    await wait_stage(temporal, payment_id, "paid", within)
    version_id = await train(api, payment_id, photos)
    await wait_ready(api, version_id, within)
    return payment_id, version_id


def stack_parts(stack: Stack) -> dict[str, ManagedProcess]:
    """Every child process of the stack, by name."""
    return {
        "api": stack.api,
        "worker": stack.worker,
        "codec-server": stack.codec_server,
        "temporal": stack.temporal.process,
        "postgres": stack.postgres.process,
        "s3": stack.s3.process,
        "stripe-sandbox": stack.stripe,
        "replicate-sandbox": stack.replicate,
    }


def _tree_cpu(pid: int) -> float:
    """CPU seconds of a process, its live descendants and its reaped children."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            times = proc.cpu_times()
            total += times.user + times.system + times.children_user + times.children_system
    return total


def cpu_seconds(stack: Stack) -> dict[str, float]:
    """CPU seconds used so far by each part of the stack and by this bench process."""
    out: dict[str, float] = {}
    for name, part in stack_parts(stack).items():
        key = "sandboxes" if name.endswith("-sandbox") else name
        pid = part.proc.pid if part.proc is not None else None
        out[key] = out.get(key, 0.0) + (_tree_cpu(pid) if pid is not None else 0.0)
    own = psutil.Process().cpu_times()
    out["bench (load gen)"] = own.user + own.system
    return out


MACHINE = "machine (all processes)"


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (not idle, not waiting for I/O) since boot."""
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


class CpuSampler:
    """Samples `cpu_seconds` and the machine's busy time in a background thread; reports average and peak cores."""

    def __init__(self, stack: Stack, interval: float = 1.0) -> None:
        self.stack = stack
        self.interval = interval
        self.samples: list[tuple[float, dict[str, float]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-sampler", daemon=True)

    def _sample(self) -> None:
        sample = cpu_seconds(self.stack)
        sample[MACHINE] = machine_busy_seconds()
        self.samples.append((time.perf_counter(), sample))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> CpuSampler:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def report(self) -> str:
        """Lines: per part, average cores over the window and in the busiest sampling interval."""
        (t0, first), (t1, last) = self.samples[0], self.samples[-1]
        wall = max(t1 - t0, 1e-9)
        peaks: dict[str, float] = dict.fromkeys(last, 0.0)
        for (ta, a), (tb, b) in itertools.pairwise(self.samples):
            for name in last:
                cores = (b[name] - a.get(name, 0.0)) / max(tb - ta, 1e-9)
                peaks[name] = max(peaks[name], cores)
        used = {name: last[name] - first.get(name, 0.0) for name in last}
        machine = used.pop(MACHINE)
        ours = sum(used.values())
        cells = ", ".join(
            f"{name} {secs / wall:.2f}/{peaks[name]:.2f}"
            for name, secs in sorted(used.items(), key=lambda kv: -kv[1])
        )
        cores = psutil.cpu_count() or 1
        return (
            f"CPU (cores of {cores}, average/peak {self.interval:g}-s interval): {cells}\n"
            f"    stack + bench {ours / wall:.2f}; whole machine {machine / wall:.2f}/{peaks[MACHINE]:.2f} "
            f"(the difference, {max(machine - ours, 0.0) / wall:.2f}, is other processes and kernel time)"
        )


Sample = tuple[str, dict[str, str], float]


def scrape(url: str) -> list[Sample]:
    """Every sample of a Prometheus text endpoint as (name, labels, value)."""
    text = httpx.get(url, timeout=10).text
    return [
        (sample.name, dict(sample.labels), float(sample.value))
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


@dataclass
class Histogram:
    """A Prometheus histogram summed over the label sets that matched."""

    count: float = 0.0
    total: float = 0.0
    buckets: dict[float, float] = field(default_factory=dict)

    def minus(self, earlier: Histogram) -> Histogram:
        """What was observed between `earlier` and this one."""
        return Histogram(
            self.count - earlier.count,
            self.total - earlier.total,
            {le: n - earlier.buckets.get(le, 0.0) for le, n in self.buckets.items()},
        )

    def upper_bound(self, q: float) -> float:
        """The smallest bucket bound below which at least q % of the observations fall."""
        for le, cumulative in sorted(self.buckets.items()):
            if cumulative >= self.count * q / 100:
                return le
        return math.inf


def histogram(samples: Sequence[Sample], metric: str, **match: str) -> Histogram:
    """Sum the histogram `metric` over every label set that contains `match`."""
    out = Histogram()
    for name, labels, value in samples:
        if any(labels.get(k) != v for k, v in match.items()):
            continue
        if name == f"{metric}_count":
            out.count += value
        elif name == f"{metric}_sum":
            out.total += value
        elif name == f"{metric}_bucket":
            le = float(labels["le"])
            out.buckets[le] = out.buckets.get(le, 0.0) + value
    return out


def worker_series() -> list[tuple[str, str, dict[str, str]]]:
    """(label, metric, label match) of the Temporal SDK worker histograms worth showing."""
    main_queue = Settings().temporal_task_queue
    return [
        ("workflow task: schedule -> start", "temporal_workflow_task_schedule_to_start_latency", {}),
        ("workflow task: execution in the worker", "temporal_workflow_task_execution_latency", {}),
        (
            "RPC RespondWorkflowTaskCompleted",
            "temporal_request_latency",
            {"operation": "RespondWorkflowTaskCompleted"},
        ),
        (
            "RPC RespondActivityTaskCompleted",
            "temporal_request_latency",
            {"operation": "RespondActivityTaskCompleted"},
        ),
        (
            f"activity: execution, {main_queue}",
            "temporal_activity_execution_latency",
            {"task_queue": main_queue},
        ),
        (
            f"activity: schedule -> completed, {main_queue}",
            "temporal_activity_succeed_endtoend_latency",
            {"task_queue": main_queue},
        ),
        (
            f"activity: schedule -> start, {main_queue}",
            "temporal_activity_schedule_to_start_latency",
            {"task_queue": main_queue},
        ),
        *(
            (
                f"activity: schedule -> start, {queue} (rate-limited)",
                "temporal_activity_schedule_to_start_latency",
                {"task_queue": queue},
            )
            for queue in (REPLICATE_PREDICT_TASK_QUEUE, REPLICATE_OTHER_TASK_QUEUE)
        ),
    ]


def worker_metrics_url(stack: Stack) -> str:
    """The worker's Prometheus endpoint (Temporal SDK metrics)."""
    return f"http://127.0.0.1:{stack.ports.worker_metrics}/metrics"


def temporal_table(before: Sequence[Sample], after: Sequence[Sample]) -> str:
    """Temporal SDK latencies observed by the worker between two scrapes (bucket bounds, not exact)."""
    rows = []
    for label, metric, match in worker_series():
        seen = histogram(after, metric, **match).minus(histogram(before, metric, **match))
        if not seen.count:
            rows.append([label, "0", "-", "-", "-"])
            continue
        rows.append(
            [
                label,
                f"{seen.count:.0f}",
                fmt_ms(seen.total / seen.count),
                f"<= {fmt_ms(seen.upper_bound(50))}",
                f"<= {fmt_ms(seen.upper_bound(95))}",
            ]
        )
    title = "Temporal SDK metrics of the worker during the run (p50/p95 are histogram bucket bounds):"
    return title + "\n" + table(["Temporal, seen by the worker", "n", "mean ms", "p50 ms", "p95 ms"], rows)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation between closest ranks; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def fmt_ms(seconds: float) -> str:
    """Seconds as whole milliseconds (blank-safe for NaN)."""
    if math.isnan(seconds):
        return "-"
    return "inf" if math.isinf(seconds) else f"{seconds * 1000:,.0f}"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table: first column left-aligned, the others right-aligned."""
    widths = [max(len(str(row[i])) for row in [headers, *rows]) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        out = [str(cells[0]).ljust(widths[0])]
        out += [str(cell).rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True)]
        return "  ".join(out).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(row) for row in rows)])
