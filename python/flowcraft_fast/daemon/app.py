"""Importing the user's runtime from `--app package.module:attribute`."""

from __future__ import annotations

import importlib
import logging
import os
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..runtime import FlowRuntime

__all__ = ["AppError", "load_runtime"]

log = logging.getLogger("flowcraft_fast.daemon")


class AppError(Exception):
    """`--app` does not name a FlowRuntime; the message is one line meant for the user."""


def load_runtime(spec: str) -> FlowRuntime:
    """The FlowRuntime named by `spec`: the object itself, or what a zero-argument callable returns.

    The current directory goes first on `sys.path`, as with `python -m`, so
    `--app examples.demo_app:runtime` works from a checkout.
    """
    from ..runtime import FlowRuntime

    module_name, _, attr_path = spec.partition(":")
    if not module_name or not attr_path:
        raise AppError(f"--app {spec!r} must look like package.module:attribute")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    module = _import(module_name, spec)
    target: Any = module
    for part in attr_path.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise AppError(
                f"--app {spec}: module {module_name!r} has no attribute {attr_path!r}"
            ) from None
    if isinstance(target, FlowRuntime):
        return target
    if not callable(target):
        raise AppError(
            f"--app {spec} is a {type(target).__name__}, not a FlowRuntime or a "
            "zero-argument callable returning one"
        )
    try:
        made = target()
    except Exception as exc:
        log.debug("calling --app %s failed", spec, exc_info=True)
        raise AppError(f"--app {spec}: calling it failed: {_describe(exc)}") from None
    if not isinstance(made, FlowRuntime):
        _close_if_coroutine(made)
        raise AppError(f"--app {spec}() returned a {type(made).__name__}, not a FlowRuntime")
    return made


def _import(module_name: str, spec: str) -> Any:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        # Distinguish "the module named by --app is missing" from "it imports something missing".
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise AppError(
                f"--app {spec}: no module named {module_name!r} (searched from {os.getcwd()})"
            ) from None
        log.debug("importing %s failed", module_name, exc_info=True)
        raise AppError(
            f"--app {spec}: importing {module_name!r} failed: {_describe(exc)}"
        ) from None
    except Exception as exc:
        # Any error in the user's module: one line here, the traceback with --log-level debug.
        log.debug("importing %s failed", module_name, exc_info=True)
        raise AppError(
            f"--app {spec}: importing {module_name!r} failed: {_describe(exc)}"
        ) from None


def _describe(exc: BaseException) -> str:
    message = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _close_if_coroutine(value: object) -> None:
    close = getattr(value, "close", None)
    if hasattr(value, "__await__") and callable(close):
        close()  # an `async def` factory: avoid the "never awaited" warning
