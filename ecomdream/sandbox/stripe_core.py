"""Shared building blocks of the Stripe sandbox: config, Stripe-shaped errors, ids, form decoding, money."""

from __future__ import annotations

import re
import secrets
import string
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

JSON = dict[str, Any]

_ID_ALPHABET = string.ascii_letters + string.digits
_KEY_PART = re.compile(r"\[([^\]]*)\]")

# Stripe stores these amounts without minor units; everything else has two decimals.
ZERO_DECIMAL_CURRENCIES = frozenset(
    {
        "bif",
        "clp",
        "djf",
        "gnf",
        "jpy",
        "kmf",
        "krw",
        "mga",
        "pyg",
        "rwf",
        "ugx",
        "vnd",
        "vuv",
        "xaf",
        "xof",
        "xpf",
    }
)
_SYMBOLS = {"usd": "$", "eur": "€", "gbp": "£", "jpy": "¥", "cad": "CA$", "aud": "A$", "chf": "CHF "}
# Stripe's minimum charge amounts (https://docs.stripe.com/currencies#minimum-and-maximum-charge-amounts).
MINIMUM_AMOUNTS = {"usd": 50, "eur": 50, "gbp": 30, "cad": 50, "aud": 50, "chf": 50, "jpy": 50}


@dataclass
class SandboxConfig:
    """Runtime settings of one sandbox instance; webhook fields can change at runtime."""

    host: str = "127.0.0.1"
    port: int = 12111
    webhook_url: str | None = None
    webhook_secret: str = "whsec_sandbox"
    public_url: str | None = None
    # None accepts any test-mode secret key, like a fresh Stripe test account would accept its own keys.
    api_key: str | None = None
    retry_base_delay: float = 1.0
    max_attempts: int = 5
    delivery_timeout: float = 10.0
    expiry_sweep_interval: float = 5.0
    # An outage: every /v1 call answers 503 api_error, as Stripe does when it cannot serve a request.
    unavailable: bool = False

    @property
    def base_url(self) -> str:
        """The URL customers' browsers use to reach the hosted pages."""
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")


class StripeAPIError(Exception):
    """An error rendered in Stripe's `{"error": {...}}` shape."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 400,
        type_: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.type = type_
        self.code = code
        self.param = param

    def body(self) -> JSON:
        """The JSON body Stripe would send for this error."""
        error: JSON = {"message": self.message, "type": self.type}
        if self.code is not None:
            error["code"] = self.code
            error["doc_url"] = f"https://stripe.com/docs/error-codes/{self.code.replace('_', '-')}"
        if self.param is not None:
            error["param"] = self.param
        return {"error": error}


class SessionStateError(Exception):
    """A hosted-page action that the session's current state forbids (paid twice, paid after expiry)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def resource_missing(kind: str, object_id: str, param: str = "id") -> StripeAPIError:
    """Stripe's 404 for an unknown object id."""
    return StripeAPIError(f"No such {kind}: '{object_id}'", status=404, code="resource_missing", param=param)


def invalid(message: str, param: str | None = None, code: str | None = None) -> StripeAPIError:
    """A plain 400 invalid_request_error."""
    return StripeAPIError(message, param=param, code=code)


def new_id(prefix: str, length: int = 24) -> str:
    """A random Stripe-looking id such as `pi_3Qx...`."""
    return prefix + "".join(secrets.choice(_ID_ALPHABET) for _ in range(length))


def now() -> int:
    """Current unix time in whole seconds, as Stripe timestamps are."""
    return int(time.time())


def decode_form(body: str) -> JSON:
    """Decode Stripe's bracketed form encoding (`a[b][0][c]=v`) into nested dicts and lists."""
    root: JSON = {}
    for raw_key, value in parse_qsl(body, keep_blank_values=True):
        head, _, rest = raw_key.partition("[")
        parts = [head, *_KEY_PART.findall("[" + rest)] if rest else [head]
        node = root
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        last = parts[-1]
        node[last if last else str(len(node))] = value
    result = _listify(root, "")
    assert isinstance(result, dict)
    return result


def _listify(node: Any, name: str) -> Any:
    if not isinstance(node, dict):
        return node
    converted = {key: _listify(value, key) for key, value in node.items()}
    # Metadata keys are free-form, so "0" there is a key, not an index.
    if name != "metadata" and converted and all(key.isdigit() for key in converted):
        return [converted[key] for key in sorted(converted, key=int)]
    return converted


def form_fingerprint(body: str) -> list[tuple[str, str]]:
    """Order-insensitive view of a form body, used to compare idempotent requests."""
    return sorted(parse_qsl(body, keep_blank_values=True))


def reject_unknown(params: JSON, allowed: frozenset[str], prefix: str = "") -> None:
    """Stripe rejects parameters it does not know, naming the first one."""
    for key in params:
        if key not in allowed:
            name = f"{prefix}[{key}]" if prefix else key
            raise invalid(f"Received unknown parameter: {name}", param=name)


def parse_int(value: Any, param: str, *, minimum: int | None = None) -> int:
    """Parse an integer parameter with Stripe's error messages."""
    if not isinstance(value, str) or not re.fullmatch(r"-?\d+", value):
        raise invalid(f"Invalid integer: {value}", param=param)
    number = int(value)
    if minimum is not None and number < minimum:
        kind = "positive integer" if minimum > 0 else "non-negative integer"
        raise invalid(f"Invalid {kind}", param=param)
    return number


def parse_bool(value: Any, param: str) -> bool:
    """Parse `true`/`false` the way the SDK sends booleans."""
    if value in ("true", "false"):
        return bool(value == "true")
    raise invalid(f"Invalid boolean: {value}", param=param)


def parse_metadata(value: Any, param: str = "metadata") -> dict[str, str]:
    """Validate a metadata hash against Stripe's limits (50 keys, 40-char keys, 500-char values)."""
    if value is None or value == "":
        return {}
    if not isinstance(value, dict):
        raise invalid("Invalid object", param=param)
    if len(value) > 50:
        raise invalid("Invalid metadata: too many keys (maximum 50)", param=param)
    result: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(item, str):
            raise invalid("Invalid metadata: values must be strings", param=f"{param}[{key}]")
        if len(key) > 40 or len(item) > 500:
            raise invalid(
                "Metadata keys are limited to 40 characters and values to 500", param=f"{param}[{key}]"
            )
        if item:
            result[key] = item
    return result


def format_money(amount: int, currency: str) -> str:
    """Render minor units as a price a customer recognises, e.g. `$79.20`."""
    code = currency.lower()
    major = f"{amount:,}" if code in ZERO_DECIMAL_CURRENCIES else f"{amount / 100:,.2f}"
    symbol = _SYMBOLS.get(code)
    return f"{symbol}{major}" if symbol else f"{major} {code.upper()}"


def list_object(url: str, data: list[JSON], limit: int = 10) -> JSON:
    """Stripe's list envelope."""
    return {"object": "list", "data": data[:limit], "has_more": len(data) > limit, "url": url}


def parse_limit(query: JSON) -> int:
    """The `limit` query parameter, 1..100 like Stripe."""
    raw = query.get("limit")
    if raw is None:
        return 10
    limit = parse_int(raw, "limit")
    if not 1 <= limit <= 100:
        raise invalid("Invalid limit: must be between 1 and 100", param="limit")
    return limit
