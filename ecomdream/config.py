"""Settings: one class, read from ECOMDREAM_* environment variables (and `.env`) by composition roots only."""

from __future__ import annotations

from email.utils import parseaddr
from enum import StrEnum
from functools import cached_property
from ipaddress import ip_network
from pathlib import Path
from typing import Self
from urllib.parse import urlsplit

from limits import parse
from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SANDBOX_STRIPE_KEY = "sk_test_sandbox"
SANDBOX_STRIPE_WEBHOOK_SECRET = "whsec_sandbox_stripe_webhook_secret"
SANDBOX_REPLICATE_TOKEN = "r8_sandbox"
LIVE_STRIPE_KEY_PREFIXES = ("sk_live_", "rk_live_")
# Replicate's API lives on replicate.com; its generated files on replicate.delivery (and its subdomains).
REPLICATE_API_DOMAIN = "replicate.com"
REPLICATE_OUTPUT_HOSTS = "replicate.delivery,*.replicate.delivery"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def is_replicate_address(url: str) -> bool:
    """Whether url is Replicate's own https API (replicate.com or a subdomain), not a sandbox."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    return parts.scheme == "https" and (
        host == REPLICATE_API_DOMAIN or host.endswith(f".{REPLICATE_API_DOMAIN}")
    )


class ProviderMode(StrEnum):
    """Whether Stripe and Replicate calls go to the shipped sandboxes or to the real providers."""

    SANDBOX = "sandbox"
    LIVE = "live"


class Settings(BaseSettings):
    """Every knob of the service; see `.env.example` for the full list with defaults."""

    # env_ignore_empty: an empty line copied from .env.example means "use the default", not "".
    # hide_input_in_errors: a validation error must never print the environment (it holds secrets).
    model_config = SettingsConfigDict(
        env_prefix="ECOMDREAM_",
        env_file=".env",
        extra="ignore",
        env_ignore_empty=True,
        hide_input_in_errors=True,
    )

    env: str = "development"
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    public_api_url: str = Field(
        default="http://127.0.0.1:8000",
        description="Base URL at which Stripe and Replicate reach our webhooks.",
    )

    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(default=9100, description="API Prometheus endpoint (/metrics); 0 disables it")
    worker_metrics_port: int = Field(default=9101, description="Worker (Temporal SDK) Prometheus endpoint")

    database_url: SecretStr = SecretStr("postgresql+asyncpg://postgres@127.0.0.1:5432/ecomdream")
    database_pool_size: int = 10

    temporal_address: str = "127.0.0.1:7233"
    temporal_namespace: str = "default"
    temporal_task_queue: str = "ecomdream"
    temporal_api_key: SecretStr | None = None
    temporal_tls: bool = False
    # mTLS (Temporal Cloud namespaces with certificates): client certificate and key, PEM files.
    temporal_tls_cert_path: Path | None = None
    temporal_tls_key_path: Path | None = None
    temporal_tls_ca_path: Path | None = None

    # Payload encryption (AES-256-GCM): `id:base64key` entries, newest last; new payloads use the newest.
    payload_keys: SecretStr | None = Field(
        default=None, description="Comma-separated id:base64key pairs, newest last"
    )
    payload_keys_file: Path | None = Field(
        default=None, description="A file with one id:base64key per line, newest last"
    )
    # The codec server: decodes payloads for the Web UI and the temporal CLI (--codec-endpoint).
    codec_server_host: str = "127.0.0.1"
    codec_server_port: int = 8234
    codec_server_token: SecretStr | None = Field(
        default=None, description="Operators send it as `Authorization: Bearer <token>`"
    )
    codec_server_ui_origins: str = Field(
        default="http://127.0.0.1:8233,http://localhost:8233",
        description="Comma-separated origins of the Temporal Web UI (CORS)",
    )
    codec_server_open_to_ui: bool = Field(
        default=False,
        description=(
            "Answer browsers on the UI origins without the token: only for a UI no one but operators can "
            "reach, which cannot send a token itself (no login in front of it)"
        ),
    )

    s3_endpoint_url: str | None = "http://127.0.0.1:8333"
    s3_region: str = "us-east-1"
    s3_access_key_id: SecretStr = SecretStr("ecomdream")
    s3_secret_access_key: SecretStr = SecretStr("ecomdream-secret")
    s3_bucket: str = "ecomdream"
    s3_public_base_url: str | None = None

    # Customer e-mail (version ready, training failed, images added); see ecomdream/mail.py.
    smtp_host: str | None = Field(
        default=None, description="SMTP server for customer e-mail; unset: no e-mail is sent"
    )
    smtp_port: int = Field(default=587, ge=1, le=65535, description="587 (STARTTLS) or 465 (TLS)")
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_from: str | None = Field(
        default=None, description="The From of every message, e.g. `ecomdream <models@example.com>`"
    )
    smtp_starttls: bool = Field(
        default=True,
        description="Require STARTTLS after connecting (port 587); the connection fails without it",
    )
    smtp_tls: bool = Field(
        default=False, description="TLS from the first byte (port 465) instead of STARTTLS"
    )
    smtp_timeout_seconds: float = Field(
        default=30.0, gt=0, description="How long one SMTP conversation may take before it is retried"
    )

    stripe_api_key: SecretStr | None = None
    stripe_webhook_secret: SecretStr = SecretStr(SANDBOX_STRIPE_WEBHOOK_SECRET)
    stripe_api_base: str | None = None
    stripe_currency: str = "usd"
    # Stripe wants 30 min to 24 h after creation; expires_at is computed just before the call, hence 31.
    checkout_expiry_minutes: int = Field(default=60, ge=31, le=24 * 60)
    checkout_success_url: str = "http://127.0.0.1:8000/docs"
    checkout_cancel_url: str = "http://127.0.0.1:8000/docs"

    replicate_api_token: SecretStr | None = None
    replicate_api_base: str | None = None
    replicate_webhook_secret: SecretStr | None = Field(
        default=None, description="Fetched from Replicate on the first webhook when not set."
    )
    replicate_webhook_secret_refetch_seconds: float = Field(
        default=60.0,
        ge=0,
        description=(
            "A fetched signing secret is fetched again after a bad signature (it may have been rotated), "
            "at most this often"
        ),
    )
    replicate_output_hosts: str = Field(
        default=REPLICATE_OUTPUT_HOSTS,
        description=(
            "Hosts generated images are downloaded from, over https only (comma-separated; `*.host` matches "
            "its subdomains). With a sandbox ECOMDREAM_REPLICATE_API_BASE, only the sandbox's own address"
        ),
    )
    replicate_owner: str = "ecomdream"
    replicate_trainer: str = "ostris/flux-dev-lora-trainer"
    replicate_trainer_version: str = "b6af14222e6bd9be257cbc1ea4afda3cd0503e1133083b9d1de0364d8568e6ef"
    replicate_hardware: str = "gpu-t4"
    replicate_rate_share: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description=(
            "The share of Replicate's rate limits (600 creates and 3,000 other requests a minute per "
            "account) that all workers together may use; the rest is left for other clients of the account"
        ),
    )
    training_steps: int = Field(default=1000, ge=3, le=6000)
    # Waiting for a job: only its webhook while it should still run, then polls (see workflows/waiting.py).
    training_expected_minutes: float = Field(
        default=20.0,
        gt=0,
        description=(
            "How long a training usually takes on Replicate: until then only its webhook is awaited (no "
            "call to Replicate); after it, polls notice a lost webhook"
        ),
    )
    training_poll_seconds: float = Field(
        default=120.0,
        gt=0,
        description=(
            "The longest gap between two polls of an overdue training (gaps start at a tenth of the "
            "expected time and grow by 10 %)"
        ),
    )
    training_deadline_minutes: float = Field(default=120.0, gt=0)
    training_retry_window_minutes: float = Field(
        default=30.0,
        ge=0,
        description=(
            "A failed training waits this long for an operator's retry (same photos, once) before the "
            "payment is refunded and the photos deleted; 0 refunds at once"
        ),
    )

    prompt_accept_seconds: float = Field(
        default=30.0,
        gt=0,
        description=(
            "How long a prompt request waits for the journey to take it (longer than a worker's "
            "sticky-queue timeout, so a restarted worker does not turn prompts away)"
        ),
    )
    prompt_wait_seconds: float = Field(
        default=60.0, gt=0, description="How long a prompt request waits for images"
    )
    prompt_expected_seconds: float = Field(
        default=10.0,
        gt=0,
        description="How long a prediction usually takes: until then only its webhook is awaited",
    )
    prompt_poll_seconds: float = Field(
        default=5.0, gt=0, description="The longest gap between two polls of an overdue prediction"
    )
    prompt_deadline_seconds: float = Field(default=600.0, gt=0)
    journey_prompts_per_run: int = Field(
        default=500, ge=1, description="Continue-as-new after this many prompts"
    )

    upload_max_file_mb: float = Field(default=25.0, gt=0)
    upload_max_total_mb: float = Field(default=300.0, gt=0)
    upload_min_files: int = 5
    upload_max_files: int = 30
    photo_min_side: int = 512
    photo_max_megapixels: float = 50.0
    photo_max_side: int = 1024

    checkout_rate_limit: str = Field(
        default="10/minute",
        description="Checkouts one client address may open (the `limits` format: N/second|minute|hour|day)",
    )
    failed_token_rate_limit: str = Field(
        default="30/minute",
        description="Requests with a wrong access token one client address may make before it gets 429",
    )
    uploads_in_flight: int = Field(
        default=2, ge=1, description="Photo uploads one client address may have in flight at once"
    )
    trusted_proxies: str = Field(
        default="",
        description=(
            "Comma-separated addresses or networks of the proxies in front of the API; only their "
            "X-Forwarded-For is believed"
        ),
    )
    image_url_minutes: int = Field(
        default=60, ge=5, le=7 * 24 * 60, description="How long a presigned image URL handed out stays valid"
    )

    @model_validator(mode="after")
    def _limits_parse(self) -> Self:
        """A limit that does not parse would otherwise fail at the first request, not at start."""
        for name in ("checkout_rate_limit", "failed_token_rate_limit"):
            try:
                parse(getattr(self, name))
            except ValueError as exc:
                raise ValueError(f"ECOMDREAM_{name.upper()} is not a rate like 10/minute") from exc
        for network in self.trusted_proxy_networks_text():
            try:
                ip_network(network, strict=False)
            except ValueError as exc:
                raise ValueError(
                    f"ECOMDREAM_TRUSTED_PROXIES: {network!r} is not an address or network"
                ) from exc
        return self

    @model_validator(mode="after")
    def _mail_is_complete(self) -> Self:
        """An SMTP host without a sender, or a password sent in clear across a network, is refused at start."""
        if not self.smtp_host:
            return self
        if self.smtp_tls and self.smtp_starttls:
            raise ValueError(
                "set ECOMDREAM_SMTP_TLS (port 465) or ECOMDREAM_SMTP_STARTTLS (port 587), not both: "
                "set ECOMDREAM_SMTP_STARTTLS=false with ECOMDREAM_SMTP_TLS=true"
            )
        _, address = parseaddr(self.smtp_from or "")
        if "@" not in address:
            raise ValueError(
                "set ECOMDREAM_SMTP_FROM to the sender of customer e-mail, e.g. `ecomdream <models@example.com>`"
            )
        encrypted = self.smtp_tls or self.smtp_starttls
        if self.smtp_password and not encrypted and self.smtp_host not in LOOPBACK_HOSTS:
            raise ValueError(
                "ECOMDREAM_SMTP_PASSWORD would cross the network in clear: set ECOMDREAM_SMTP_STARTTLS=true "
                "or ECOMDREAM_SMTP_TLS=true"
            )
        return self

    def trusted_proxy_networks_text(self) -> list[str]:
        """The configured proxies, one entry each."""
        return [entry.strip() for entry in self.trusted_proxies.split(",") if entry.strip()]

    @model_validator(mode="after")
    def _production_encrypts_payloads(self) -> Self:
        """Refuse to store customers' prompts and photo names in clear in a real deployment."""
        keys = (self.payload_keys, self.payload_keys_file)
        if all(keys):
            raise ValueError("set ECOMDREAM_PAYLOAD_KEYS or ECOMDREAM_PAYLOAD_KEYS_FILE, not both")
        if not any(keys) and (self.provider_mode is ProviderMode.LIVE or self.env == "production"):
            raise ValueError(
                "set ECOMDREAM_PAYLOAD_KEYS or ECOMDREAM_PAYLOAD_KEYS_FILE: in production, workflow payloads "
                "(prompts, photo names) are encrypted before they reach Temporal"
            )
        return self

    @model_validator(mode="after")
    def _live_is_complete(self) -> Self:
        """Refuse to start half live: real money for sandbox models, webhooks anyone could forge, or live
        credentials sent to a sandbox."""
        if not (self.stripe_api_key or self.replicate_api_token):
            return self
        problems = self._missing_for_live() + self._sandboxes_with_live_credentials()
        if problems:
            raise ValueError("live providers are not fully configured: " + "; ".join(problems))
        return self

    def _missing_for_live(self) -> list[str]:
        problems = []
        if not (self.stripe_api_key and self.replicate_api_token):
            problems.append(
                "set both ECOMDREAM_STRIPE_API_KEY and ECOMDREAM_REPLICATE_API_TOKEN for live providers "
                "(or neither for the sandboxes)"
            )
        if self.stripe_api_key and self.stripe_webhook_secret.get_secret_value() in (
            "",
            SANDBOX_STRIPE_WEBHOOK_SECRET,
        ):
            problems.append(
                "set ECOMDREAM_STRIPE_WEBHOOK_SECRET to the signing secret (whsec_...) of the webhook endpoint "
                "in the Stripe Dashboard; the default is the sandbox's, which anyone can read"
            )
        host = urlsplit(self.public_api_url).hostname or ""
        if host in ("127.0.0.1", "localhost", "0.0.0.0", "::1") or not host:
            problems.append(
                "set ECOMDREAM_PUBLIC_API_URL to the public https address of the API: the providers "
                f"cannot deliver webhooks to {self.public_api_url}"
            )
        return problems

    def _sandboxes_with_live_credentials(self) -> list[str]:
        # A live credential sent to a sandbox (or whatever listens at its address) is a leaked credential.
        problems = []
        stripe_key = self.stripe_api_key.get_secret_value() if self.stripe_api_key else ""
        if stripe_key.startswith(LIVE_STRIPE_KEY_PREFIXES) and self.stripe_api_base:
            problems.append(
                "leave ECOMDREAM_STRIPE_API_BASE empty: ECOMDREAM_STRIPE_API_KEY is a live key "
                "(sk_live_/rk_live_) and would be sent to that address instead of Stripe"
            )
        if (
            self.replicate_api_token
            and self.replicate_api_base
            and not is_replicate_address(self.replicate_api_base)
        ):
            problems.append(
                "leave ECOMDREAM_REPLICATE_API_BASE empty: ECOMDREAM_REPLICATE_API_TOKEN is set and would "
                "be sent to that address instead of Replicate"
            )
        return problems

    @cached_property
    def provider_mode(self) -> ProviderMode:
        """Live only when both real provider credentials are configured."""
        if self.stripe_api_key and self.replicate_api_token:
            return ProviderMode.LIVE
        return ProviderMode.SANDBOX

    def stripe_key(self) -> str:
        """The Stripe secret key in use (the sandbox key when none is configured)."""
        return self.stripe_api_key.get_secret_value() if self.stripe_api_key else SANDBOX_STRIPE_KEY

    def replicate_token(self) -> str:
        """The Replicate token in use (the sandbox token when none is configured)."""
        return (
            self.replicate_api_token.get_secret_value()
            if self.replicate_api_token
            else SANDBOX_REPLICATE_TOKEN
        )
