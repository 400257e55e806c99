"""Exception types shared by every layer of flowcraft-fast."""

from __future__ import annotations


class FlowcraftError(Exception):
    """Base class of every error raised by flowcraft-fast itself."""


class BlueprintError(FlowcraftError, ValueError):
    """A blueprint (or an expression inside it) is invalid.

    Raised when a blueprint is loaded, never halfway through a run. The message names the
    blueprint, node or edge at fault.
    """


class ExpressionError(BlueprintError):
    """An expression is syntactically invalid, too long, too deep or uses a forbidden construct."""


class WorkflowCancelled(FlowcraftError):
    """Raised inside a node's task when its run is cancelled."""
