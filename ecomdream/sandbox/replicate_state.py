"""In-memory state of the Replicate sandbox: settings, fault knobs, models, jobs, files and the request log."""

from __future__ import annotations

import asyncio
import base64
import copy
import hashlib
import re
import secrets
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

JSON = dict[str, Any]
JobKind = Literal["training", "prediction"]

TERMINAL_STATUSES = frozenset({"succeeded", "failed", "canceled"})
WEBHOOK_EVENTS = ("start", "output", "logs", "completed")
DEFAULT_API_TOKEN = "r8_sandbox"
# A fixed key so webhook receivers configured once keep verifying across sandbox restarts.
DEFAULT_WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"ecomdream-replicate-sandbox-key!").decode()
# Hardware SKUs `POST /v1/models` accepts; Replicate answers 4xx for anything else.
HARDWARE = {
    "cpu": "CPU",
    "gpu-t4": "Nvidia T4 GPU",
    "gpu-l40s": "Nvidia L40S GPU",
    "gpu-l40s-2x": "2x Nvidia L40S GPU",
    "gpu-a40-small": "Nvidia A40 GPU",
    "gpu-a40-large": "Nvidia A40 (Large) GPU",
    "gpu-a100-large": "Nvidia A100 (80GB) GPU",
    "gpu-a100-large-2x": "2x Nvidia A100 (80GB) GPU",
    "gpu-h100": "Nvidia H100 GPU",
}
# Public models that exist on the real service and that the app may reference by name (trainer, base models).
SEED_MODELS = {
    "ostris/flux-dev-lora-trainer": "b6af14222e6bd9be257cbc1ea4afda3cd0503e1133083b9d1de0364d8568e6ef",
    "black-forest-labs/flux-dev": hashlib.sha256(b"black-forest-labs/flux-dev").hexdigest(),
    "black-forest-labs/flux-schnell": hashlib.sha256(b"black-forest-labs/flux-schnell").hexdigest(),
}
MODEL_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9._-]*[a-z0-9])?$")
_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
_OPENAPI_SCHEMA: JSON = {
    "openapi": "3.0.2",
    "info": {"title": "Cog", "version": "0.1.0"},
    "components": {"schemas": {"Input": {"type": "object", "properties": {}}, "Output": {}}},
}


