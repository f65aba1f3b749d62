"""Callback URLs, secrets and deliveries on their own: what live mode refuses, sealing, pinned delivery."""

from __future__ import annotations

import base64
import datetime
import os
import ssl
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from ecomdream.callbacks.__main__ import reseal
from ecomdream.callbacks.addresses import CallbackPolicy, CallbackRefused, resolve
from ecomdream.callbacks.sealing import SealedSecretError, SecretBox, new_secret
from ecomdream.clients.callbacks import CallbackSender
from ecomdream.codec.keys import PayloadKey
from ecomdream.db.session import create_sessionmaker
from tests.fixtures.receiver import callback_receiver

LIVE = CallbackPolicy(live=True)
SANDBOX = CallbackPolicy(live=False)


def key(key_id: str) -> PayloadKey:
    return PayloadKey(key_id, os.urandom(32))


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(trust_env=False, limits=httpx.Limits(max_keepalive_connections=0)) as client:
        yield client


class TestWhereCallbacksMayGo:
    @pytest.mark.parametrize(
        ("url", "says"),
        [
            ("ftp://example.com/hook", "must be an http or https URL"),
            ("not a url", "must be an http or https URL"),
            ("https://", "must be an http or https URL"),
            ("https://example.com:99999/", "is not a URL"),
            ("https://me:secret@example.com/hook", "must not contain a user name or password"),
            ("http://example.com/hook", "must use https"),
            ("https://127.0.0.1/hook", "public internet address"),
            ("https://10.1.2.3/hook", "public internet address"),
            ("https://192.168.0.10:8443/hook", "public internet address"),
            ("https://169.254.169.254/latest/meta-data", "public internet address"),
            ("https://100.64.0.1/hook", "public internet address"),
            ("https://0.0.0.0/hook", "public internet address"),
            ("https://224.0.0.251/hook", "public internet address"),
            ("https://240.0.0.1/hook", "public internet address"),
            ("https://[::1]/hook", "public internet address"),
            ("https://[fe80::1]/hook", "public internet address"),
            ("https://[fd00::1]/hook", "public internet address"),
            ("https://[::ffff:127.0.0.1]/hook", "public internet address"),
            # Names are resolved: one that leads to our own machine is refused like its address.
            ("https://localhost/hook", "public internet address"),
            ("https://2130706433/hook", "public internet address"),
            ("https://no-such-host.invalid/hook", "could not be found"),
        ],
    )
    async def test_live_mode_refuses_what_could_reach_our_network(self, url: str, says: str) -> None:
        with pytest.raises(CallbackRefused) as refused:
            await resolve(url, LIVE)
        assert refused.value.status_code == 422
        assert says in refused.value.message

    async def test_live_mode_takes_https_to_a_public_address(self) -> None:
        target = await resolve("https://93.184.215.14:8443/hooks?a=1", LIVE)
        assert (target.host, target.port, str(target.address)) == ("93.184.215.14", 8443, "93.184.215.14")

    async def test_sandbox_mode_takes_plain_http_to_this_machine(self) -> None:
        target = await resolve("http://127.0.0.1:8080/hook", SANDBOX)
        assert str(target.address) == "127.0.0.1"
        with pytest.raises(CallbackRefused, match="http or https"):
            await resolve("ftp://127.0.0.1/hook", SANDBOX)


class TestDelivery:
    async def test_a_delivery_goes_to_the_checked_address_with_the_name_it_was_given(
        self, http: httpx.AsyncClient
    ) -> None:
        secret = new_secret()
        with callback_receiver() as receiver:
            named = receiver.url.replace("127.0.0.1", "localhost")
            answer = await CallbackSender(http, SANDBOX).post(named, "msg_1", '{"type":"x"}', secret)
        (delivery,) = receiver.deliveries
        assert answer.status_code == 204
        assert delivery.headers["host"] == httpx.URL(named).netloc.decode()
        assert delivery.verified(secret) == {"type": "x"}
        assert delivery.headers["webhook-timestamp"] == str(answer.timestamp)

    async def test_live_mode_checks_the_address_again_before_each_delivery(
        self, http: httpx.AsyncClient
    ) -> None:
        # Say the URL was accepted while its name pointed elsewhere: now it leads to this machine.
        with callback_receiver() as receiver:
            with pytest.raises(CallbackRefused, match="public internet address"):
                await CallbackSender(http, LIVE).post(
                    receiver.url.replace("http://", "https://"), "msg_1", "{}", new_secret()
                )
        assert receiver.deliveries == []


def certificate_for(name: str, folder: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server, client) TLS contexts: a self-signed certificate valid for `name` only (no IP address)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    (folder / "cert.pem").write_bytes(pem)
    (folder / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    return server, ssl.create_default_context(cadata=pem.decode())


class TestPinnedTls:
    async def test_https_to_the_checked_address_verifies_the_certificate_of_the_name(
        self, tmp_path: Path
    ) -> None:
        server, client = certificate_for("localhost", tmp_path)
        secret = new_secret()
        async with httpx.AsyncClient(verify=client, trust_env=False) as http:
            with callback_receiver(tls=server) as receiver:
                named = receiver.url.replace("127.0.0.1", "localhost")
                # Connected to 127.0.0.1, yet verified as `localhost` (the certificate names no address).
                answer = await CallbackSender(http, SANDBOX).post(named, "msg_tls", "{}", secret)
                assert answer.status_code == 204
                with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                    await CallbackSender(http, SANDBOX).post(receiver.url, "msg_ip", "{}", secret)
        assert [d.webhook_id for d in receiver.deliveries] == ["msg_tls"]


class TestSecrets:
    def test_a_secret_is_32_random_bytes_in_the_standard_webhooks_format(self) -> None:
        first, second = new_secret(), new_secret()
        assert first != second
        assert first.startswith("whsec_")
        assert len(base64.b64decode(first.removeprefix("whsec_"))) == 32

    def test_sealed_secrets_open_for_their_payment_only_and_after_a_key_rotation(self) -> None:
        old, payment, other = key("k1"), uuid.uuid4(), uuid.uuid4()
        secret = new_secret()
        sealed = SecretBox([old]).seal(secret, payment)
        assert secret not in sealed
        assert secret.removeprefix("whsec_") not in sealed
        assert sealed.startswith("v1:k1:")
        rotated = SecretBox([old, key("k2")])
        assert rotated.open(sealed, payment) == secret
        assert rotated.seal(secret, payment).startswith("v1:k2:")
        with pytest.raises(SealedSecretError):
            rotated.open(sealed, other)
        with pytest.raises(SealedSecretError, match="'k1'"):
            SecretBox([key("k2")]).open(sealed, payment)


async def test_reseal_moves_every_secret_to_the_newest_key(db: AsyncEngine) -> None:
    old, new = key("k1"), key("k2")
    payments = {uuid.uuid4(): new_secret() for _ in range(3)}
    async with db.begin() as conn:
        for payment_id, secret in payments.items():
            await conn.execute(
                text(
                    "INSERT INTO payments (id, plan_id, amount_total, currency, webhook_secret)"
                    " VALUES (:id, 1, 1300, 'usd', :sealed)"
                ),
                {"id": payment_id, "sealed": SecretBox([old]).seal(secret, payment_id)},
            )
    assert await reseal(create_sessionmaker(db), SecretBox([old, new])) == 3
    assert await reseal(create_sessionmaker(db), SecretBox([old, new])) == 0
    async with db.connect() as conn:
        rows = (await conn.execute(text("SELECT id, webhook_secret FROM payments"))).all()
    assert {row[0]: SecretBox([new]).open(row[1], row[0]) for row in rows} == payments
