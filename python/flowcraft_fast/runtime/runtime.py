"""`FlowRuntime`: loads blueprints, holds the registry and services, runs and resumes runs."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from ..blueprint import DEFAULT_LIMITS, Blueprint, BlueprintLimits, compile_checked, load_blueprint
from ..errors import BlueprintAnalysisError, BlueprintError, FlowcraftError
from ..expressions import Expression
from ..tracing import RUN_STATUS, fail_span, run_span
from .context import check_json_value
from .events import EventEmitter
from .executor import ExecutorServices, Sleep
from .graph import LOOP_CONTROLLER, CompiledGraph, RunGraph, run_graph
from .history import (
    START,
    HistoryEntry,
    HistoryError,
    HistoryTee,
    MemoryHistory,
    fork_point,
    replay_entries,
    start_entry,
)
from .inbox import EventInbox, event_timeouts, ready_waiters, with_event
from .ledger import MemoryLedger
from .limits import MemoryLimits
from .retry import RandomSource
from .routing import Evaluate, builtin_evaluate
from .scheduler import RunScheduler
from .time_travel import execute_node_alone
from .types import NodeResult, RunStatus, WorkflowError, WorkflowResult
from .vocabulary import (
    AWAITING_KEY,
    BOOKKEEPING_PREFIXES,
    EVENT,
    EVENT_WAIT,
    LEDGER_KEY,
    PAUSED_PREFIX,
    WAIT_FOR_EVENT_USES,
    split_node_key,
)

_DEFAULT_LOGGER = logging.getLogger("flowcraft_fast")
_ANALYSED_LIMIT = 512
"""Strict mode: how many blueprints that passed the analysis a runtime remembers."""


class ResumeError(FlowcraftError):
    """`resume` was called on a context that is not awaiting at the given node."""


@dataclass(frozen=True, slots=True)
class RuntimeOptions:
    """Everything a runtime was configured with. The distributed adapter is built from it
    (`BullMQAdapter(runtime_options=runtime.options, ...)`), so both run the same way."""

    blueprints: Mapping[str, Blueprint]
    registry: Mapping[str, Any]
    """Built-in nodes overlaid with the user's registry (user keys win)."""
    dependencies: Mapping[str, Any]
    """The user's dependencies plus `runtime` and `logger` (unless the user set those)."""
    event_bus: Any = None
    middleware: tuple[Any, ...] = ()
    evaluator: Any = None
    logger: logging.Logger = _DEFAULT_LOGGER
    limits: BlueprintLimits = DEFAULT_LIMITS
    executor: ExecutorServices = field(default_factory=lambda: ExecutorServices(registry={}))
    evaluate: Evaluate = builtin_evaluate
    """How conditions, transforms and loop conditions are evaluated."""
    flow_limits: MemoryLimits = field(default_factory=MemoryLimits)
    """The concurrency slots and rate windows of this runtime's in-memory runs (limits.py)."""
    history: int = 0
    """History entries kept per run (runtime/history.py, docs/history.md); 0: off. A
    distributed adapter built from these options records the same history in Redis."""


