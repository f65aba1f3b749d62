"""Record a workflow history for every path of the replay tests: `python -m tests.replay.record_histories`.

Two recorders, one command:
- real journeys on a throwaway embedded stack, driven through the API and operator updates
  (`tests.replay.stack_paths`: the paths the sandboxes can cause on demand);
- the real workflows with stand-in activities on the time-skipping test server
  (`tests.replay.standin_paths`: half-hour photo checks, ledger bugs and outages, lost photos, ...).

Every run of each path's workflow id is saved as `tests/replay/histories/<path>_run<n>.json`, oldest first.
Re-record only when a change is meant to be incompatible; otherwise new code must replay the old files
(guard changes with workflow.patched). After a patched change, record with `--label <patch>` (files
`<path>.<label>_run<n>.json`) so that both branches of the patch keep replaying. `--only` records some
paths again (e.g. a new one) and leaves the others as they are.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile
from pathlib import Path

from ecomdream.devstack.stack import Stack, StackPorts
from tests.fixtures.stack import TEST_PACE
from tests.fixtures.time_skipping import time_skipping_server
from tests.replay import stack_paths, standin_paths
from tests.replay.archive import save


async def record_with_standins(label: str, only: set[str]) -> None:
    """Each stand-in path on a server of its own (a clock of its own, no journey left from another)."""
    for path, scenario in standin_paths.PATHS.items():
        if only and path not in only:
            continue
        async with time_skipping_server() as env:
            await save(env.client, await scenario(env), path, label)


def record_on_stack(label: str, only: set[str]) -> None:
    """Start a throwaway stack, drive the stack paths, save them, stop the stack."""
    with tempfile.TemporaryDirectory() as tmp:
        stack = Stack(data_dir=Path(tmp), ports=StackPorts.free(), extra_env=TEST_PACE)
        try:
            stack.start()
            asyncio.run(stack_paths.record(stack, label, only))
        finally:
            stack.stop()


def main() -> None:
    """Parse the options and record."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--label", default="", help="name part for the files (e.g. the patch recorded)")
    parser.add_argument("--only", nargs="*", default=[], help="record only these paths")
    args = parser.parse_args()
    only = set(args.only)
    unknown = only - set(standin_paths.PATHS) - set(stack_paths.PATHS)
    if unknown:
        parser.error(f"unknown paths: {', '.join(sorted(unknown))}")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    logging.getLogger("record_histories").setLevel(logging.INFO)
    # The stand-ins fail on purpose; the SDK's warnings about it are noise here.
    logging.getLogger("temporalio").setLevel(logging.ERROR)
    if not only or only & set(standin_paths.PATHS):
        asyncio.run(record_with_standins(args.label, only))
    if not only or only & set(stack_paths.PATHS):
        record_on_stack(args.label, only)


if __name__ == "__main__":
    main()
