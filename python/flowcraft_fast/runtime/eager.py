"""Starting a coroutine eagerly, and finishing it in a task only if it waits.

Most node coroutines finish without ever waiting; stepping them at once (`coro.send(None)`)
saves the task, the event-loop round and the wake-up a task costs. One that does wait is
handed to `Resumed`, awaited by the task that started it, so that task stays its task: its
`asyncio.current_task()`, an `asyncio.timeout` it entered and a cancellation all behave as if
it had had a task of its own from the start. Both loops (in memory and distributed) use it.
"""

from __future__ import annotations

import contextvars
from typing import Any


class Resumed:
    """Awaits a coroutine that was started eagerly: passes what it waits on up to the task
    that awaits this, and sends the results (and cancellation) back down, in `context`."""

    __slots__ = ("_context", "_coro", "_first")

    def __init__(self, coro: Any, first: Any, context: contextvars.Context) -> None:
        self._coro = coro
        self._first = first
        self._context = context

    def __await__(self) -> Any:
        coro, run, value = self._coro, self._context.run, self._first
        while True:
            try:
                sent = yield value
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # cancellation, or an exception a future set
                try:
                    value = run(coro.throw, exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    value = run(coro.send, sent)
                except StopIteration as stop:
                    return stop.value
