"""The Replicate sandbox as a real process, driven by the official `replicate` SDK like production code drives Replicate."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import io
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from PIL import Image
from replicate.client import Client
from replicate.exceptions import ReplicateError
from replicate.webhook import Webhooks, WebhookSigningSecret

from ecomdream.clients.replicate import delete_model, delete_model_version

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parents[2]
TOKEN = "r8_sandbox"
SECRET = "whsec_" + base64.b64encode(b"tests-replicate-sandbox-secret!!").decode()
TRAINER = "ostris/flux-dev-lora-trainer"
TRAINER_VERSION = "b6af14222e6bd9be257cbc1ea4afda3cd0503e1133083b9d1de0364d8568e6ef"
OWNER = "ecomdream"
VERSION_REF = re.compile(rf"^{OWNER}/[a-z0-9-]+:[0-9a-f]{{64}}$")
PROGRESS = re.compile(r"^\s*(\d+)%\|", re.MULTILINE)


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def healthy(url: str) -> bool:
    """Whether the sandbox answers /health."""
    try:
        return httpx.get(f"{url}/health", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


@contextmanager
def run_sandbox(log_dir: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """Start `python -m ecomdream.sandbox.replicate` on a free port and yield its URL once /health answers."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    clean_env = {k: v for k, v in os.environ.items() if not k.startswith("ECOMDREAM_SANDBOX_")}
    argv = [sys.executable, "-m", "ecomdream.sandbox.replicate", "--host", "127.0.0.1", "--port", str(port)]
    log_path = log_dir / f"replicate-sandbox-{port}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [*argv, *args], cwd=REPO_ROOT, env=clean_env | (env or {}), stdout=log, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 30
        while not healthy(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"sandbox did not start:\n{log_path.read_text()}")
            time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def until(check: Callable[[], Awaitable[T | None]], what: str, within: float = 15.0) -> T:
    """Poll `check` until it returns something truthy, failing after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def make_zip(files: dict[str, bytes]) -> bytes:
    """A zip archive holding `files`."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def png(color: tuple[int, int, int]) -> bytes:
    """A tiny PNG."""
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass
class Received:
    """One request the in-test webhook receiver got."""

    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """An HTTP listener standing in for our API's webhook endpoint."""

    url: str
    received: list[Received] = field(default_factory=list)
    # Status codes for the next requests, in order; 200 once exhausted.
    plan: list[int] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def snapshot(self) -> list[Received]:
        """What arrived so far."""
        with self.lock:
            return list(self.received)


