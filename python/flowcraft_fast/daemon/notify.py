"""The systemd notify protocol (sd_notify(3)), written out: a datagram to `$NOTIFY_SOCKET`.

Messages are newline-separated `KEY=value` lines: READY=1, STATUS=..., WATCHDOG=1,
STOPPING=1. The socket is a filesystem path, or a name in the abstract namespace when it starts
with '@'. Without `NOTIFY_SOCKET` every call is a no-op, so the daemon runs the same by hand.
Failing to notify never stops the worker: systemd's own timeouts catch a daemon that goes silent.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

__all__ = ["Notifier", "watchdog_interval"]

log = logging.getLogger("flowcraft_fast.daemon")


class Notifier:
    """Sends state changes to the service manager listening on `address` (or nowhere)."""

    def __init__(self, address: str | None) -> None:
        self.address = address or None
        self._socket: socket.socket | None = None
        self._warned = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Notifier:
        return cls((os.environ if env is None else env).get("NOTIFY_SOCKET"))

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, **fields: str) -> bool:
        """Send one message, e.g. `send(READY="1", STATUS="consuming")`; True when delivered."""
        if self.address is None or not fields:
            return False
        payload = "\n".join(f"{key}={_one_line(value)}" for key, value in fields.items())
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            if self._socket is None:
                self._socket = socket.socket(
                    socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC
                )
                # A full receive queue must not block the event loop; the message is dropped.
                self._socket.setblocking(False)
            self._socket.sendto(payload.encode(), target)
        except OSError as exc:
            if not self._warned:  # once: a missing listener would otherwise flood the log
                self._warned = True
                log.warning("cannot notify the service manager at %s: %s", self.address, exc)
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.send(READY="1", STATUS=status)

    def status(self, status: str) -> bool:
        return self.send(STATUS=status)

    def watchdog(self) -> bool:
        return self.send(WATCHDOG="1")

    def extend_timeout(self, seconds: float, status: str | None = None) -> bool:
        """EXTEND_TIMEOUT_USEC: the start (before READY) or stop (after STOPPING) may take
        `seconds` more from now; systemd's TimeoutStartSec/TimeoutStopSec would otherwise
        kill a daemon still waiting for Redis or still draining."""
        fields = {"EXTEND_TIMEOUT_USEC": str(max(1, round(seconds * 1_000_000)))}
        if status:
            fields["STATUS"] = status
        return self.send(**fields)

    def stopping(self, status: str, extend_seconds: float | None = None) -> bool:
        """STOPPING=1, and EXTEND_TIMEOUT_USEC when the drain may outlast TimeoutStopSec."""
        fields = {"STOPPING": "1", "STATUS": status}
        if extend_seconds is not None:
            fields["EXTEND_TIMEOUT_USEC"] = str(max(1, round(extend_seconds * 1_000_000)))
        return self.send(**fields)

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def watchdog_interval(env: Mapping[str, str] | None = None, pid: int | None = None) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of `WATCHDOG_USEC`), or None when not asked.

    systemd sets `WATCHDOG_PID` to the process it expects the pings from; when it names another
    process (a child that inherited the environment), this one must stay quiet.
    """
    env = os.environ if env is None else env
    try:
        usec = int(env.get("WATCHDOG_USEC", "0"))
    except ValueError:
        return None
    if usec <= 0:
        return None
    expected_pid = env.get("WATCHDOG_PID")
    if expected_pid and expected_pid.strip() != str(os.getpid() if pid is None else pid):
        return None
    return usec / 1_000_000 / 2


def _one_line(value: str) -> str:
    # A newline would start a new KEY=value assignment inside the message.
    return " ".join(value.splitlines())
