"""The payload codec: AES-256-GCM with the key id beside each payload, several keys for rotation."""

from __future__ import annotations

import base64
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import get_type_hints

import pytest
from pydantic import SecretStr, ValidationError
from temporalio import workflow
from temporalio.api.common.v1 import Payload
from temporalio.api.sdk.v1 import WorkflowMetadata

import activities.callbacks
import activities.events
import activities.images
import activities.payments
import activities.prompts
import activities.records
import activities.replicate
from ecomdream.clients.temporal import data_converter
from ecomdream.codec.encryption import EncryptionCodec, PayloadDecryptError, is_encrypted
from ecomdream.codec.keys import PayloadKey, PayloadKeyError, keys_from_settings, new_key, parse_keys
from ecomdream.config import Settings
from ecomdream.contracts.training import StagedPhoto
from workflows import WORKFLOWS

PHOTO = StagedPhoto(name="my-daughter-at-the-lake.jpg", key="staging/u/1.jpg")


def key(key_id: str) -> PayloadKey:
    return PayloadKey(key_id, os.urandom(32))


async def encode(codec: EncryptionCodec | None, value: object) -> Payload:
    (payload,) = await data_converter(codec).encode([value])
    return payload


async def decode(codec: EncryptionCodec | None, payload: Payload) -> StagedPhoto:
    (value,) = await data_converter(codec).decode([payload], [StagedPhoto])
    assert isinstance(value, StagedPhoto)
    return value


class TestCodec:
    async def test_round_trip_hides_the_content_and_names_the_key(self) -> None:
        codec = EncryptionCodec([key("k1")])
        payload = await encode(codec, PHOTO)
        assert is_encrypted(payload)
        assert payload.metadata["encryption-key-id"] == b"k1"
        assert b"daughter" not in payload.SerializeToString()
        assert await decode(codec, payload) == PHOTO

    async def test_each_payload_gets_its_own_nonce(self) -> None:
        codec = EncryptionCodec([key("k1")])
        first, second = await codec.encode([Payload(data=b"{}"), Payload(data=b"{}")])
        assert first.data != second.data

    async def test_rotation_encodes_with_the_newest_and_still_decodes_the_old(self) -> None:
        old = key("2026-01")
        before = await encode(EncryptionCodec([old]), PHOTO)
        rotated = EncryptionCodec([old, key("2026-12")])
        assert await decode(rotated, before) == PHOTO
        after = await encode(rotated, PHOTO)
        assert after.metadata["encryption-key-id"] == b"2026-12"

    async def test_unknown_key_id_is_a_clear_error(self) -> None:
        payload = await encode(EncryptionCodec([key("gone")]), PHOTO)
        with pytest.raises(PayloadDecryptError, match=r"key 'gone', which is not configured \(keys: k2\)"):
            await EncryptionCodec([key("k2")]).decode([payload])

    async def test_the_same_id_with_another_key_does_not_authenticate(self) -> None:
        payload = await encode(EncryptionCodec([key("k1")]), PHOTO)
        with pytest.raises(PayloadDecryptError, match="does not authenticate"):
            await EncryptionCodec([key("k1")]).decode([payload])

    async def test_plaintext_payloads_pass_through_decode(self) -> None:
        plain = await encode(None, PHOTO)
        assert await decode(EncryptionCodec([key("k1")]), plain) == PHOTO

    async def test_ui_texts_and_workflow_metadata_stay_readable(self) -> None:
        codec = EncryptionCodec([key("k1")])
        summary = await encode(codec, "Ready — 37 of 100 images left")
        metadata = await encode(codec, WorkflowMetadata(current_details="Paid"))
        assert not is_encrypted(summary)
        assert not is_encrypted(metadata)
        # ... while a model holding a string, and every other value, is encrypted.
        assert is_encrypted(await encode(codec, {"prompt": "Ready"}))
        assert is_encrypted(await encode(codec, 42))

    def test_needs_a_key(self) -> None:
        with pytest.raises(ValueError, match="at least one key"):
            EncryptionCodec([])


