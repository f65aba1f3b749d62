"""Where recorded histories live and how they are named: `histories/<path>[.<label>]_run<n>.json`.

One file per run of a workflow id, oldest run first, one event per line (small files, readable diffs).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from temporalio.client import Client, WorkflowHistory

from tests.fixtures.payloads import CodecStep, convert_history

log = logging.getLogger("record_histories")

HISTORIES = Path(__file__).parent / "histories"
NAME = re.compile(r"^(?P<path>[a-z0-9_]+?)(?:\.(?P<label>[\w-]+))?_run(?P<run>\d+)$")


@dataclass(frozen=True)
class Recording:
    """One recorded run: which path it shows, under which label (a patch), and which run it is."""

    file: Path
    path: str
    label: str
    run: int

    @classmethod
    def of(cls, file: Path) -> Recording:
        """Parse a history file's name; a name that does not fit the pattern is an error."""
        match = NAME.match(file.stem)
        if match is None:
            raise ValueError(f"{file.name}: not named <path>[.<label>]_run<n>.json")
        return cls(file, match["path"], match["label"] or "", int(match["run"]))


def recordings() -> list[Recording]:
    """Every recorded run, grouped by path and label, oldest run first."""
    found = [Recording.of(file) for file in HISTORIES.glob("*.json")]
    return sorted(found, key=lambda r: (r.path, r.label, r.run))


async def runs_of(client: Client, workflow_id: str) -> list[WorkflowHistory]:
    """Every run of a workflow id that leads to its latest run (continue-as-new chain), oldest first."""
    histories: list[WorkflowHistory] = []
    run_id: str | None = None
    while True:
        history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
        histories.append(history)
        started = history.events[0].workflow_execution_started_event_attributes
        if not started.continued_execution_run_id:
            return histories[::-1]
        run_id = started.continued_execution_run_id


def as_text(history: WorkflowHistory) -> str:
    """The history as JSON that `WorkflowHistory.from_json` reads, one event per line."""
    events = history.to_json_dict()["events"]
    lines = ",\n".join(json.dumps(event, separators=(",", ":")) for event in events)
    return '{"events": [\n' + lines + "\n]}\n"


async def save(
    client: Client, workflow_id: str, path: str, label: str, decode: CodecStep | None = None
) -> list[Path]:
    """Write every run of workflow_id as the recording of path (replacing an earlier one).

    Histories of a stack whose payloads are encrypted are saved decoded (`decode`: the stack's codec), so the
    recordings need no key: their data is made up.
    """
    HISTORIES.mkdir(parents=True, exist_ok=True)
    stem = f"{path}.{label}" if label else path
    for old in HISTORIES.glob(f"{stem}_run*.json"):
        old.unlink()
    files = []
    for run, history in enumerate(await runs_of(client, workflow_id), start=1):
        if decode is not None:
            history = await convert_history(history, decode)
        file = HISTORIES / f"{stem}_run{run}.json"
        file.write_text(as_text(history))
        files.append(file)
    log.info("%s: %s", path, ", ".join(f.name for f in files))
    return files
