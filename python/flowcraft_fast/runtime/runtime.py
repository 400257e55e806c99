"""`FlowRuntime`: loads blueprints, holds the registry and services, runs and resumes runs."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..blueprint import DEFAULT_LIMITS, Blueprint, BlueprintLimits, compile_checked, load_blueprint
from ..errors import BlueprintError, FlowcraftError
from ..expressions import Expression
from .context import MemoryContext, check_json_value
from .events import EventEmitter
from .executor import ExecutorServices, Sleep, check_result
from .graph import LOOP_CONTROLLER, CompiledGraph, RunGraph
from .retry import RandomSource
from .routing import Evaluate, builtin_evaluate
from .scheduler import RunScheduler
from .state import AWAITING_KEY, STATE_KEY, RunState
from .types import NodeResult, RunStatus, WorkflowError, WorkflowResult

_DEFAULT_LOGGER = logging.getLogger("flowcraft_fast")

INTERNAL_KEY_PREFIXES: tuple[str, ...] = ("_batch.", "_subflowState.")
"""Bookkeeping keys removed from the context of a run that did not end awaiting."""


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


class FlowRuntime:
    """Runs blueprints in memory. See SPEC.md sections 3 and 4 and docs/semantics.md."""

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
        sleep: Sleep | None = None,
        rng: RandomSource | None = None,
    ) -> None:
        from ..nodes import BUILTIN_NODES  # the built-ins import the runtime's types

        log = logger or _DEFAULT_LOGGER
        self._blueprints: dict[str, Blueprint] = {}
        self._limits = limits
        raw_items: Iterable[Any]
        if blueprints is None:
            raw_items = ()
        elif isinstance(blueprints, Mapping):
            raw_items = blueprints.values()
        else:
            raw_items = blueprints
        for raw in raw_items:
            self.register_blueprint(raw)
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
        )

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
        _check_builtin_params(bp, self._limits)
        CompiledGraph.from_blueprint(bp)  # graph-level checks (start node, loop edges)
        return bp

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
    ) -> WorkflowResult:
        """Run a blueprint to its end (or until it awaits). Node failures give status "failed";
        an invalid blueprint raises BlueprintError."""
        bp = self.load(blueprint_or_id)
        data: dict[str, Any] = {}
        for key, value in (initial_context or {}).items():
            check_json_value(value, f"initial context key {key!r}")
            data[str(key)] = value
        run_id = run_id or uuid.uuid4().hex
        graph = RunGraph(CompiledGraph.from_blueprint(bp))
        state = RunState()
        events = EventEmitter(self.options.event_bus, run_id, bp.id, self.options.logger)
        await events.emit("workflow:start")
        scheduler = self._scheduler(graph, state, data, run_id, events, concurrency, cancel)
        scheduler.seed_start_nodes()
        status = await scheduler.drive()
        return await self._finish(status, graph, state, data, scheduler.errors, run_id, events)

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
        raw_state = data.pop(STATE_KEY, None)
        awaiting = data.pop(AWAITING_KEY, None) or []
        if not awaiting or not isinstance(raw_state, dict):
            raise ResumeError("Cannot resume: the provided context is not in an awaiting state")
        target = node_id if node_id is not None else awaiting[0]
        if target not in awaiting:
            raise ResumeError(f"Cannot resume: node '{target}' is not in an awaiting state")
        if raw_state.get("blueprintId") not in (None, bp.id):
            raise ResumeError(
                f"Cannot resume: the context belongs to blueprint '{raw_state['blueprintId']}', "
                f"not '{bp.id}'"
            )
        state = RunState.from_json(raw_state, awaiting)
        graph = RunGraph(CompiledGraph.from_blueprint(bp))
        graph.restore_dynamic(raw_state.get("dynamic", ()))
        run_id = str(raw_state.get("runId") or uuid.uuid4().hex)
        events = EventEmitter(self.options.event_bus, run_id, bp.id, self.options.logger)
        await events.emit("workflow:resume", nodeId=target)
        scheduler = self._scheduler(graph, state, data, run_id, events, concurrency, cancel)
        resume = dict(resume_data or {})
        try:
            result = await self._resumed_result(graph, target, data, resume)
        except Exception as exc:
            scheduler.errors.append(WorkflowError.from_exception(target, exc))
            return await self._finish(
                "failed", graph, state, data, scheduler.errors, run_id, events
            )
        if result.awaiting:
            status: RunStatus = "awaiting"
        else:
            await scheduler.complete_externally(target, result)
            status = await scheduler.drive()
        return await self._finish(status, graph, state, data, scheduler.errors, run_id, events)

    async def _resumed_result(
        self, graph: RunGraph, node_id: str, data: dict[str, Any], resume: dict[str, Any]
    ) -> NodeResult:
        from ..nodes.subflow import SUBFLOW_STATE_PREFIX, resume_subflow

        node = graph.node(node_id)
        if f"{SUBFLOW_STATE_PREFIX}{node_id}" in data:
            return await resume_subflow(self, node, data, resume)
        action = resume.get("action")
        if action is not None and not isinstance(action, str):
            raise TypeError(f"resume action must be a string, not {action!r}")
        result = NodeResult(output=resume.get("output"), action=action)
        check_result(node_id, result)
        return result

    def _scheduler(
        self,
        graph: RunGraph,
        state: RunState,
        data: dict[str, Any],
        run_id: str,
        events: EventEmitter,
        concurrency: int | None,
        cancel: asyncio.Event | None,
    ) -> RunScheduler:
        return RunScheduler(
            services=self.options.executor,
            events=events,
            graph=graph,
            state=state,
            context=MemoryContext(data),
            dependencies=self.options.dependencies,
            run_id=run_id,
            evaluate=self.options.evaluate,
            concurrency=concurrency,
            cancel=cancel,
            logger=self.options.logger,
        )

    async def _finish(
        self,
        status: RunStatus,
        graph: RunGraph,
        state: RunState,
        data: dict[str, Any],
        errors: list[WorkflowError],
        run_id: str,
        events: EventEmitter,
    ) -> WorkflowResult:
        if status == "awaiting":
            context = dict(data)
            context[AWAITING_KEY] = list(state.awaiting)
            full = dict(context)
            full[STATE_KEY] = {
                **state.to_json(),
                "runId": run_id,
                "blueprintId": graph.blueprint.id,
                "dynamic": graph.dynamic_specs,
            }
            serialized = _dumps(full, self.options.logger)
        else:
            context = {
                k: v
                for k, v in data.items()
                if k != STATE_KEY and k != AWAITING_KEY and not k.startswith(INTERNAL_KEY_PREFIXES)
            }
            serialized = _dumps(context, self.options.logger)
        await events.emit("workflow:finish", status=status, errors=[e.to_json() for e in errors])
        return WorkflowResult(
            status=status,
            context=context,
            serialized_context=serialized,
            errors=list(errors),
            run_id=run_id,
        )


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


def _check_builtin_params(bp: Blueprint, limits: BlueprintLimits) -> None:
    """Built-in nodes whose params hold expressions are checked at load, like edges."""
    for node in bp.nodes:
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