@contextmanager
def serve(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """Run a threaded HTTP server on 127.0.0.1 and yield its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


FILES = {
    "/photos.zip": make_zip(
        {f"photo-{i}.png": png((40 * i, 90, 200)) for i in range(3)} | {"a.txt": b"caption"}
    ),
    "/corrupt.zip": b"PK\x03\x04 this is not really a zip file",
    "/no-images.zip": make_zip({"notes.txt": b"no photos here", "__MACOSX/._x.jpg": b"fork"}),
}


@pytest.fixture(scope="module")
def sandbox_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One sandbox process for the module, with short durations and fast webhook retries."""
    args = ("--training-seconds=1", "--prediction-seconds=0.5", f"--webhook-secret={SECRET}")
    with run_sandbox(tmp_path_factory.mktemp("logs"), *args, "--webhook-retry-base-seconds=0.05") as url:
        yield url


@pytest.fixture(scope="module")
def files_url() -> Iterator[str]:
    """Serves the training zips (a good one, a corrupt one, one without images; anything else is 404)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            data = FILES.get(self.path)
            self.send_response(200 if data is not None else 404)
            self.send_header("Content-Length", str(len(data or b"")))
            self.end_headers()
            self.wfile.write(data or b"")

        def log_message(self, format: str, *args: Any) -> None:
            """Keep test output quiet."""

    with serve(Handler) as url:
        yield url


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A webhook listener recording every request (answering per its `plan`)."""
    state = Receiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with state.lock:
                state.received.append(Received({k.lower(): v for k, v in self.headers.items()}, body))
                status = state.plan.pop(0) if state.plan else 200
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            """Keep test output quiet."""

    with serve(Handler) as url:
        state.url = f"{url}/webhooks/replicate"
        yield state


@pytest.fixture
async def control(sandbox_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """A plain HTTP client on the sandbox, after resetting it so every test starts clean."""
    async with httpx.AsyncClient(base_url=sandbox_url, timeout=10.0) as http:
        (await http.post("/_sandbox/reset")).raise_for_status()
        yield http


@pytest.fixture
def client(sandbox_url: str, control: httpx.AsyncClient) -> Client:
    """The official SDK, configured the way production configures it (token + base URL)."""
    sdk = Client(api_token=TOKEN, base_url=sandbox_url)
    sdk.poll_interval = 0.05
    return sdk


async def configure(control: httpx.AsyncClient, **knobs: Any) -> dict[str, Any]:
    """Change sandbox knobs."""
    response = await control.post("/_sandbox/config", json=knobs)
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


async def webhook_records(control: httpx.AsyncClient) -> list[dict[str, Any]]:
    """Deliveries the sandbox attempted or dropped."""
    records: list[dict[str, Any]] = (await control.get("/_sandbox/webhooks")).json()["results"]
    return records


async def finished(client: Client, kind: str, job_id: str) -> Any:
    """Poll a training or prediction with the SDK until it is terminal; return it."""
    getter = client.trainings.async_get if kind == "training" else client.predictions.async_get

    async def check() -> Any:
        job = await getter(job_id)
        return job if job.status in ("succeeded", "failed", "canceled") else None

    return await until(check, f"{kind} {job_id} to finish")


async def start_training(client: Client, zip_url: str, name: str = "customer-1", **params: Any) -> Any:
    """Create the destination model and start a LoRA training on it."""
    await client.models.async_create(OWNER, name, visibility="private", hardware="gpu-l40s")
    return await client.trainings.async_create(
        model=TRAINER,
        version=TRAINER_VERSION,
        input={"input_images": zip_url, "trigger_word": "TOK", "steps": 1000},
        destination=f"{OWNER}/{name}",
        **params,
    )


async def trained_version(client: Client, files_url: str, name: str = "customer-1") -> str:
    """A version produced by a successful sandbox training."""
    training = await start_training(client, f"{files_url}/photos.zip", name)
    done = await finished(client, "training", training.id)
    assert done.status == "succeeded", done.error
    return str(done.output["version"])


def signature_ok(headers: dict[str, str], body: bytes, secret: str) -> bool:
    """The Standard Webhooks check: HMAC-SHA256 over `{id}.{timestamp}.{body}` with the decoded secret."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    offered = [part.partition(",")[2] for part in headers["webhook-signature"].split()]
    return any(hmac.compare_digest(expected, sig) for sig in offered)


async def test_models_create_get_and_conflict(client: Client) -> None:
    """models.create returns Replicate's model object, get finds it, a duplicate is 409, a stranger 404."""
    model = await client.models.async_create(
        OWNER, "customer-7", visibility="private", hardware="gpu-l40s", description="LoRA for customer 7"
    )
    assert (model.owner, model.name, model.visibility, model.latest_version) == (
        OWNER,
        "customer-7",
        "private",
        None,
    )
    fetched = await client.models.async_get(f"{OWNER}/customer-7")
    assert fetched.description == "LoRA for customer 7"
    with pytest.raises(ReplicateError) as conflict:
        await client.models.async_create(OWNER, "customer-7", visibility="private", hardware="gpu-l40s")
    assert conflict.value.status == 409
    with pytest.raises(ReplicateError) as missing:
        await client.models.async_get(f"{OWNER}/nobody")
    assert missing.value.status == 404
    with pytest.raises(ReplicateError) as invalid:
        await client.models.async_create(OWNER, "Bad Name", visibility="private", hardware="gpu-l40s")
    assert invalid.value.status == 422


async def test_token_is_required(sandbox_url: str, control: httpx.AsyncClient) -> None:
    """No or wrong token → 401 problem JSON; `Bearer` and `Token` schemes both work."""
    path = f"/v1/models/{TRAINER}"
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        response = await control.get(path, headers=headers)
        assert response.status_code == 401
        assert set(response.json()) == {"title", "detail", "status"}
        assert response.json()["status"] == 401
    for scheme in ("Bearer", "Token"):
        response = await control.get(path, headers={"Authorization": f"{scheme} {TOKEN}"})
        assert response.status_code == 200
    secret = await Client(api_token=TOKEN, base_url=sandbox_url).webhooks.default.async_secret()
    assert secret.key == SECRET


async def test_training_progresses_and_its_version_runs(
    client: Client, control: httpx.AsyncClient, files_url: str, receiver: Receiver
) -> None:
    """starting → processing with rising progress → succeeded; the new version serves predictions."""
    training = await start_training(client, f"{files_url}/photos.zip", webhook=receiver.url)
    assert (training.status, training.output, training.logs, training.error) == ("starting", None, "", None)
    assert (training.model, training.version) == (TRAINER, TRAINER_VERSION)
    assert training.urls["get"].endswith(f"/v1/trainings/{training.id}")
    seen: list[int] = []
    statuses: list[str] = []

    async def succeeded() -> Any:
        current = await client.trainings.async_get(training.id)
        statuses.append(current.status)
        if percentages := [int(p) for p in PROGRESS.findall(current.logs or "")]:
            seen.append(percentages[-1])
        return current if current.status in ("succeeded", "failed", "canceled") else None

    done = await until(succeeded, "training to finish")
    assert done.status == "succeeded", done.error
    assert "processing" in statuses
    assert seen == sorted(seen)
    assert len(set(seen)) >= 2
    assert seen[-1] == 100
    logged = [int(p) for p in PROGRESS.findall(done.logs)]
    assert logged == sorted(logged)
    assert (logged[0], logged[-1]) == (0, 100)
    assert "Extracted 3 images" in done.logs
    assert VERSION_REF.match(done.output["version"])
    assert done.destination == f"{OWNER}/customer-1"
    assert done.started_at
    assert done.completed_at

    version_id = done.output["version"].split(":")[1]
    model = await client.models.async_get(f"{OWNER}/customer-1")
    assert model.latest_version is not None
    assert model.latest_version.id == version_id
    version = await model.versions.async_get(version_id)
    assert version.id == version_id
    async with httpx.AsyncClient() as http:
        weights = await http.get(done.output["weights"])
    assert weights.status_code == 200
    assert weights.content

    prediction = await client.predictions.async_create(
        version=done.output["version"], input={"prompt": "TOK on a beach", "width": 16, "height": 16}
    )
    await prediction.async_wait()
    assert prediction.status == "succeeded"
    assert len(prediction.output or []) == 1

    # The default filter sends every event: start first, completed (the succeeded object) last.
    records = await until(
        lambda: _completed_records(control, training.id), "the training's completed webhook to be delivered"
    )
    events = [r["event"] for r in records if r["object_id"] == training.id]
    assert (events[0], events[-1]) == ("start", "completed")
    assert {"logs", "output"} <= set(events)
    assert records[-1]["object_status"] == "succeeded"
    assert len(receiver.snapshot()) >= len(events)


async def _completed_records(control: httpx.AsyncClient, object_id: str) -> list[dict[str, Any]] | None:
    records = [r for r in await webhook_records(control) if r["object_id"] == object_id]
    done = any(r["event"] == "completed" and r["state"] == "delivered" for r in records)
    return records if done else None


async def test_a_deleted_version_is_forgotten_with_its_predictions_and_files(
    client: Client, sandbox_url: str, files_url: str
) -> None:
    """DELETE a version: it, its predictions, their outputs and the weights are gone; then the empty model."""
    ref = await trained_version(client, files_url, "customer-9")
    key, version_id = ref.split(":")
    training = next(t for t in (await client.trainings.async_list()).results if t.output)
    prediction = await client.predictions.async_create(
        version=ref, input={"prompt": "x", "width": 16, "height": 16}
    )
    await prediction.async_wait()
    assert training.output is not None
    outputs = [*(prediction.output or []), training.output["weights"]]
    with pytest.raises(ReplicateError) as has_versions:
        await client.models.async_delete(key)
    assert has_versions.value.status == 409

    assert await delete_model_version(client, ref) is True
    assert await delete_model_version(client, ref) is False, "404: already gone"
    with pytest.raises(ReplicateError) as gone:
        await client.models.get(key).versions.async_get(version_id)
    assert gone.value.status == 404
    with pytest.raises(ReplicateError) as forgotten:
        await client.predictions.async_get(prediction.id)
    assert forgotten.value.status == 404
    async with httpx.AsyncClient() as http:
        for url in outputs:
            assert (await http.get(url)).status_code == 404, url
    assert (await client.models.async_get(key)).latest_version is None
    assert await delete_model(client, *key.split("/")) is True
    assert await delete_model(client, *key.split("/")) is False


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/missing.zip", "HTTP 404"),
        ("/corrupt.zip", "not a valid zip"),
        ("/no-images.zip", "no image files"),
    ],
)
async def test_training_fails_on_unusable_zip(client: Client, files_url: str, path: str, reason: str) -> None:
    """A zip that cannot be downloaded, is corrupt, or holds no images fails the training readably."""
    training = await start_training(client, f"{files_url}{path}")
    done = await finished(client, "training", training.id)
    assert (done.status, done.output) == ("failed", None)
    assert reason in done.error
    assert reason in done.logs


