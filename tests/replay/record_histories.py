"""Record workflow histories for the replay tests: `python -m tests.replay.record_histories [--label L]`.

Runs real journeys on a throwaway embedded stack (a paid journey trained, prompted past a
continue-as-new, an add-on, a failed training with refund, an expired checkout) and saves each
history as JSON under tests/replay/histories/. The stack encrypts payloads with a key of its own;
the histories are saved decoded (their data is made up), so no key is needed to replay them. Re-record only when a change is meant to be
incompatible; otherwise new code must replay the old files (guard changes with workflow.patched).
After a patched change, record with a new `--label` (files `<name>_<label>_run<n>.json`) so both
the old and the new branch of the patch keep replaying.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

import httpx

from ecomdream.devstack.stack import Stack, StackPorts
from tests.fixtures.payloads import convert_history
from tests.fixtures.photos import valid_photos
from tests.fixtures.stack import TEST_PACE

OUT = Path(__file__).parent / "histories"


async def _wait(probe: object, deadline: float = 60) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while not await probe():  # type: ignore[operator]
        if loop.time() > end:
            raise TimeoutError("scenario did not reach its state")
        await asyncio.sleep(0.2)


async def _paid(api: httpx.AsyncClient) -> str:
    created = (await api.post("/api/v1/payments/create", json={"plan_id": 1})).json()
    async with httpx.AsyncClient() as browser:
        await browser.post(created["url"], data={"email": "replay@example.com"})

    async def paid() -> bool:
        return bool((await api.get(f"/api/v1/payments/{created['payment_id']}")).json()["status"] == "paid")

    await _wait(paid)
    return str(created["payment_id"])


async def _ready(api: httpx.AsyncClient, payment_id: str) -> str:
    files = [("images", (n, d, "image/jpeg")) for n, d in valid_photos(5)]
    version_id = str(
        (await api.post(f"/api/v1/versions/train/{payment_id}", params={"class": "mug"}, files=files)).json()[
            "version_id"
        ]
    )

    async def settled() -> bool:
        status = (await api.get(f"/api/v1/versions/info/{version_id}")).json()["status"]
        return status in {"ready", "failed"}

    await _wait(settled)
    return version_id


async def record(stack: Stack, label: str) -> None:
    """Drive the scenarios and save their histories."""
    temporal = await stack.connect_temporal()
    codec = stack.secrets.payload_codec()
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=60) as api:
        happy = await _paid(api)
        version_id = await _ready(api, happy)
        prompts = [
            (
                await api.post(
                    f"/api/v1/prompts/create/{version_id}", json={"prompt": "on a table", "amount_images": 1}
                )
            ).json()
            for _ in range(4)
        ]
        addon = (
            await api.post("/api/v1/payments/create", json={"plan_id": 2, "version_id": version_id})
        ).json()
        async with httpx.AsyncClient() as browser:
            await browser.post(addon["url"], data={"email": "replay@example.com"})
        await temporal.get_workflow_handle(f"addon-{addon['payment_id']}").result()

        async with httpx.AsyncClient(base_url=stack.replicate_url) as sandbox:
            await sandbox.post("/_sandbox/config", json={"fail_trainings": True})
            failed = await _paid(api)
            await _ready(api, failed)
            await sandbox.post("/_sandbox/config", json={"fail_trainings": False})
        await temporal.get_workflow_handle(f"journey-{failed}").result()

    OUT.mkdir(parents=True, exist_ok=True)
    names = {
        f"journey-{happy}": "journey_ready_prompts",
        f"addon-{addon['payment_id']}": "addon_paid",
        f"journey-{failed}": "journey_training_failed",
        f"prompt-{prompts[0]['prompt_id']}": "prompt_succeeded",
    }
    for workflow_id, name in names.items():
        runs = [w async for w in temporal.list_workflows(f"WorkflowId = '{workflow_id}'")]
        for index, run in enumerate(sorted(runs, key=lambda r: r.start_time)):
            encrypted = await temporal.get_workflow_handle(workflow_id, run_id=run.run_id).fetch_history()
            history = await convert_history(encrypted, codec.decode)
            stem = f"{name}_{label}" if label else name
            (OUT / f"{stem}_run{index + 1}.json").write_text(history.to_json())


def main() -> None:
    """Start a throwaway stack, record, stop."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", default="", help="suffix for the file names (e.g. the patch recorded)")
    label = parser.parse_args().label
    with tempfile.TemporaryDirectory() as tmp:
        stack = Stack(data_dir=Path(tmp), ports=StackPorts.free(), extra_env=TEST_PACE)
        try:
            stack.start()
            asyncio.run(record(stack, label))
        finally:
            stack.stop()


if __name__ == "__main__":
    main()
