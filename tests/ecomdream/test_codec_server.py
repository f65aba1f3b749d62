"""The codec server speaks Temporal's remote codec protocol to operators, and to no one else."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import httpx
import pytest
from google.protobuf import json_format
from pydantic import SecretStr
from temporalio.api.common.v1 import Payload, Payloads

from ecomdream.codec.__main__ import config_from_settings
from ecomdream.codec.encryption import EncryptionCodec, is_encrypted
from ecomdream.codec.keys import PayloadKey
from ecomdream.codec.server import CodecServerConfig, create_codec_app
from ecomdream.config import Settings

TOKEN = "operator-token"
UI = "http://127.0.0.1:8233"
CODEC = EncryptionCodec([PayloadKey("k1", os.urandom(32))])
OPERATOR = {"Authorization": f"Bearer {TOKEN}", "X-Namespace": "default"}
PLAIN = Payload(metadata={"encoding": b"json/plain"}, data=b'{"prompt": "a cat in a hat"}')


def client(*, open_to_ui: bool = False) -> httpx.AsyncClient:
    """An HTTP client on a codec server for namespace `default`, UI origin UI, operator token TOKEN."""
    config = CodecServerConfig(namespace="default", token=TOKEN, ui_origins=(UI,), open_to_ui=open_to_ui)
    app = create_codec_app(CODEC, config)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://codec")


@pytest.fixture
async def codec_server() -> AsyncIterator[httpx.AsyncClient]:
    async with client() as http:
        yield http


def body(*payloads: Payload) -> str:
    return json_format.MessageToJson(Payloads(payloads=payloads))


def answer(response: httpx.Response) -> list[Payload]:
    assert response.status_code == 200, response.text
    return list(json_format.Parse(response.text, Payloads()).payloads)


class TestProtocol:
    async def test_encode_then_decode_under_any_prefix(self, codec_server: httpx.AsyncClient) -> None:
        (encoded,) = answer(await codec_server.post("/codec/encode", content=body(PLAIN), headers=OPERATOR))
        assert is_encrypted(encoded)
        assert b"cat" not in encoded.data
        (decoded,) = answer(await codec_server.post("/a/b/decode", content=body(encoded), headers=OPERATOR))
        assert decoded == PLAIN

    async def test_bad_json_and_undecodable_payloads_are_400(self, codec_server: httpx.AsyncClient) -> None:
        bad = await codec_server.post("/codec/decode", content="{not json", headers=OPERATOR)
        assert bad.status_code == 400
        other_key = await EncryptionCodec([PayloadKey("k9", os.urandom(32))]).encode([PLAIN])
        unknown = await codec_server.post("/codec/decode", content=body(*other_key), headers=OPERATOR)
        assert unknown.status_code == 400
        assert "'k9', which is not configured" in unknown.text

    async def test_only_encode_and_decode_exist(self, codec_server: httpx.AsyncClient) -> None:
        response = await codec_server.post("/codec/reveal", content=body(PLAIN), headers=OPERATOR)
        assert response.status_code == 404
        assert (await codec_server.get("/health")).json() == {"status": "ok"}


class TestAccess:
    async def test_without_the_token_nothing_is_decoded(self, codec_server: httpx.AsyncClient) -> None:
        (encoded,) = await CODEC.encode([PLAIN])
        for auth in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
            response = await codec_server.post(
                "/codec/decode", content=body(encoded), headers={"X-Namespace": "default"} | auth
            )
            assert response.status_code == 401, auth
            assert "cat" not in response.text

    async def test_another_namespace_is_refused(self, codec_server: httpx.AsyncClient) -> None:
        headers = OPERATOR | {"X-Namespace": "other"}
        response = await codec_server.post("/codec/decode", content=body(PLAIN), headers=headers)
        assert response.status_code == 403

    async def test_cors_preflight_lets_the_web_ui_in(self, codec_server: httpx.AsyncClient) -> None:
        preflight = {
            "Origin": UI,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,x-namespace,authorization",
        }
        allowed = await codec_server.options("/codec/decode", headers=preflight)
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == UI
        assert "x-namespace" in allowed.headers["access-control-allow-headers"].lower()
        refused = await codec_server.options(
            "/codec/decode", headers=preflight | {"Origin": "https://evil.example"}
        )
        assert refused.status_code == 400
        assert "access-control-allow-origin" not in refused.headers

    async def test_a_ui_without_login_gets_in_only_when_opened_to_it(self) -> None:
        (encoded,) = await CODEC.encode([PLAIN])
        browser = {"Origin": UI, "X-Namespace": "default", "Content-Type": "application/json"}
        async with client() as closed, client(open_to_ui=True) as opened:
            assert (
                await closed.post("/codec/decode", content=body(encoded), headers=browser)
            ).status_code == 401
            response = await opened.post("/codec/decode", content=body(encoded), headers=browser)
            assert answer(response) == [PLAIN]
            assert response.headers["access-control-allow-origin"] == UI
            other_site = browser | {"Origin": "https://evil.example"}
            assert (
                await opened.post("/codec/decode", content=body(encoded), headers=other_site)
            ).status_code == 401

    def test_settings_give_the_namespace_token_and_origins(self) -> None:
        config = config_from_settings(
            Settings(
                temporal_namespace="prod",
                codec_server_token=SecretStr(TOKEN),
                codec_server_ui_origins=" http://127.0.0.1:8080/, http://localhost:8080",
            )
        )
        assert config == CodecServerConfig(
            namespace="prod", token=TOKEN, ui_origins=("http://127.0.0.1:8080", "http://localhost:8080")
        )