async def test_training_needs_an_existing_destination(client: Client, files_url: str) -> None:
    """Replicate answers 404 when the destination model does not exist."""
    with pytest.raises(ReplicateError) as error:
        await client.trainings.async_create(
            model=TRAINER,
            version=TRAINER_VERSION,
            input={"input_images": f"{files_url}/photos.zip"},
            destination=f"{OWNER}/not-created",
        )
    assert error.value.status == 404
    assert error.value.detail == "The specified training destination does not exist"


async def test_training_cancel_and_list(
    client: Client, control: httpx.AsyncClient, files_url: str, receiver: Receiver
) -> None:
    """A canceled training stays canceled, sends its completed webhook and shows up in the list."""
    await configure(control, training_seconds=60)
    training = await start_training(
        client, f"{files_url}/photos.zip", webhook=receiver.url, webhook_events_filter=["completed"]
    )
    canceled = await client.trainings.async_cancel(training.id)
    assert canceled.status == "canceled"
    assert canceled.completed_at
    again = await client.trainings.async_cancel(training.id)
    assert again.status == "canceled"
    assert (await client.trainings.async_get(training.id)).status == "canceled"
    records = await until(lambda: _completed_records(control, training.id), "the canceled webhook")
    assert [r["object_status"] for r in records] == ["canceled"]
    page = await client.trainings.async_list()
    assert [t.id for t in page.results] == [training.id]
    assert page.next is None