def now_iso() -> str:
    """The current UTC time as Replicate formats it (`2024-01-01T12:00:00.123456Z`)."""
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def new_id() -> str:
    """A Replicate-style 26-character lowercase id."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(26))


def version_object(version_id: str) -> JSON:
    """A model version as `GET /v1/models/{owner}/{name}/versions/{id}` returns it."""
    return {
        "id": version_id,
        "created_at": now_iso(),
        "cog_version": "0.13.7",
        "openapi_schema": copy.deepcopy(_OPENAPI_SCHEMA),
    }


class ApiProblem(Exception):
    """An API error answered as Replicate's problem-details JSON."""

    def __init__(
        self, status: int, detail: str, *, title: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.title = title or HTTPStatus(status).phrase
        self.headers = headers or {}

    def body(self) -> JSON:
        """The JSON body (`title`, `detail`, `status`)."""
        return {"title": self.title, "detail": self.detail, "status": self.status}


@dataclass(frozen=True)
class SandboxSettings:
    """Start-up settings of one sandbox process."""

    host: str = "127.0.0.1"
    port: int = 12112
    public_url: str | None = None
    api_token: str = DEFAULT_API_TOKEN
    webhook_secret: str = DEFAULT_WEBHOOK_SECRET
    training_seconds: float = 20.0
    prediction_seconds: float = 3.0
    webhook_retry_base_seconds: float = 1.0
    webhook_max_attempts: int = 4
    account: str = "ecomdream"

    @property
    def base_url(self) -> str:
        """Where clients reach the sandbox; used in `urls` and in output file URLs."""
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")


class Knobs(BaseModel):
    """Fault and speed knobs, changed at runtime through `POST /_sandbox/config`."""

    model_config = ConfigDict(extra="forbid")

    latency_ms: int = Field(default=0, ge=0, le=60_000)
    error_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    error_status: list[int] = Field(default_factory=lambda: [429, 500, 503], min_length=1)
    drop_webhooks: bool = False
    fail_trainings: bool = False
    fail_predictions: bool = False
    # The last N outputs of each prediction are listed but gone when fetched (404), as after Replicate's expiry.
    lost_outputs: int = Field(default=0, ge=0, le=4)
    # Outputs listed at another server's base URL instead of the sandbox's (a foreign host), or served by the
    # sandbox as a 302 redirect to the same path on another server.
    output_base_url: str | None = None
    redirect_outputs_to: str | None = None
    training_seconds: float = Field(default=20.0, gt=0)
    prediction_seconds: float = Field(default=3.0, gt=0)
    webhook_retry_base_seconds: float = Field(default=1.0, ge=0)
    webhook_max_attempts: int = Field(default=4, ge=1, le=20)

    @field_validator("error_status")
    @classmethod
    def _http_errors_only(cls, value: list[int]) -> list[int]:
        if any(not 400 <= code <= 599 for code in value):
            raise ValueError("error_status codes must be 4xx or 5xx")
        return value


@dataclass(frozen=True)
class WebhookTarget:
    """Where a job's events go and which of them."""

    url: str
    events: frozenset[str]


@dataclass
class Job:
    """A training or prediction: its wire object plus what the lifecycle runner needs."""

    kind: JobKind
    obj: JSON
    request: JSON
    targets: list[WebhookTarget]
    seconds: float
    fail: bool
    created_monotonic: float = field(default_factory=time.monotonic)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    last_event_at: dict[str, float] = field(default_factory=dict)

    @property
    def id(self) -> str:
        """The job id."""
        return str(self.obj["id"])

    @property
    def terminal(self) -> bool:
        """Whether the job reached succeeded, failed or canceled."""
        return self.obj["status"] in TERMINAL_STATUSES


class Store:
    """Everything the sandbox remembers; one lock guards it so handlers and runners see consistent objects."""

    def __init__(self, settings: SandboxSettings) -> None:
        self.lock = threading.RLock()
        self.settings = settings
        self.initial_knobs = Knobs(
            training_seconds=settings.training_seconds,
            prediction_seconds=settings.prediction_seconds,
            webhook_retry_base_seconds=settings.webhook_retry_base_seconds,
            webhook_max_attempts=settings.webhook_max_attempts,
        )
        self.knobs = self.initial_knobs
        # The account's signing secret: rotated by `POST /_sandbox/webhook_secret/rotate`, as in the dashboard.
        self.webhook_secret = settings.webhook_secret
        self.models: dict[str, JSON] = {}
        self.versions: dict[str, list[JSON]] = {}
        self.jobs: dict[str, Job] = {}
        self.files: dict[str, tuple[bytes, str]] = {}
        self.requests: dict[str, list[float]] = {}
        self.faults: Counter[str] = Counter()
        self.create_requests: Counter[str] = Counter()
        self.reset()

    def reset(self) -> None:
        """Forget everything except the seeded public models; knobs return to their start-up values."""
        with self.lock:
            self.knobs = self.initial_knobs
            self.webhook_secret = self.settings.webhook_secret
            self.models.clear()
            self.versions.clear()
            self.jobs.clear()
            self.files.clear()
            self.requests.clear()
            self.faults.clear()
            self.create_requests.clear()
            for key, version_id in SEED_MODELS.items():
                owner, name = key.split("/")
                self.create_model(
                    {"owner": owner, "name": name, "visibility": "public", "hardware": "gpu-h100"}
                )
                self.add_version(key, version_id)

    def update_knobs(self, changes: JSON) -> Knobs:
        """Merge a partial update into the knobs (pydantic validates it)."""
        with self.lock:
            self.knobs = Knobs.model_validate(self.knobs.model_dump() | changes)
            return self.knobs

    def create_model(self, body: JSON) -> JSON:
        """Create a model from a `POST /v1/models` body, validating it like Replicate."""
        owner, name = body.get("owner"), body.get("name")
        visibility, hardware = body.get("visibility"), body.get("hardware")
        if not isinstance(owner, str) or not owner or not isinstance(name, str) or not name:
            raise ApiProblem(422, "owner and name are required")
        if not MODEL_NAME.match(name):
            raise ApiProblem(
                422, "name may only contain lowercase letters, numbers, dashes, underscores and periods"
            )
        if visibility not in ("public", "private"):
            raise ApiProblem(422, "visibility must be 'public' or 'private'")
        if hardware not in HARDWARE:
            raise ApiProblem(422, f"hardware must be one of: {', '.join(HARDWARE)}")
        key = f"{owner}/{name}"
        with self.lock:
            if key in self.models:
                raise ApiProblem(409, "A model with that name and owner already exists.")
            model: JSON = {
                "url": f"https://replicate.com/{key}",
                "owner": owner,
                "name": name,
                "description": body.get("description"),
                "visibility": visibility,
                "github_url": body.get("github_url"),
                "paper_url": body.get("paper_url"),
                "license_url": body.get("license_url"),
                "run_count": 0,
                "cover_image_url": body.get("cover_image_url"),
                "default_example": None,
                "latest_version": None,
            }
            self.models[key] = model
            self.versions[key] = []
            return copy.deepcopy(model)

    def get_model(self, key: str) -> JSON:
        """A copy of a model, or 404."""
        with self.lock:
            if key not in self.models:
                raise ApiProblem(404, "Not found.")
            return copy.deepcopy(self.models[key])

    def add_version(self, key: str, version_id: str) -> JSON:
        """Push a new version to a model; it becomes `latest_version`."""
        with self.lock:
            version = version_object(version_id)
            self.versions[key].insert(0, version)
            self.models[key]["latest_version"] = copy.deepcopy(version)
            return copy.deepcopy(version)

    def delete_version(self, key: str, version_id: str) -> None:
        """Delete a version with its predictions and every file they made (and the weights); 404 if unknown."""
        with self.lock:
            versions = self.versions.get(key)
            if versions is None or not any(v["id"] == version_id for v in versions):
                raise ApiProblem(404, "Not found.")
            self.versions[key] = [v for v in versions if v["id"] != version_id]
            self.models[key]["latest_version"] = (
                copy.deepcopy(self.versions[key][0]) if self.versions[key] else None
            )
            trained = f"{key}:{version_id}"
            for job in list(self.jobs.values()):
                if job.kind == "prediction" and job.obj["version"] == version_id:
                    del self.jobs[job.id]
                    self._forget_files(f"{job.id}-")
                elif job.kind == "training" and (job.obj.get("output") or {}).get("version") == trained:
                    self._forget_files(f"{job.id}-")

    def delete_model(self, key: str) -> None:
        """Delete a private model that has no versions (Replicate's rules); 404 if unknown."""
        with self.lock:
            model = self.models.get(key)
            if model is None:
                raise ApiProblem(404, "Not found.")
            if model["visibility"] != "private":
                raise ApiProblem(403, "Only private models can be deleted.")
            if self.versions[key]:
                raise ApiProblem(409, "A model with versions cannot be deleted; delete its versions first.")
            del self.models[key]
            del self.versions[key]

    def _forget_files(self, prefix: str) -> None:
        for name in [name for name in self.files if name.startswith(prefix)]:
            del self.files[name]

    def get_versions(self, key: str) -> list[JSON]:
        """A model's versions, newest first (404 if the model does not exist)."""
        with self.lock:
            if key not in self.versions:
                raise ApiProblem(404, "Not found.")
            return copy.deepcopy(self.versions[key])

    def resolve_version(self, ref: str) -> tuple[str, str] | None:
        """(`owner/name`, version id) for `<id>` or `owner/name:<id>`, or None when no model has it."""
        wanted_model, _, version_id = ref.rpartition(":")
        with self.lock:
            for key, versions in self.versions.items():
                if wanted_model and key != wanted_model:
                    continue
                if any(v["id"] == version_id for v in versions):
                    return key, version_id
        return None

    def add_job(self, job: Job) -> None:
        """Remember a newly created job."""
        with self.lock:
            self.jobs[job.id] = job

    def job(self, kind: JobKind, job_id: str) -> Job:
        """A job by id, or 404."""
        with self.lock:
            found = self.jobs.get(job_id)
            if found is None or found.kind != kind:
                raise ApiProblem(404, "Not found.")
            return found

    def jobs_of(self, kind: JobKind) -> list[Job]:
        """Jobs of one kind, newest first."""
        with self.lock:
            return [job for job in reversed(self.jobs.values()) if job.kind == kind]

    def snapshot(self, job: Job) -> JSON:
        """A consistent deep copy of a job's wire object."""
        with self.lock:
            return copy.deepcopy(job.obj)

    def put_file(self, name: str, data: bytes, media_type: str) -> None:
        """Serve bytes at `/files/{name}`."""
        with self.lock:
            self.files[name] = (data, media_type)

    def record_request(self, endpoint: str) -> None:
        """Count one API call (by method and route template) with its time."""
        with self.lock:
            self.requests.setdefault(endpoint, []).append(time.time())
