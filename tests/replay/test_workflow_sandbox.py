"""The sandbox checks our workflow code: the helper modules (`workflows.record`, `workflows.checkout`, ...)
are imported normally, so every run re-imports them inside the sandbox and its restrictions apply to them.

Were they passed through (`imports_passed_through`), a helper could read the clock or draw random numbers
unnoticed, and journeys would break at their next replay. The test injects such a call into a copy of the
package and replays a recorded journey with that copy, in a fresh interpreter.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import workflows
from tests.replay.archive import HISTORIES

REPO = Path(__file__).resolve().parents[2]
# Any journey: every run of the journey enters a stage as it starts.
HISTORY = HISTORIES / "expired_checkout_run1.json"
# Called by every journey path: JourneyRecord.enter (workflows/record.py).
ENTER = "    def enter(self, stage: JourneyStage, *also: SearchAttributeUpdate[Any]) -> None:\n"


def copy_of_workflows(into: Path, *, nondeterministic: bool, source: Path | None = None) -> Path:
    """A copy of the `workflows` package under into; with nondeterministic, `enter` calls uuid.uuid4()."""
    package = into / "workflows"
    shutil.copytree(
        source or Path(workflows.__file__).parent, package, ignore=shutil.ignore_patterns("__pycache__")
    )
    if nondeterministic:
        record = package / "record.py"
        text = record.read_text()
        assert text.count(ENTER) == 1, "JourneyRecord.enter moved: update the injection point"
        text = text.replace(
            "from __future__ import annotations\n", "from __future__ import annotations\n\nimport uuid\n", 1
        )
        record.write_text(text.replace(ENTER, f"{ENTER}        uuid.uuid4()\n"))
    return into


def replay_with(copies: list[Path]) -> list[dict[str, str | None]]:
    """Replay HISTORY with each copy, each in a fresh interpreter (side by side)."""
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.replay.replay_with", str(copy), str(HISTORY)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for copy in copies
    ]
    results = []
    for run in runs:
        out, err = run.communicate(timeout=120)
        assert run.returncode == 0, err
        results.append(json.loads(out.splitlines()[-1]))
    return results


def test_a_nondeterministic_call_in_a_helper_module_fails_replay(tmp_path: Path) -> None:
    clean = copy_of_workflows(tmp_path / "clean", nondeterministic=False)
    broken = copy_of_workflows(tmp_path / "broken", nondeterministic=True)

    as_is, injected = replay_with([clean, broken])

    assert str(as_is["workflows"]).startswith(str(clean)), "the copy was replayed, not the installed package"
    assert as_is["failure"] is None, f"the unchanged copy replays: {as_is['failure']}"
    assert str(injected["workflows"]).startswith(str(broken))
    failure = injected["failure"] or ""
    assert "RestrictedWorkflowAccessError" in failure, f"the sandbox caught the call: {failure or 'replayed'}"
    assert "uuid.uuid4" in failure
