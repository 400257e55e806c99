"""Exception types shared by every layer of flowcraft-fast."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .analysis import Finding


class FlowcraftError(Exception):
    """Base class of every error raised by flowcraft-fast itself."""


class BlueprintError(FlowcraftError, ValueError):
    """A blueprint (or an expression inside it) is invalid.

    Raised when a blueprint is loaded, never halfway through a run. The message names the
    blueprint, node or edge at fault.
    """


class ExpressionError(BlueprintError):
    """An expression is syntactically invalid, too long, too deep or uses a forbidden construct."""


class BlueprintAnalysisError(BlueprintError):
    """A `FlowRuntime(strict=True)` refused a blueprint whose analysis found errors.

    `findings` holds every finding of the analysis (its warnings too), errors first; the message
    names the blueprint and each error with its location.
    """

    def __init__(self, blueprint_id: str, findings: Sequence[Finding]) -> None:
        self.blueprint_id = blueprint_id
        self.findings: tuple[Finding, ...] = tuple(
            sorted(findings, key=lambda f: f.severity != "error")
        )
        errors = [f for f in self.findings if f.severity == "error"]
        listed = "; ".join(f"{f.location}: {f.code}: {f.message}" for f in errors)
        count = f"{len(errors)} error" + ("" if len(errors) == 1 else "s")
        super().__init__(f"blueprint '{blueprint_id}' refused by strict mode ({count}): {listed}")

    @property
    def errors(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity == "error")


class WorkflowCancelled(FlowcraftError):
    """Raised inside a node's task when its run is cancelled."""
