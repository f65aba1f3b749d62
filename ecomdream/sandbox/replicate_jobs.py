"""Lifecycles of sandbox trainings and predictions: starting → processing → succeeded/failed/canceled on a clock."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Coroutine
from typing import Any

import httpx

from ecomdream.sandbox.replicate_media import (
    OUTPUT_FORMATS,
    count_zip_images,
    decode_data_url,
    image_request,
    progress_line,
    render_image,
    weights_tar,
)
from ecomdream.sandbox.replicate_state import (
    JSON,
    WEBHOOK_EVENTS,
    ApiProblem,
    Job,
    JobKind,
    Store,
    WebhookTarget,
    new_id,
    now_iso,
)
from ecomdream.sandbox.replicate_webhooks import WebhookDispatcher

log = logging.getLogger("ecomdream.sandbox.replicate")

# Share of a job's duration spent in `starting` (queued, booting) before `processing`.
STARTING_SHARE = 0.1


def webhook_targets(body: JSON) -> list[WebhookTarget]:
    """The webhook destinations of a create body (`webhook` + filter, legacy `webhook_completed`)."""
    events = body.get("webhook_events_filter")
    if events is None:
        wanted = frozenset(WEBHOOK_EVENTS)
    elif isinstance(events, list) and all(e in WEBHOOK_EVENTS for e in events):
        wanted = frozenset(events)
    else:
        raise ApiProblem(422, f"webhook_events_filter must be a list of: {', '.join(WEBHOOK_EVENTS)}")
    targets: list[WebhookTarget] = []
    for key, subscribed in (("webhook", wanted), ("webhook_completed", frozenset({"completed"}))):
        url = body.get(key)
        if url is None:
            continue
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ApiProblem(422, f"{key} must be an http(s) URL")
        targets.append(WebhookTarget(url=url, events=subscribed))
    return targets


class Engine:
    """Creates jobs and runs each one as an asyncio task, so state advances and webhooks fire without polling."""

    def __init__(self, store: Store, dispatcher: WebhookDispatcher) -> None:
        self.store = store
        self.dispatcher = dispatcher
        self._client: httpx.AsyncClient | None = None

    def create_job(self, kind: JobKind, model: str, version: str, body: JSON) -> Job:
        """Register a job in `starting` and launch its lifecycle; returns at once."""
        targets = webhook_targets(body)
        knobs = self.store.knobs
        job_id = new_id()
        base = f"{self.store.settings.base_url}/v1/{kind}s/{job_id}"
        obj: JSON = {
            "id": job_id,
            "model": model,
            "version": version,
            "input": body["input"],
            "output": None,
            "logs": "",
            "error": None,
            "status": "starting",
            "data_removed": False,
            "source": "api",
            "created_at": now_iso(),
            "started_at": None,
            "completed_at": None,
            "metrics": {},
            "urls": {"get": base, "cancel": f"{base}/cancel", "web": f"https://replicate.com/p/{job_id}"},
        }
        # Duration and failure are fixed at creation so a knob change never alters jobs already running.
        training = kind == "training"
        job = Job(
            kind=kind,
            obj=obj,
            request=body,
            targets=targets,
            seconds=knobs.training_seconds if training else knobs.prediction_seconds,
            fail=knobs.fail_trainings if training else knobs.fail_predictions,
        )
        self.store.add_job(job)
        runner = self._run_training(job) if training else self._run_prediction(job)
        job.task = asyncio.create_task(self._guard(job, runner))
        return job

    def cancel(self, job: Job) -> None:
        """Cancel a running job (a no-op once it is terminal, like Replicate)."""
        if job.terminal:
            return
        if job.task is not None:
            job.task.cancel()
        self._log(job, f"{job.kind.capitalize()} canceled")
        self._finish(job, "canceled")

    async def wait(self, job: Job, seconds: float) -> None:
        """Block up to `seconds` for a terminal state (`Prefer: wait`)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(job.done.wait(), timeout=seconds)

    async def reset(self) -> None:
        """Stop every running job."""
        tasks = [
            job.task for job in self.store.jobs_of("training") + self.store.jobs_of("prediction") if job.task
        ]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def aclose(self) -> None:
        """Stop jobs and close the HTTP client used to fetch training inputs."""
        await self.reset()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _guard(self, job: Job, runner: Coroutine[Any, Any, None]) -> None:
        # A bug in a runner must end the job visibly instead of leaving it `processing` forever.
        try:
            await runner
        except Exception as exc:
            log.exception("sandbox %s %s crashed", job.kind, job.id)
            self._finish(job, "failed", error=f"sandbox internal error: {exc}")

    async def _at(self, job: Job, share: float) -> None:
        """Sleep until `share` of the job's duration has passed since creation."""
        deadline = job.created_monotonic + job.seconds * share
        await asyncio.sleep(max(0.0, deadline - time.monotonic()))

    def _set(self, job: Job, **fields: Any) -> None:
        with self.store.lock:
            job.obj.update(fields)

    def _log(self, job: Job, line: str) -> None:
        with self.store.lock:
            job.obj["logs"] += line + "\n"

    def _start_processing(self, job: Job) -> float:
        self._set(job, status="processing", started_at=now_iso())
        return time.monotonic()

    def _finish(self, job: Job, status: str, *, error: str | None = None) -> None:
        with self.store.lock:
            if job.terminal:
                return
            finished = now_iso()
            elapsed = time.monotonic() - job.created_monotonic
            started = job.obj["started_at"] or finished
            job.obj.update(status=status, completed_at=finished, started_at=started, error=error)
            job.obj["metrics"] = {
                "predict_time": round(max(0.0, elapsed - job.seconds * STARTING_SHARE), 6),
                "total_time": round(elapsed, 6),
            }
        job.done.set()
        log.info("%s %s %s%s", job.kind, job.id, status, f": {error}" if error else "")
        self.dispatcher.emit(job, "completed")

    def _fail(self, job: Job, error: str) -> None:
        self._log(job, f"Error: {error}")
        self._finish(job, "failed", error=error)

    def _progress(self, job: Job, done: int, total: int, started: float) -> None:
        self._log(job, progress_line(done, total, time.monotonic() - started))
        self.dispatcher.emit(job, "logs")

    async def _run_training(self, job: Job) -> None:
        self.dispatcher.emit(job, "start")
        await self._at(job, STARTING_SHARE)
        started = self._start_processing(job)
        images = await self._fetch_images(job)
        if isinstance(images, str):
            self._fail(job, images)
            return
        data = job.obj["input"]
        steps = int(data.get("steps") or data.get("max_train_steps") or 1000)
        self._log(job, f"Training LoRA for {steps} steps on {images} images")
        updates = min(100, max(5, int(job.seconds * 2)))
        self._progress(job, 0, steps, started)
        for i in range(1, updates + 1):
            await self._at(job, STARTING_SHARE + (1 - STARTING_SHARE) * i / updates)
            if job.fail and i > updates * 0.6:
                self._fail(job, "sandbox: training failed")
                return
            self._progress(job, steps * i // updates, steps, started)
        destination = str(job.request["destination"])
        version_id = secrets.token_hex(32)
        self.store.add_version(destination, version_id)
        weights = f"{job.id}-trained_model.tar"
        self.store.put_file(weights, weights_tar(job.id), "application/x-tar")
        self._log(job, f"Pushed version {destination}:{version_id}")
        self._set(
            job,
            output={
                "version": f"{destination}:{version_id}",
                "weights": f"{self.store.settings.base_url}/files/{weights}",
            },
        )
        self.dispatcher.emit(job, "output")
        self._finish(job, "succeeded")

    async def _fetch_images(self, job: Job) -> int | str:
        """The number of images in the training zip, or the reason the training must fail."""
        data = job.obj["input"]
        url = data.get("input_images") or data.get("instance_data")
        if not isinstance(url, str) or not url:
            return "input_images is required: the URL of a zip file of training images"
        shown = url if len(url) < 200 else url[:200] + "..."
        self._log(job, f"Downloading input_images from {shown}")
        try:
            if url.startswith("data:"):
                content = decode_data_url(url)
            else:
                response = await self._http().get(url)
                if response.status_code != 200:
                    return f"Failed to download input_images: HTTP {response.status_code} from {shown}"
                content = response.content
            count = count_zip_images(content)
        except httpx.HTTPError as exc:
            return f"Failed to download input_images from {shown}: {type(exc).__name__}: {exc}"
        except ValueError as exc:
            return str(exc)
        self._log(job, f"Extracted {count} images from input_images ({len(content)} bytes)")
        return count

    async def _run_prediction(self, job: Job) -> None:
        self.dispatcher.emit(job, "start")
        await self._at(job, STARTING_SHARE)
        started = self._start_processing(job)
        try:
            request = image_request(job.obj["input"])
        except ValueError as exc:
            self._fail(job, f"Prediction input failed validation: {exc}")
            return
        self._log(job, f"Using seed: {request.seed}")
        self._log(job, f"Generating {request.num_outputs} image(s) at {request.width}x{request.height}")
        updates = min(20, max(3, int(job.seconds * 4)))
        self._progress(job, 0, request.steps, started)
        for i in range(1, updates + 1):
            # Steps take 80% of processing; the rest is "saving images".
            await self._at(job, STARTING_SHARE + 0.8 * (1 - STARTING_SHARE) * i / updates)
            self._progress(job, request.steps * i // updates, request.steps, started)
        if job.fail:
            self._fail(job, "sandbox: prediction failed")
            return
        images = await asyncio.gather(
            *(asyncio.to_thread(render_image, request, i) for i in range(request.num_outputs))
        )
        extension, media_type = request.output_format, OUTPUT_FORMATS[request.output_format][1]
        urls = []
        knobs = self.store.knobs
        kept = len(images) - knobs.lost_outputs
        base = (knobs.output_base_url or self.store.settings.base_url).rstrip("/")
        for index, image in enumerate(images):
            name = f"{job.id}-out-{index}.{extension}"
            if index < kept:
                self.store.put_file(name, image, media_type)
            urls.append(f"{base}/files/{name}")
        await self._at(job, 1.0)
        self._set(job, output=urls)
        self.dispatcher.emit(job, "output")
        self._finish(job, "succeeded")

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=30.0, follow_redirects=True)
        return self._client