class TestKeys:
    def test_entries_keep_their_order_newest_last(self) -> None:
        first, second = new_key("a"), new_key("b")
        keys = parse_keys(f"# rotated 2026-12\n{first}\n\n{second}  # current\n", source="file")
        assert [k.key_id for k in keys] == ["a", "b"]
        assert keys == parse_keys(f"{first},{second}", source="variable")
        assert keys[1].secret == base64.b64decode(second.split(":", 1)[1])

    @pytest.mark.parametrize(
        ("text", "message"),
        [
            ("no-colon", "not `id:base64key`"),
            ("bad id:AAAA", "not `id:base64key`"),
            ("k1:not base64!", "'k1' is not valid base64"),
            (f"k1:{base64.b64encode(os.urandom(16)).decode()}", "'k1' has 16 bytes, AES-256 needs 32"),
        ],
    )
    def test_unusable_entries_are_named_without_the_key(self, text: str, message: str) -> None:
        with pytest.raises(PayloadKeyError, match=message) as refused:
            parse_keys(text, source="ECOMDREAM_PAYLOAD_KEYS")
        assert str(refused.value).startswith("ECOMDREAM_PAYLOAD_KEYS: ")
        secret = text.partition(":")[2]
        assert not secret or secret not in str(refused.value)

    def test_duplicate_ids_are_refused(self) -> None:
        with pytest.raises(PayloadKeyError, match="k1 appears more than once"):
            parse_keys(f"{new_key('k1')},{new_key('k1')}", source="s")

    def test_settings_read_the_variable_or_the_file(self, tmp_path: Path) -> None:
        entry = new_key("k1")
        (tmp_path / "keys").write_text(entry + "\n")
        from_file = keys_from_settings(Settings(payload_keys_file=tmp_path / "keys"))
        from_variable = keys_from_settings(Settings(payload_keys=SecretStr(entry)))
        assert from_file == from_variable
        assert keys_from_settings(Settings()) == []
        (tmp_path / "empty").write_text("# nothing yet\n")
        with pytest.raises(PayloadKeyError, match="no key"):
            keys_from_settings(Settings(payload_keys_file=tmp_path / "empty"))

    def test_both_sources_at_once_are_refused(self, tmp_path: Path) -> None:
        with pytest.raises(ValidationError, match="not both"):
            Settings(payload_keys=SecretStr(new_key("k1")), payload_keys_file=tmp_path / "keys")

    def test_production_refuses_to_start_without_keys(self) -> None:
        with pytest.raises(
            ValidationError, match="set ECOMDREAM_PAYLOAD_KEYS or ECOMDREAM_PAYLOAD_KEYS_FILE"
        ):
            Settings(env="production")
        assert Settings(env="production", payload_keys=SecretStr(new_key("k1"))).payload_keys is not None


def durable_functions() -> Iterator[Callable[..., object]]:
    """Every activity, and every workflow's run method and message handler."""
    modules = (activities.images, activities.payments, activities.prompts, activities.records)
    for module in (*modules, activities.replicate, activities.callbacks, activities.events):
        yield from _activity_methods(module)
    for cls in WORKFLOWS:
        definition = workflow._Definition.must_from_class(cls)
        yield definition.run_fn
        yield from (signal.fn for signal in definition.signals.values())
        yield from (update.fn for update in definition.updates.values())
        yield from (query.fn for query in definition.queries.values())


def _activity_methods(module: ModuleType) -> Iterator[Callable[..., object]]:
    for cls in vars(module).values():
        if isinstance(cls, type) and cls.__module__ == module.__name__:
            yield from (f for f in vars(cls).values() if hasattr(f, "__temporal_activity_definition"))


def test_no_personal_data_can_travel_as_a_bare_string() -> None:
    # Bare strings stay readable (they are how summaries and details travel); what customers write and
    # upload must travel inside contract models, which are encrypted. Provider ids are the exceptions.
    allowed = {("cancel_training", "training_id"), ("cancel_prediction", "prediction_id")}
    bare = set()
    functions = list(durable_functions())
    for function in functions:
        for name, hint in get_type_hints(function).items():
            if hint is str:
                bare.add((function.__name__, name))
    assert len(functions) > 30
    assert bare == allowed
