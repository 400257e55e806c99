"""flowcraft-fast: Flowcraft workflows in memory or distributed over Redis, with a Rust hot path.

The names below are the public API (SPEC section 4); everything else is internal.
"""

from __future__ import annotations

from .distributed.context import RedisContext
from .errors import BlueprintError

__all__ = ["BlueprintError", "RedisContext"]
