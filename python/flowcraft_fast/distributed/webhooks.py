"""Webhooks: `POST /webhooks/<token>` delivers an event to one run (docs/events.md).

A token is `<run id>.<event name, base64url>.<signature>`, the signature an HMAC-SHA256 of
the run id and the event name with the queue's webhook secret (256 random bits, made once by
`FlowClient.webhook_url_token` and kept in Redis): it names one run and one event, cannot be
guessed, and cannot be altered to name another. The body (JSON, at most `MAX_WEBHOOK_BODY`
bytes) is the event's payload. A delivery is taken once: its id is the `X-Delivery-Id` (or
`Idempotency-Key`) header, else a digest of the token and the body, so a replayed delivery
changes nothing (answer 200 "duplicate"; send a delivery id to deliver the same body twice).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from .. import _core, jsoncodec
from ..errors import FlowcraftError

if TYPE_CHECKING:
    from .client import FlowClient

MAX_WEBHOOK_BODY = 65_536
"""The largest webhook body accepted, bytes (a larger one is answered 413 unread)."""
DELIVERY_HEADERS = ("X-Delivery-Id", "Idempotency-Key")
SIGNATURE_HEX = 32


def _mac(secret: str, run_id: str, name: str) -> str:
    digest = hmac.new(bytes.fromhex(secret), f"{run_id}\x1f{name}".encode(), hashlib.sha256)
    return digest.hexdigest()[:SIGNATURE_HEX]


def sign(secret: str, run_id: str, name: str) -> str:
    encoded = base64.urlsafe_b64encode(name.encode()).rstrip(b"=").decode()
    return f"{run_id}.{encoded}.{_mac(secret, run_id, name)}"


def verify(secret: str, token: str) -> tuple[str, str] | None:
    """(run id, event name) of a token signed with `secret`, else None."""
    parts = token.split(".")
    if len(parts) != 3 or not parts[0] or len(parts[2]) != SIGNATURE_HEX:
        return None
    run_id, encoded, signature = parts
    try:
        name = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    if not hmac.compare_digest(signature, _mac(secret, run_id, name)):
        return None
    return run_id, name


async def deliver(
    client: FlowClient, token: str, body: bytes, delivery_header: str | None
) -> tuple[HTTPStatus, dict[str, Any]]:
    """The answer to one webhook call (the body already read, within the size limit)."""
    from .client import RunNotFound

    secret = await client._webhook_secret()
    found = verify(secret, token)
    if found is None:
        return HTTPStatus.NOT_FOUND, {"error": "unknown webhook"}
    run_id, name = found
    try:
        payload = jsoncodec.loads(body.decode() if body else "null", what="webhook body")
    except (ValueError, UnicodeDecodeError) as exc:
        return HTTPStatus.BAD_REQUEST, {"error": f"body is not JSON: {exc}"}
    delivery = delivery_header or hashlib.sha256(token.encode() + b"\0" + body).hexdigest()[:40]
    if len(delivery) > 200:
        return HTTPStatus.BAD_REQUEST, {"error": "delivery id over 200 characters"}
    try:
        outcome = await client.send_event(run_id, name, payload, delivery_id=delivery)
    except RunNotFound:
        return HTTPStatus.NOT_FOUND, {"error": "unknown webhook"}
    except FlowcraftError as exc:
        return HTTPStatus.CONFLICT, {"error": str(exc)}
    except (ConnectionError, TimeoutError, _core.RedisCommandError) as exc:
        return HTTPStatus.SERVICE_UNAVAILABLE, {"error": f"Redis: {exc}"}
    code = HTTPStatus.OK if outcome == "duplicate" else HTTPStatus.ACCEPTED
    return code, {"status": outcome, "delivery": delivery}