async def test_prediction_returns_four_pngs_of_the_requested_size(
    client: Client, control: httpx.AsyncClient, files_url: str
) -> None:
    """num_outputs=4 gives 4 URLs of real PNGs at width x height; every input parameter is recorded."""
    version = await trained_version(client, files_url)
    inputs = {
        "prompt": "a photo of TOK holding a mug",
        "negative_prompt": "blurry",
        "num_outputs": 4,
        "width": 96,
        "height": 64,
        "seed": 1234,
        "guidance_scale": 3.5,
        "num_inference_steps": 20,
        "output_format": "png",
    }
    prediction = await client.predictions.async_create(version=version, input=inputs)
    assert (prediction.status, prediction.output) == ("starting", None)
    assert f"{prediction.model}:{prediction.version}" == version
    done = await finished(client, "prediction", prediction.id)
    assert done.status == "succeeded", done.error
    assert done.metrics["predict_time"] > 0
    assert "Using seed: 1234" in done.logs
    assert len(done.output) == 4
    async with httpx.AsyncClient() as http:
        for url in done.output:
            assert url.endswith(".png")
            response = await http.get(url)
            assert response.status_code == 200
            assert response.headers["content-type"] == "image/png"
            image = Image.open(io.BytesIO(response.content))
            assert (image.format, image.size) == ("PNG", (96, 64))
    recorded = (await control.get("/_sandbox/predictions")).json()
    assert recorded["count"] == 1
    assert recorded["results"][0]["object"]["input"] == inputs