class FlowRuntime:
    """Runs blueprints in memory. See SPEC.md sections 3 and 4 and docs/semantics.md.

    `strict=True` also refuses, when a blueprint is registered or passed to `run`/`resume`,
    one whose analysis (`flowcraft_fast.analysis`, docs/analysis.md) finds an error, raising
    `BlueprintAnalysisError` (a `BlueprintError`) with the findings. Warnings never refuse.

    `history=N` (N >= 1) records each run's last N history entries (node starts, finishes and
    errors with their inputs and outputs, every context write) for `history`, `replay` and
    `fork`, for the last `history_runs` runs (docs/history.md). 0, the default, records nothing
    and costs nothing.
    """

    def __init__(
        self,
        blueprints: Mapping[str, Any] | Iterable[Any] | None = None,
        registry: Mapping[str, Any] | None = None,
        dependencies: Mapping[str, Any] | None = None,
        event_bus: Any = None,
        middleware: Sequence[Any] = (),
        evaluator: Any = None,
        logger: logging.Logger | None = None,
        limits: BlueprintLimits = DEFAULT_LIMITS,
        *,
        strict: bool = False,
        sleep: Sleep | None = None,
        rng: RandomSource | None = None,
        history: int = 0,
        history_runs: int = 1000,
    ) -> None:
        from ..nodes import BUILTIN_NODES  # the built-ins import the runtime's types

        log = logger or _DEFAULT_LOGGER
        self._blueprints: dict[str, Blueprint] = {}
        self._limits = limits
        self._strict = False  # until every blueprint given here is registered (see below)
        self._analysed: dict[int, Blueprint] = {}
        self._inbox = EventInbox()
        full_registry = {**BUILTIN_NODES, **(registry or {})}
        deps = {"runtime": self, "logger": log, **(dependencies or {})}
        evaluate = builtin_evaluate if evaluator is None else _custom_evaluate(evaluator, log)
        executor = ExecutorServices(
            registry=full_registry,
            middleware=tuple(middleware),
            logger=log,
            sleep=sleep or asyncio.sleep,
            rng=rng,
        )
        self.options = RuntimeOptions(
            blueprints=self._blueprints,
            registry=full_registry,
            dependencies=deps,
            event_bus=event_bus,
            middleware=tuple(middleware),
            evaluator=evaluator,
            logger=log,
            limits=limits,
            executor=executor,
            evaluate=evaluate,
            history=history,
        )
        self._history = MemoryHistory(history, history_runs) if history else None
        raw_items: Iterable[Any]
        if blueprints is None:
            raw_items = ()
        elif isinstance(blueprints, Mapping):
            raw_items = blueprints.values()
        else:
            raw_items = blueprints
        for raw in raw_items:
            self.register_blueprint(raw)
        self._strict = strict
        if strict:  # analysed together, so a subflow may name a blueprint listed after it
            for bp in self._blueprints.values():
                self._refuse_analysis_errors(bp)

    # ------------------------------------------------------------------ blueprints

    @property
    def blueprints(self) -> Mapping[str, Blueprint]:
        return self._blueprints

    def register_blueprint(self, raw: Blueprint | Mapping[str, Any] | str) -> Blueprint:
        """Load (validate) a blueprint and make it available by id (for subflows, `run(id)`)."""
        bp = self.load(raw)
        self._blueprints[bp.id] = bp
        return bp

    def get_blueprint(self, blueprint_id: str) -> Blueprint:
        try:
            return self._blueprints[blueprint_id]
        except KeyError:
            raise BlueprintError(
                f"blueprint '{blueprint_id}' is not registered with this runtime"
            ) from None

    def load(self, blueprint_or_id: Blueprint | Mapping[str, Any] | str) -> Blueprint:
        """A registered blueprint by id, or a blueprint mapping/JSON validated now."""
        if isinstance(blueprint_or_id, str) and not blueprint_or_id.lstrip().startswith("{"):
            return self.get_blueprint(blueprint_or_id)
        if isinstance(blueprint_or_id, Blueprint):
            bp = blueprint_or_id
        else:
            bp = load_blueprint(blueprint_or_id, self._limits)
        check_builtin_params(bp, self._limits)
        CompiledGraph.from_blueprint(bp)  # graph-level checks (start node, loop edges)
        if self._strict:
            self._refuse_analysis_errors(bp)
        return bp

    def _refuse_analysis_errors(self, bp: Blueprint) -> None:
        """Strict mode: raise `BlueprintAnalysisError` when the analysis of `bp` (against this
        runtime's registry and the blueprints registered so far) finds an error. A blueprint
        that passed is remembered, so passing the same `Blueprint` to `run` again costs
        nothing."""
        if self._analysed.get(id(bp)) is bp:
            return
        from ..analysis import analyze, has_errors  # the analysis imports this module

        findings = analyze(
            bp, self.options.registry, blueprints=[*self._blueprints, bp.id], limits=self._limits
        )
        if has_errors(findings):
            raise BlueprintAnalysisError(bp.id, findings)
        if len(self._analysed) >= _ANALYSED_LIMIT:
            self._analysed.pop(next(iter(self._analysed)))
        # Kept with its id, so that the id cannot be reused by another blueprint meanwhile.
        self._analysed[id(bp)] = bp

    def evaluate_expression(self, expression: str | Expression, scope: Mapping[str, Any]) -> Any:
        """Evaluate an expression the way this runtime evaluates conditions."""
        if isinstance(expression, str):
            expression = compile_checked(expression, "expression", self._limits)
        return self.options.evaluate(expression, scope)

    # ------------------------------------------------------------------ runs

    async def run(
        self,
        blueprint_or_id: Blueprint | Mapping[str, Any] | str,
        initial_context: Mapping[str, Any] | None = None,
        *,
        concurrency: int | None = None,
        cancel: asyncio.Event | None = None,
        run_id: str | None = None,
        start_at: Sequence[str] | None = None,
    ) -> WorkflowResult:
        """Run a blueprint to its end (or until it awaits). Node failures give status "failed";
        an invalid blueprint raises BlueprintError. `start_at`: the nodes to start
        at instead of the blueprint's start nodes (what `fork` does; docs/history.md)."""
        bp = self.load(blueprint_or_id)
        data: dict[str, Any] = {}
        for key, value in (initial_context or {}).items():
            check_json_value(value, f"initial context key {key!r}")
            data[str(key)] = value
        run_id = run_id or uuid.uuid4().hex
        graph = RunGraph(CompiledGraph.from_blueprint(bp))
        ledger = MemoryLedger()
        with run_span(run_id, bp.id, bp.version) as traced:
            events = EventEmitter(
                self._history_bus(run_id, (bp.id, data)), run_id, bp.id, self.options.logger,
                traced[1] if traced else None,
            )  # fmt: skip
            if events.enabled:
                await events.emit("workflow:start")
            scheduler = self._scheduler(graph, ledger, data, run_id, events, concurrency, cancel)
            scheduler.seed_start_nodes(start_at)
            self._inbox.attach(run_id, data)
            try:
                status = await scheduler.drive()
            finally:
                self._inbox.detach(run_id)
            if traced:
                _end_run_span(traced[0], status, scheduler.errors)
            result = await self._finish(
                status, graph, ledger, data, scheduler.errors, run_id, events
            )
        return await self._deliver_arrived(bp, result, data, concurrency, cancel)

    async def resume(
        self,
        blueprint_or_id: Blueprint | Mapping[str, Any] | str,
        serialized_context: str | Mapping[str, Any],
        resume_data: Mapping[str, Any] | None = None,
        node_id: str | None = None,
        *,
        concurrency: int | None = None,
        cancel: asyncio.Event | None = None,
    ) -> WorkflowResult:
        """Continue an awaiting run: the awaiting node `node_id` (default: the first one)
        finishes with `resume_data["output"]` and routes by `resume_data["action"]`."""
        bp = self.load(blueprint_or_id)
        if isinstance(serialized_context, str):
            data = json.loads(serialized_context)
        else:
            data = dict(serialized_context)
        if not isinstance(data, dict):
            raise ResumeError("Cannot resume: the serialized context is not a JSON object")
        raw_ledger = data.pop(LEDGER_KEY, None)
        data.pop(AWAITING_KEY, None)
        if not isinstance(raw_ledger, dict):
            raise ResumeError("Cannot resume: the provided context is not in an awaiting state")
        if raw_ledger.get("blueprintId") not in (None, bp.id):
            raise ResumeError(
                f"Cannot resume: the context belongs to blueprint '{raw_ledger['blueprintId']}', "
                f"not '{bp.id}'"
            )
        try:
            ledger = MemoryLedger.from_json(raw_ledger)
        except (ValueError, KeyError, TypeError) as exc:
            raise ResumeError(f"Cannot resume: {exc}") from None
        if not ledger.awaiting:
            raise ResumeError("Cannot resume: the provided context is not in an awaiting state")
        target = node_id if node_id is not None else next(iter(ledger.awaiting.values()))
        key = next((k for k, n in ledger.awaiting.items() if n == target), None)
        if key is None:
            raise ResumeError(f"Cannot resume: node '{target}' is not in an awaiting state")
        graph = run_graph(bp, data)
        run_id = str(raw_ledger.get("runId") or uuid.uuid4().hex)
        with run_span(run_id, bp.id, bp.version, "resume") as traced:
            events = EventEmitter(
                self._history_bus(run_id), run_id, bp.id, self.options.logger,
                traced[1] if traced else None,
            )  # fmt: skip
            if events.enabled:
                await events.emit("workflow:resume", nodeId=target)
            scheduler = self._scheduler(graph, ledger, data, run_id, events, concurrency, cancel)
            scheduler.resume_at(key, dict(resume_data or {}))
            self._inbox.attach(run_id, data)
            try:
                status = await scheduler.drive()
            finally:
                self._inbox.detach(run_id)
            if traced:
                _end_run_span(traced[0], status, scheduler.errors)
            result = await self._finish(
                status, graph, ledger, data, scheduler.errors, run_id, events
            )
        return await self._deliver_arrived(bp, result, data, concurrency, cancel)

    async def _deliver_arrived(
        self,
        bp: Blueprint,
        result: WorkflowResult,
        data: dict[str, Any],
        concurrency: int | None,
        cancel: asyncio.Event | None,
    ) -> WorkflowResult:
        """A run that parked at a `wait-for-event` node whose event arrived while the run was
        still going is resumed with it at once; one parked at such a node with a timeout
        waits here for its event or the timeout (in process, as `sleep` does in memory)."""
        if result.status != "awaiting":
            return result
        for name, node_id in ready_waiters(data):
            return await self._resume_with_event(
                bp, result, name, node_id, concurrency, cancel, data
            )
        timeouts = event_timeouts(bp, data)
        if not timeouts:
            return result
        loop = asyncio.get_running_loop()
        started = loop.time()
        first = min(timeouts.values())
        await self._inbox.wait(result.run_id, data, first / 1000)
        for name, node_id in ready_waiters(data):
            return await self._resume_with_event(
                bp, result, name, node_id, concurrency, cancel, data
            )
        if (loop.time() - started) * 1000 < first:
            return result  # woken for nothing (cancelled): stays awaiting
        node_id = min(timeouts, key=timeouts.__getitem__)
        state = json.loads(result.serialized_context)
        for key in [k for k, v in state.items() if k.startswith(EVENT_WAIT)]:
            if split_node_key(str(state[key]))[1] == node_id:
                del state[key]
        return await self.resume(
            bp, state, {"output": None, "action": "timeout"}, node_id,
            concurrency=concurrency, cancel=cancel,
        )  # fmt: skip

    async def _resume_with_event(
        self,
        bp: Blueprint,
        result: WorkflowResult,
        name: str,
        node_id: str,
        concurrency: int | None,
        cancel: asyncio.Event | None,
        live: dict[str, Any] | None = None,
    ) -> WorkflowResult:
        """Resume `node_id` with event `name`, whose payload is in the result's context or
        arrived since in `live` (the run's context when it ended)."""
        data = json.loads(result.serialized_context)
        payload = data.pop(EVENT + name, live.get(EVENT + name) if live is not None else None)
        data.pop(EVENT_WAIT + name, None)
        return await self.resume(
            bp, data, {"output": payload}, node_id, concurrency=concurrency, cancel=cancel
        )

    def live_context(self, run_id: str) -> dict[str, Any] | None:
        """A copy of the context of a run executing in this runtime now (its state between
        two steps; engine bookkeeping included), else None (a debugging aid: the stepper)."""
        data = self._inbox.live(run_id)
        return None if data is None else dict(data)

    async def send_event(
        self,
        run: str | WorkflowResult,
        name: str,
        payload: Any = None,
        *,
        blueprint: Blueprint | Mapping[str, Any] | str | None = None,
    ) -> WorkflowResult | None:
        """Deliver event `name` to an in-memory run (the `wait-for-event` built-in waits for it).

        `run` is a run id or an awaiting run's result. A run id: the event goes into the run
        if it is executing in this runtime now, else it waits for a run with that id to start
        (`run(..., run_id=...)`); returns None. An awaiting result: the node waiting for the
        event is resumed with the payload as its output and the new result is returned; when
        no node waits for it yet, the returned result (still awaiting) carries the event for
        the node that will (`blueprint`: the run's, when it is not registered here)."""
        from ..nodes.wait_event import event_name

        name = event_name({"event": name}, "send_event")
        check_json_value(payload, f"event {name!r} payload")
        if isinstance(run, str):
            self._inbox.send(run, name, payload)
            return None
        if run.status != "awaiting":
            raise ResumeError(f"Cannot send event {name!r}: the run is {run.status}, not awaiting")
        data, waiter = with_event(run.serialized_context, name, payload)
        ledger = data.get(LEDGER_KEY) or {}
        bp = self.load(blueprint if blueprint is not None else str(ledger.get("blueprintId")))
        if waiter is None:
            serialized = json.dumps(data, separators=(",", ":"))
            context = {k: v for k, v in data.items() if k != LEDGER_KEY}
            return WorkflowResult(
                status="awaiting",
                context=context,
                serialized_context=serialized,
                errors=list(run.errors),
                run_id=run.run_id,
            )
        result = WorkflowResult(
            status="awaiting",
            context=run.context,
            serialized_context=json.dumps(data, separators=(",", ":")),
            errors=list(run.errors),
            run_id=run.run_id,
        )
        return await self._resume_with_event(bp, result, name, waiter, None, None)

    # ------------------------------------------------------------------ history, time travel

    def _history_bus(self, run_id: str, start: tuple[str, dict[str, Any]] | None = None) -> Any:
        """The event bus of a run: the user's, with the history recorder in front when history
        is on (`start`: a new run's blueprint id and initial context, recorded first)."""
        if self._history is None:
            return self.options.event_bus
        sink = self._history.sink(run_id)
        if start is not None:
            sink(START, start_entry(*start))
        return HistoryTee(self.options.event_bus, sink)

    def history(self, run_id: str) -> list[HistoryEntry]:
        """The recorded entries of `run_id`, oldest first (docs/history.md); `HistoryError`
        when there are none (history off, or the run is forgotten)."""
        if self._history is None:
            raise HistoryError(
                f"no history of run {run_id!r}: this runtime records none (FlowRuntime(history=N))"
            )
        return self._history.entries(run_id)

    def replay(self, run_id: str, until: str | None = None) -> dict[str, Any]:
        """The run's context as it was after the history entry `until` (an entry's `id`;
        None: after the last one), rebuilt from the initial context and the recorded writes.
        Bookkeeping keys (`_outputs.*`, `_inputs.*`) are included, as nodes see them."""
        return replay_entries(self.history(run_id), until, run_id=run_id)

    async def fork(
        self,
        run_id: str,
        from_node: str,
        *,
        new_run_id: str | None = None,
        concurrency: int | None = None,
        cancel: asyncio.Event | None = None,
    ) -> WorkflowResult:
        """Run the recorded run's blueprint again from `from_node`, as a new run: the context
        as recorded just before `from_node` first started (with the input it was given then),
        the run starting at `from_node` alone. Limits: docs/history.md."""
        point = fork_point(self.history(run_id), from_node, run_id=run_id)
        bp = self.get_blueprint(point.blueprint_id)
        if from_node not in CompiledGraph.from_blueprint(bp).nodes:
            raise HistoryError(f"blueprint {bp.id!r} has no node {from_node!r} to fork from")
        return await self.run(
            bp, point.context, run_id=new_run_id, concurrency=concurrency, cancel=cancel,
            start_at=(from_node,),
        )  # fmt: skip

    async def execute_node(
        self,
        blueprint_or_id: Blueprint | Mapping[str, Any] | str,
        node_id: str,
        context: Mapping[str, Any] | None = None,
        input_override: Any = None,
        *,
        override: bool | None = None,
    ) -> NodeResult:
        """Run one node outside any run, for debugging, through the same step as a run's
        nodes (attempts, retries, timeouts, middleware, events) against a copy of `context`,
        without its fallback. Returns its `NodeResult`; raises what its last attempt raised.

        Its input is `input_override` when given (not None; `override=True` gives None), even
        when the node declares `inputs`; otherwise what a run would give it: its `inputs`
        resolved against `context`, else `context["_inputs.<node_id>"]`."""
        overridden = input_override is not None if override is None else override
        return await execute_node_alone(
            self.options, self.load(blueprint_or_id), node_id, context, input_override, overridden
        )

    def _scheduler(
        self,
        graph: RunGraph,
        ledger: MemoryLedger,
        data: dict[str, Any],
        run_id: str,
        events: EventEmitter,
        concurrency: int | None,
        cancel: asyncio.Event | None,
    ) -> RunScheduler:
        return RunScheduler(
            options=self.options,
            events=events,
            graph=graph,
            ledger=ledger,
            data=data,
            run_id=run_id,
            concurrency=concurrency,
            cancel=cancel,
            logger=self.options.logger,
        )

    async def _finish(
        self,
        status: RunStatus,
        graph: RunGraph,
        ledger: MemoryLedger,
        data: dict[str, Any],
        errors: list[WorkflowError],
        run_id: str,
        events: EventEmitter,
    ) -> WorkflowResult:
        serialized: str | Callable[[], str]
        if status == "awaiting":
            context = dict(data)
            context[AWAITING_KEY] = list(dict.fromkeys(ledger.awaiting.values()))
            full = dict(context)
            full[LEDGER_KEY] = {
                **ledger.to_json(),
                "runId": run_id,
                "blueprintId": graph.blueprint.id,
            }
            serialized = _dumps(full, self.options.logger)
        else:
            context = {k: v for k, v in data.items() if not k.startswith(BOOKKEEPING_PREFIXES)}
            logger = self.options.logger
            serialized = partial(_dumps, context, logger)
        if events.enabled:
            if status == "stalled":  # nothing ready, nothing running, nodes left unreached
                done = {key.partition("|")[2] for key in ledger.done}
                remaining = [n for n in graph.static.nodes if n not in done]
                await events.emit("workflow:stall", remainingNodes=remaining)
            if status in ("stalled", "awaiting", "cancelled"):
                reasons = {
                    k.removeprefix(PAUSED_PREFIX): v
                    for k, v in data.items()
                    if k.startswith(PAUSED_PREFIX)
                }  # the nodes that paused the run themselves (NodeContext.pause)
                await events.emit("workflow:pause", status=status, reasons=reasons)
            await events.emit(
                "workflow:finish", status=status, errors=[e.to_json() for e in errors]
            )
        return WorkflowResult(
            status=status,
            context=context,
            serialized_context=serialized,
            errors=list(errors),
            run_id=run_id,
        )


