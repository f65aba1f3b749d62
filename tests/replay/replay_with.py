"""Replay one history with the workflows of a copy of the `workflows` package (for the sandbox test).

`python -m tests.replay.replay_with <folder holding a workflows package> <history.json>` prints one JSON
line: the file `workflows` was imported from, and the replay's failure (null when it replayed).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer


async def replay(workflow_classes: list[type], history: WorkflowHistory) -> BaseException | None:
    """The replay's failure (None when the history replays)."""
    replayer = Replayer(workflows=workflow_classes, data_converter=pydantic_data_converter)
    return (await replayer.replay_workflow(history, raise_on_replay_failure=False)).replay_failure


def main() -> None:
    """Import `workflows` from the folder (ahead of the installed package) and replay the history with it."""
    folder, history_file = sys.argv[1:3]
    sys.path.insert(0, folder)
    import workflows

    history = WorkflowHistory.from_json(Path(history_file).stem, Path(history_file).read_text())
    failure = asyncio.run(replay(workflows.WORKFLOWS, history))
    report = {"workflows": workflows.__file__, "failure": None if failure is None else str(failure)}
    sys.stdout.write(json.dumps(report) + "\n")
    sys.stdout.flush()
    # The report is out; skip interpreter teardown, during which the Temporal core's native threads can
    # abort the process ("PyGILState_Release ... finalizing") and turn a finished replay into a crash.
    os._exit(0)


if __name__ == "__main__":
    main()
