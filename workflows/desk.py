"""The prompt desk of a ready journey: one prompt at a time, never past the quota, and when to start afresh."""

from __future__ import annotations

from collections.abc import Callable

from temporalio import workflow
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.exceptions import ChildWorkflowError, is_cancelled_exception
from temporalio.workflow import ChildWorkflowHandle, ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from ecomdream.contracts import prompt_workflow_id
    from ecomdream.contracts.events import EventType
    from ecomdream.contracts.payment import JourneyStage, ServedPrompt
    from ecomdream.contracts.prompt import PromptInput, PromptOutcome, PromptRequest
    from ecomdream.contracts.refusals import Refusal, refuse
    from ecomdream.contracts.search import PAYMENT_ID, VERSION_ID

from workflows import metrics
from workflows.notices import announce
from workflows.prompt import PromptWorkflow
from workflows.record import JourneyRecord

# Prompts remembered for idempotent retries (a retry comes within minutes; this is hours of prompts).
SERVED_KEPT = 100
DELETED = "Stopped: the model was deleted. No images were charged to your quota"


class PromptDesk:
    """Serves `create_prompt` updates; decides when the journey continues as a new run."""

    def __init__(self, record: JourneyRecord, prompts_per_run: int) -> None:
        self.record = record
        self.prompts_per_run = prompts_per_run
        self.busy = False
        self.served_this_run = 0
        self.child: ChildWorkflowHandle[PromptWorkflow, PromptOutcome] | None = None

    def served(self, request: PromptRequest) -> ServedPrompt | None:
        """The answer already given to this prompt (a retried request), if any."""
        return next((p for p in self.record.state.served_prompts if p.prompt_id == request.prompt_id), None)

    def refusal(self, request: PromptRequest) -> None:
        """The per-version lock and the quota: one prompt at a time, never more images than are left."""
        if self.record.deleting:
            raise refuse(Refusal.DELETED, "This model has been deleted")
        if self.served(request) is not None:
            return
        stage = self.record.state.stage
        if stage in (JourneyStage.FAILED, JourneyStage.CANCELLED, JourneyStage.AWAITING_RETRY):
            raise refuse(Refusal.MODEL_FAILED, "This model failed to train and cannot generate images")
        if stage is not JourneyStage.READY:
            raise refuse(Refusal.NOT_READY, "Please wait for your model to be ready")
        if self.busy:
            raise refuse(Refusal.BUSY, "Another prompt for this model is still running, please wait")
        left = self.record.images_left
        if left <= 0:
            raise refuse(
                Refusal.QUOTA_EXHAUSTED,
                "You ran out of images, you need to purchase extra package to continue working",
            )
        if left < request.spec.num_outputs:
            raise refuse(Refusal.QUOTA_EXCEEDED, f"You can only generate {left} images")

    async def serve(self, request: PromptRequest) -> PromptOutcome:
        """Generate in a child workflow; only images actually delivered are charged to the quota."""
        served = self.served(request)
        if served is not None:
            return PromptOutcome(
                prompt_id=served.prompt_id, status=served.status, images=served.images, error=served.error
            )
        self.busy = True
        try:
            state = self.record.state
            assert state.version_id is not None
            assert state.model_version is not None
            workflow.set_current_details(f"{self.record.details()}; generating {request.spec.num_outputs}")
            self.child = await workflow.start_child_workflow(
                PromptWorkflow.run,
                PromptInput(
                    prompt_id=request.prompt_id,
                    version_id=state.version_id,
                    model_version=state.model_version,
                    spec=request.spec,
                    expected_seconds=request.expected_seconds,
                    poll_seconds=request.poll_seconds,
                    deadline_seconds=request.deadline_seconds,
                ),
                id=prompt_workflow_id(request.prompt_id),
                # The journey continues as new; a running prompt must not be terminated with the old run.
                parent_close_policy=ParentClosePolicy.ABANDON,
                static_summary=f"{request.spec.num_outputs} image(s) for version {state.version_id}",
                search_attributes=TypedSearchAttributes(
                    [
                        SearchAttributePair(VERSION_ID, str(state.version_id)),
                        SearchAttributePair(PAYMENT_ID, str(state.payment_id)),
                    ]
                ),
            )
            if self.record.deleting:
                self.child.cancel()  # `stop` ran while the child was starting
            try:
                outcome = await self.child
            except ChildWorkflowError as err:
                if not is_cancelled_exception(err):
                    raise
                # Cancelled by `stop`: nothing was delivered or charged.
                return PromptOutcome(prompt_id=request.prompt_id, status="failed", error=DELETED)
            metrics.prompt(outcome.status, outcome.images)
            self.served_this_run += 1
            answer = ServedPrompt(
                prompt_id=outcome.prompt_id, status=outcome.status, images=outcome.images, error=outcome.error
            )
            self.record.update(
                images_generated=self.record.state.images_generated + outcome.images,
                prompts_served=self.record.state.prompts_served + 1,
                served_prompts=(*self.record.state.served_prompts, answer)[-SERVED_KEPT:],
            )
            await self._announce(outcome)
            return outcome
        finally:
            self.busy = False
            self.child = None
            workflow.set_current_details(self.record.details())

    async def stop(self) -> None:
        """The model is being deleted: cancel the prompt being generated, and wait until the desk is idle."""
        if self.child is not None:
            self.child.cancel()
        await workflow.wait_condition(lambda: not self.busy)

    async def _announce(self, outcome: PromptOutcome) -> None:
        """prompt.succeeded or prompt.failed: counts and where to fetch the images, never the prompt's text."""
        state = self.record.state
        succeeded = outcome.status == "succeeded"
        data: dict[str, object] = {
            "prompt_id": str(outcome.prompt_id),
            "images": outcome.images,
            "images_left": self.record.images_left,
            "images_path": f"/api/v1/prompts/{outcome.prompt_id}",
        }
        if not succeeded:
            data["error"] = outcome.error
        type_ = EventType.PROMPT_SUCCEEDED if succeeded else EventType.PROMPT_FAILED
        await announce(state.payment_id, state.version_id, type_, data, occurrence=str(outcome.prompt_id))

    async def until_fresh_run_is_due(self, stop: Callable[[], bool]) -> None:
        """Wait until the desk is idle and the history long enough to continue as a new run (or `stop`)."""
        await workflow.wait_condition(
            lambda: (
                stop()
                or (
                    not self.busy
                    and (
                        self.served_this_run >= self.prompts_per_run
                        or workflow.info().is_continue_as_new_suggested()
                    )
                )
            )
        )