def _end_run_span(span: Any, status: RunStatus, errors: Sequence[WorkflowError]) -> None:
    """The run's status on its span; a run that did not complete is an error there."""
    span.set_attribute(RUN_STATUS, status)
    if status in ("failed", "stalled"):
        fail_span(span, "; ".join(f"{e.node_id}: {e.type}: {e.message}" for e in errors) or status)


def _dumps(value: dict[str, Any], logger: logging.Logger) -> str:
    def fallback(obj: Any) -> Any:
        logger.warning("context holds a non-JSON value of type %s; stored as text", type(obj))
        return repr(obj)

    return json.dumps(value, default=fallback, separators=(",", ":"))


def _custom_evaluate(evaluator: Any, logger: logging.Logger) -> Evaluate:
    def evaluate(expression: Expression, scope: Mapping[str, Any]) -> Any:
        try:
            return evaluator.evaluate(expression.source, scope)
        except Exception:
            logger.warning(
                "custom evaluator failed on %r; treated as null", expression.source, exc_info=True
            )
            return None

    return evaluate


def check_builtin_params(bp: Blueprint, limits: BlueprintLimits) -> None:
    """Built-in nodes whose params hold expressions are checked at load, like edges; so are
    a `wait-for-event` node's event name and timeout."""
    from ..nodes.wait_event import event_name, event_timeout_ms

    for node in bp.nodes:
        if node.uses == WAIT_FOR_EVENT_USES:
            try:
                event_name(node.params, node.id)
                event_timeout_ms(node.params, node.id)
            except ValueError as exc:
                raise BlueprintError(f"blueprint '{bp.id}': {exc}") from None
        if node.uses != LOOP_CONTROLLER:
            continue
        condition = node.params.get("condition")
        where = f"blueprint '{bp.id}': loop controller '{node.id}'"
        if not isinstance(condition, str):
            raise BlueprintError(f"{where} needs params.condition (an expression string)")
        compile_checked(condition, f"{where}: condition", limits)
        max_iterations = node.params.get("maxIterations", 100)
        if (
            isinstance(max_iterations, bool)
            or not isinstance(max_iterations, int)
            or (max_iterations < 1)
        ):
            raise BlueprintError(f"{where}: params.maxIterations must be an integer >= 1")
