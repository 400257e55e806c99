"""Helpers for testing workflows: traces of runs, an in-memory event recorder, a worker.

- `run_with_trace(runtime, blueprint, context)` / `resume_with_trace(...)`: run in memory and
  get a `TracedRun` (the result and its ordered event `Trace`); `traced.assert_ok()` fails
  a test with the rendered trace when the run did not complete.
- `Stepper(runtime, blueprint, context)`: run in memory one node at a time (`await
  stepper.next()` returns a `Step`; `stepper.context` between steps; `await
  stepper.finish()`).
- `EventRecorder`: an event bus that records (`events`, `names()`, `for_node()`,
  `for_run()`, `of_type()`, `clear()`, `await wait_for(...)`), for in-memory runtimes and for
  the distributed workers built from their options.
- `start_worker(runtime, url)`: a `BullMQAdapter` serving `runtime` in the running loop;
  `wait_with_trace(client, run_id, recorder)` for a distributed run's trace.
- The pytest plugin `flowcraft_fast.testing.pytest_plugin` (loaded automatically through
  the `pytest11` entry point) has fixtures for all of these; docs/testing.md shows them.
"""

from __future__ import annotations

from .recorder import EventRecorder
from .runs import TracedRun, resume_with_trace, run_with_trace, wait_with_trace
from .stepper import Step, Stepper
from .trace import RecordedEvent, Trace
from .worker import RunningWorker, start_worker

__all__ = [
    "EventRecorder",
    "RecordedEvent",
    "RunningWorker",
    "Step",
    "Stepper",
    "Trace",
    "TracedRun",
    "resume_with_trace",
    "run_with_trace",
    "start_worker",
    "wait_with_trace",
]
