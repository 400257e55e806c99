"""Running a workflow in a test and keeping its event trace: `run_with_trace`,
`resume_with_trace` (in memory), `wait_with_trace` (a distributed run), and `TracedRun`,
their result, which fails a test with the trace when the run did not end as expected."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..runtime import FlowRuntime, WorkflowError, WorkflowResult
from .recorder import EventRecorder
from .trace import Trace

if TYPE_CHECKING:
    from ..blueprint import Blueprint
    from ..distributed.client import FlowClient

_CLOSING_EVENTS = {
    "completed": "workflow:finish",
    "failed": "workflow:finish",
    "awaiting": "workflow:pause",
}
"""The event a distributed worker emits last for a run that ended (or parked) this way."""


@dataclass(frozen=True, slots=True)
class TracedRun:
    """A run's result and its ordered event trace.

    `status`, `context`, `errors` and `run_id` are the result's. `assert_ok()` (or
    `assert_status(...)`) returns the result, or raises AssertionError whose message is
    `report()`: the status, the errors and the rendered trace.
    """

    result: WorkflowResult
    trace: Trace

    @property
    def status(self) -> str:
        return self.result.status

    @property
    def context(self) -> dict[str, Any]:
        return self.result.context

    @property
    def errors(self) -> list[WorkflowError]:
        return self.result.errors

    @property
    def run_id(self) -> str:
        return self.result.run_id

    def assert_ok(self) -> WorkflowResult:
        """The result, if the run completed; AssertionError with the trace otherwise."""
        __tracebackhide__ = True  # pytest shows the test's line, not this one
        return self.assert_status("completed")

    def assert_status(self, status: str) -> WorkflowResult:
        """The result, if the run ended `status`; AssertionError with the trace otherwise."""
        __tracebackhide__ = True
        if self.result.status != status:
            raise AssertionError(f"expected the run to end {status}\n{self.report()}")
        return self.result

    def report(self) -> str:
        lines = [f"run {self.run_id} ended {self.status}"]
        lines += [f"  error at {e.node_id}: {e.type}: {e.message}" for e in self.errors]
        lines.append(self.trace.render())
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.report()


async def run_with_trace(
    runtime: FlowRuntime,
    blueprint: Blueprint | Mapping[str, Any] | str,
    context: Mapping[str, Any] | None = None,
    **options: Any,
) -> TracedRun:
    """`runtime.run(blueprint, context, **options)`, with the events it emitted.

    The run goes through a twin of `runtime` whose event bus records the events, then
    forwards them to `runtime`'s own bus, if any (see `traced_twin`). `options` are
    `run`'s (`concurrency`, `cancel`, `run_id`). An exception from `run` (an invalid
    blueprint) propagates with the trace so far added as a note.
    """
    recorder = EventRecorder()
    run_id = options.pop("run_id", None) or uuid.uuid4().hex
    twin = traced_twin(runtime, recorder)
    try:
        result = await twin.run(blueprint, context, run_id=run_id, **options)
    except Exception as exc:
        exc.add_note(recorder.trace(run_id).render())
        raise
    return TracedRun(result, recorder.trace(run_id))


async def resume_with_trace(
    runtime: FlowRuntime,
    blueprint: Blueprint | Mapping[str, Any] | str,
    serialized_context: str | Mapping[str, Any],
    resume_data: Mapping[str, Any] | None = None,
    node_id: str | None = None,
    **options: Any,
) -> TracedRun:
    """`runtime.resume(...)` as `run_with_trace` runs: the resumed part's events only."""
    recorder = EventRecorder()
    twin = traced_twin(runtime, recorder)
    try:
        result = await twin.resume(blueprint, serialized_context, resume_data, node_id, **options)
    except Exception as exc:
        exc.add_note(recorder.trace().render())
        raise
    return TracedRun(result, recorder.trace(result.run_id))


def traced_twin(runtime: FlowRuntime, recorder: EventRecorder) -> FlowRuntime:
    """A runtime that shares everything with `runtime` (blueprints, registry, dependencies,
    limits) except its event bus: `recorder`, forwarding to `runtime`'s bus.

    `FlowRuntime` has no per-run event bus, and the user's runtime is not changed (other runs
    may use it meanwhile), so the run goes through a shallow copy with its own options: the
    runtime reads `self.options` afresh for every run. Subflows run on the twin too (the
    `runtime` dependency is the twin), so their events are in the trace.
    """
    twin = copy.copy(runtime)
    dependencies = dict(runtime.options.dependencies)
    if dependencies.get("runtime") is runtime:
        dependencies["runtime"] = twin
    twin.options = dataclasses.replace(
        runtime.options,
        event_bus=recorder.wrap(runtime.options.event_bus),
        dependencies=dependencies,
    )
    return twin


async def wait_with_trace(
    client: FlowClient,
    run_id: str,
    recorder: EventRecorder,
    *,
    timeout: float = 30.0,
    settle: float = 5.0,
) -> TracedRun:
    """`client.wait(run_id, timeout)` and the events `recorder` holds for the run.

    `recorder` must be the event bus of the workers that serve the run (the options of their
    `BullMQAdapter`). A worker emits a run's last events after committing them, so this
    also waits (up to `settle` seconds) for the closing event, `workflow:finish` (or
    `workflow:pause` for an awaiting run); a run that ended without one (cancelled, or ended
    by another process) returns with what was recorded. The trace is the whole run's: after
    a resumption, the events from before it too. (A run that parks a second time returns as
    soon as the first `workflow:pause` is there; its later events may still be on the way.)
    """
    result = await client.wait(run_id, timeout=timeout)
    closing = _CLOSING_EVENTS.get(result.status)
    if closing is not None:
        # without it, the trace shows what was recorded; the result says how the run ended
        with contextlib.suppress(AssertionError):
            await recorder.wait_for(closing, run_id=run_id, timeout=settle)
    return TracedRun(result, recorder.trace(run_id))