async def test_model_predictions_wait_and_unknown_versions(client: Client, files_url: str) -> None:
    """`models.predictions` runs the latest version; `wait=` blocks until done; unknown versions are 422."""
    await trained_version(client, files_url, "customer-2")
    prediction = await client.models.predictions.async_create(
        model=f"{OWNER}/customer-2", input={"prompt": "TOK", "width": 8, "height": 8}, wait=True
    )
    assert prediction.status == "succeeded"
    assert len(prediction.output or []) == 1
    for ref in ("0" * 64, f"{OWNER}/customer-2:{'0' * 64}"):
        with pytest.raises(ReplicateError) as error:
            await client.predictions.async_create(version=ref, input={"prompt": "x"})
        assert error.value.status == 422
    running = await client.predictions.async_create(
        version=prediction.version, input={"prompt": "TOK", "width": 8, "height": 8}
    )
    canceled = await client.predictions.async_cancel(running.id)
    assert canceled.status == "canceled"


async def test_completed_webhook_is_signed_like_replicate(
    client: Client, control: httpx.AsyncClient, files_url: str, receiver: Receiver
) -> None:
    """Only the filtered event arrives, and its signature verifies under the Standard Webhooks formula."""
    version = await trained_version(client, files_url)
    prediction = await client.predictions.async_create(
        version=version,
        input={"prompt": "TOK", "width": 8, "height": 8},
        webhook=receiver.url,
        webhook_events_filter=["completed"],
    )

    async def delivered() -> list[Received]:
        return receiver.snapshot()

    [message] = await until(delivered, "the completed webhook")
    body = json.loads(message.body)
    assert (body["id"], body["status"], len(body["output"])) == (prediction.id, "succeeded", 1)
    assert message.headers["webhook-id"].startswith("msg_")
    assert abs(int(message.headers["webhook-timestamp"]) - time.time()) < 60
    secret = (await client.webhooks.default.async_secret()).key
    assert signature_ok(message.headers, message.body, secret)
    Webhooks.validate(
        headers=message.headers,
        body=message.body.decode(),
        secret=WebhookSigningSecret(key=secret),
        tolerance=60,
    )
    assert not signature_ok(message.headers, message.body + b" ", secret)
    records = await webhook_records(control)
    assert [r["event"] for r in records] == ["completed"]


async def test_webhook_retries_reuse_the_message_id(
    client: Client, control: httpx.AsyncClient, files_url: str, receiver: Receiver
) -> None:
    """Failed deliveries are retried with backoff and the same webhook-id until the receiver accepts."""
    version = await trained_version(client, files_url)
    receiver.plan = [500, 503]
    await client.predictions.async_create(
        version=version,
        input={"prompt": "TOK", "width": 8, "height": 8},
        webhook=receiver.url,
        webhook_events_filter=["completed"],
    )

    async def three() -> list[Received] | None:
        got = receiver.snapshot()
        return got if len(got) >= 3 else None

    attempts = await until(three, "three delivery attempts")
    assert len({a.headers["webhook-id"] for a in attempts}) == 1
    assert all(signature_ok(a.headers, a.body, SECRET) for a in attempts)
    [record] = await webhook_records(control)
    assert record["state"] == "delivered"
    assert [a["status_code"] for a in record["attempts"]] == [500, 503, 200]


async def test_drop_webhooks_records_without_delivering(
    client: Client, control: httpx.AsyncClient, files_url: str, receiver: Receiver
) -> None:
    """With drop_webhooks the sandbox records messages but never sends them."""
    version = await trained_version(client, files_url)
    await configure(control, drop_webhooks=True)
    prediction = await client.predictions.async_create(
        version=version, input={"prompt": "TOK", "width": 8, "height": 8}, webhook=receiver.url
    )

    async def dropped_completion() -> list[dict[str, Any]] | None:
        records = await webhook_records(control)
        return records if any(r["event"] == "completed" for r in records) else None

    records = await until(dropped_completion, "the completed webhook to be recorded")
    assert {r["state"] for r in records} == {"dropped"}
    assert all(r["attempts"] == [] and r["object_id"] == prediction.id for r in records)
    assert receiver.snapshot() == []


async def test_error_rate_surfaces_as_replicate_errors(client: Client, control: httpx.AsyncClient) -> None:
    """error_rate=1 answers every API call with the configured 429/5xx, which the SDK raises as ReplicateError."""
    await configure(control, error_rate=1.0, error_status=[429])
    with pytest.raises(ReplicateError) as throttled:
        await client.predictions.async_create(version="0" * 64, input={})
    assert throttled.value.status == 429
    raw = await control.post("/v1/predictions", json={}, headers={"Authorization": f"Bearer {TOKEN}"})
    assert raw.status_code == 429
    assert raw.headers["retry-after"] == "1"

    # The SDK retries GETs on 429/503/504 only, so a 500 reaches the caller at once.
    await configure(control, error_status=[500])
    with pytest.raises(ReplicateError) as broken:
        await client.models.async_get(TRAINER)
    assert broken.value.status == 500
    requests = (await control.get("/_sandbox/requests")).json()["endpoints"]
    assert requests["POST /v1/predictions"]["faults"] == 2
    assert requests["GET /v1/models/{owner}/{name}"]["faults"] == 1

    await configure(control, error_rate=0.0)
    trainer = await client.models.async_get(TRAINER)
    assert trainer.latest_version is not None
    assert trainer.latest_version.id == TRAINER_VERSION


async def test_fail_predictions_and_trainings(
    client: Client, control: httpx.AsyncClient, files_url: str
) -> None:
    """fail_predictions / fail_trainings end jobs `failed` with the sandbox error."""
    version = await trained_version(client, files_url)
    await configure(control, fail_predictions=True, fail_trainings=True)
    prediction = await client.predictions.async_create(version=version, input={"prompt": "TOK"})
    await prediction.async_wait()
    assert (prediction.status, prediction.error, prediction.output) == (
        "failed",
        "sandbox: prediction failed",
        None,
    )
    training = await start_training(client, f"{files_url}/photos.zip", "customer-9")
    done = await finished(client, "training", training.id)
    assert (done.status, done.error) == ("failed", "sandbox: training failed")


async def test_latency_and_request_log(client: Client, control: httpx.AsyncClient) -> None:
    """latency_ms delays API calls; the request log counts calls per endpoint with timestamps."""
    await configure(control, latency_ms=200)
    started = time.monotonic()
    for _ in range(3):
        await client.models.async_get(TRAINER)
    assert time.monotonic() - started >= 0.6
    entry = (await control.get("/_sandbox/requests")).json()["endpoints"]["GET /v1/models/{owner}/{name}"]
    assert entry["count"] == 3
    assert entry["timestamps"] == sorted(entry["timestamps"])
    assert entry["timestamps"][-1] - entry["timestamps"][0] >= 0.35
    bad = await control.post("/_sandbox/config", json={"error_rate": 2})
    assert bad.status_code == 422


async def test_durations_from_environment_and_public_url(tmp_path: Path) -> None:
    """Without flags the durations come from ECOMDREAM_SANDBOX_*; --public-url shapes the returned URLs."""
    env = {"ECOMDREAM_SANDBOX_TRAINING_SECONDS": "7", "ECOMDREAM_SANDBOX_PREDICTION_SECONDS": "0.25"}
    with run_sandbox(tmp_path, "--public-url=http://sandbox.example:9", env=env) as url:
        async with httpx.AsyncClient() as http:
            config = (await http.get(f"{url}/_sandbox/config")).json()
        assert (config["training_seconds"], config["prediction_seconds"]) == (7, 0.25)
        sdk = Client(api_token=TOKEN, base_url=url)
        model = await sdk.models.async_get("black-forest-labs/flux-schnell")
        assert model.latest_version is not None
        prediction = await sdk.predictions.async_create(
            version=model.latest_version.id, input={"prompt": "x", "width": 8, "height": 8}
        )
        assert prediction.urls is not None
        assert prediction.urls["get"] == f"http://sandbox.example:9/v1/predictions/{prediction.id}"


CREATE_PREDICTION = "POST /v1/predictions"
ACCOUNT = "GET /v1/account"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def hold(control: httpx.AsyncClient, endpoint: str, **options: Any) -> dict[str, Any]:
    """Hold an endpoint's answers; the held endpoints."""
    response = await control.post("/_sandbox/hold", json={"endpoint": endpoint, **options})
    response.raise_for_status()
    endpoints: dict[str, Any] = response.json()["endpoints"]
    return endpoints


async def held(control: httpx.AsyncClient, endpoint: str, count: int) -> None:
    """Wait until exactly `count` answers of the endpoint are held."""

    async def check() -> bool:
        endpoints = (await control.get("/_sandbox/holds")).json()["endpoints"]
        return bool(endpoints.get(endpoint, {}).get("waiting") == count)

    await until(check, f"{count} held answers of {endpoint}")


async def test_a_held_create_is_performed_and_answered_on_release(
    client: Client, control: httpx.AsyncClient
) -> None:
    """A held prediction exists at once; its answer waits for the release, other endpoints answer meanwhile."""
    model = await client.models.async_get("black-forest-labs/flux-schnell")
    assert model.latest_version is not None
    inputs = {"prompt": "held", "width": 8, "height": 8}
    assert await hold(control, CREATE_PREDICTION) == {CREATE_PREDICTION: {"waiting": 0, "seconds": 300}}
    create = asyncio.create_task(
        client.predictions.async_create(version=model.latest_version.id, input=inputs)
    )
    await held(control, CREATE_PREDICTION, 1)

    [recorded] = (await control.get("/_sandbox/predictions")).json()["results"]
    assert (await client.predictions.async_get(recorded["id"])).input == inputs
    assert not create.done(), "the answer came before the release"
    released = await control.post("/_sandbox/release", json={"endpoint": CREATE_PREDICTION})
    assert released.json() == {"endpoints": {}}
    prediction = await asyncio.wait_for(create, 10)
    assert prediction.id == recorded["id"]
    # Released means no longer held: the next create is answered at once.
    again = client.predictions.async_create(version=model.latest_version.id, input=inputs)
    assert (await asyncio.wait_for(again, 10)).id != prediction.id

    typo = await control.post("/_sandbox/hold", json={"endpoint": "POST /v1/prediction"})
    assert typo.status_code == 422
    assert CREATE_PREDICTION in typo.json()["detail"]
    assert "GET /files/{name}" in typo.json()["detail"], "output downloads can be held too"


async def test_a_held_answer_ends_when_its_client_hangs_up_or_its_time_is_up(
    sandbox_url: str, control: httpx.AsyncClient
) -> None:
    """A caller that gives up frees its held answer; `seconds` bounds how long any answer is held."""
    await hold(control, ACCOUNT)
    async with httpx.AsyncClient(base_url=sandbox_url, timeout=30) as caller:
        call = asyncio.create_task(caller.get("/v1/account", headers=AUTH))
        await held(control, ACCOUNT, 1)
        call.cancel()
    await held(control, ACCOUNT, 0)

    await hold(control, ACCOUNT, seconds=0.5)
    started = time.monotonic()
    answer = await control.get("/v1/account", headers=AUTH)
    assert answer.status_code == 200
    assert time.monotonic() - started >= 0.5
    assert (await control.post("/_sandbox/release")).json() == {"endpoints": {}}


async def test_stopping_the_sandbox_sends_its_held_answers(tmp_path: Path) -> None:
    """SIGTERM releases held answers, so the sandbox stops at once instead of waiting for them."""
    async with httpx.AsyncClient(timeout=30) as http:
        with run_sandbox(tmp_path) as url:
            async with httpx.AsyncClient(base_url=url, timeout=10) as control:
                await hold(control, ACCOUNT)
                call = asyncio.create_task(http.get(f"{url}/v1/account", headers=AUTH))
                await held(control, ACCOUNT, 1)
            stopping = time.monotonic()
        # run_sandbox waits 10 s for the process to exit before it kills it.
        assert time.monotonic() - stopping < 8, "the sandbox waited for its held answer"
        assert (await call).status_code == 200
