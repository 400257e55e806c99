"""Partitions: one logical queue spread over the shards of a Redis Cluster (SPEC section 9).

A queue has `count` partitions (1 by default), published with the queue in Redis
(`<queue prefix>:<queue>:flowcraft:partitions`) by its workers and read from there by clients.
A run lives in one partition, `partition_of(run_id, count)`. Each partition is an ordinary
BullMQ queue; when the layout is *tagged* its name is a Redis hash tag, `{<queue>.<p>}`, and the
run keys of its runs carry the same tag after the deployment's key prefix:

    bull:{flows.2}:wait, bull:{flows.2}:<job id>, ...      the partition's queue
    {flows.2}:workflow:state:<run id>, ...                 the runs that live in it

so every key one script touches hashes to one slot, and the partitions' slots spread over the
shards. The layout is tagged when the queue has more than one partition or the Redis is a
cluster; one partition on a single Redis keeps SPEC section 5's layout exactly
(`bull:flows:*`, `workflow:state:<run id>`): the TypeScript interop and existing deployments.

A tag is `<queue>.<p>` when its slot falls in the p-th of `count` equal slot ranges, else the
first `<queue>.<p>.<k>` (k = 1, 2, ...) whose slot does: a cluster whose masters hold equal
ranges (what `redis-cli --cluster create` makes) gets its partitions evenly.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

SLOTS = 16_384
"""Hash slots of a Redis Cluster."""
MAX_PARTITIONS = 1_024
PARTITIONS_KEY = "flowcraft:partitions"
"""Suffix of the queue key that holds its partition count (`<prefix>:<queue>:` before it)."""


def _crc16(data: bytes) -> int:
    """CRC-16/XMODEM, the checksum Redis Cluster hashes keys with."""
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def key_slot(key: str) -> int:
    """The cluster slot of `key`, honouring a `{hash tag}` as Redis does."""
    raw = key.encode()
    start = raw.find(b"{")
    if start >= 0:
        end = raw.find(b"}", start + 1)
        if end > start + 1:
            raw = raw[start + 1 : end]
    return _crc16(raw) % SLOTS


def partition_tag(queue: str, index: int, count: int) -> str:
    """The hash tag (without braces) of partition `index` of `count`."""
    low, high = index * SLOTS // count, (index + 1) * SLOTS // count
    k = 0
    while True:
        tag = f"{queue}.{index}" if k == 0 else f"{queue}.{index}.{k}"
        if low <= _crc16(tag.encode()) % SLOTS < high:
            return tag
        k += 1


def partition_of(run_id: str, count: int) -> int:
    """The partition a run lives in (CRC-32 of its id, modulo the count)."""
    return 0 if count <= 1 else zlib.crc32(run_id.encode()) % count


def summed(per_partition: Iterable[dict[str, int]]) -> dict[str, int]:
    """Counts of every partition added up, key by key (job counts per BullMQ state)."""
    totals: dict[str, int] = {}
    for counts in per_partition:
        for key, n in counts.items():
            totals[key] = totals.get(key, 0) + n
    return totals


def check_partitions(count: object, where: str = "partitions") -> int:
    if isinstance(count, bool) or not isinstance(count, int):
        raise TypeError(f"{where} must be an int, not {type(count).__name__}")
    if not 1 <= count <= MAX_PARTITIONS:
        raise ValueError(f"{where} must be 1..{MAX_PARTITIONS}, not {count}")
    return count


def parse_partition_set(text: str | Iterable[int] | None, count: int) -> list[int]:
    """The partitions a worker serves: all when `text` is None or empty; else a comma-separated
    list of indexes and ranges (`0,2,4`, `0-2`), each below `count`."""
    if text is None or text == "" or text == []:
        return list(range(count))
    picked: set[int] = set()
    items: Iterable[object] = text.split(",") if isinstance(text, str) else text
    for item in items:
        part = str(item).strip()
        try:
            if "-" in part:
                first, last = (int(x) for x in part.split("-", 1))
                picked.update(range(first, last + 1))
            else:
                picked.add(int(part))
        except ValueError:
            raise ValueError(
                f"partition set must list partition numbers or ranges like 0,2,4 or 0-2, "
                f"not {text!r}"
            ) from None
    bad = sorted(p for p in picked if not 0 <= p < count)
    if bad or not picked:
        raise ValueError(
            f"partition set {text!r} names partitions {bad or '(none)'} outside 0..{count - 1} "
            f"(the queue has {count} partition{'s' if count != 1 else ''})"
        )
    return sorted(picked)


@dataclass(frozen=True)
class Layout:
    """Names of a queue's partitions and of their runs' key prefixes."""

    queue: str
    count: int
    tagged: bool
    published: bool = True
    """Whether the count was read from Redis (False: none published yet, 1 assumed)."""

    def __post_init__(self) -> None:
        check_partitions(self.count)
        if self.tagged and ("{" in self.queue or "}" in self.queue):
            raise ValueError(
                f"queue name {self.queue!r} must not contain '{{' or '}}' on a Redis Cluster "
                "or with partitions (each partition's name is a hash tag)"
            )

    def queue_name(self, index: int) -> str:
        """The BullMQ queue name of partition `index`."""
        if not self.tagged:
            return self.queue
        return "{" + partition_tag(self.queue, index, self.count) + "}"

    def run_prefix(self, index: int, key_prefix: str) -> str:
        """The run key prefix of partition `index`: `<key_prefix>{tag}:` when tagged."""
        if not self.tagged:
            return key_prefix
        return f"{key_prefix}{self.queue_name(index)}:"

    def of(self, run_id: str) -> int:
        return partition_of(run_id, self.count)

    def names(self, indexes: Sequence[int] | None = None) -> list[str]:
        return [self.queue_name(i) for i in (range(self.count) if indexes is None else indexes)]


def check_prefixes(layout: Layout, key_prefix: str, queue_prefix: str) -> None:
    """A tagged layout needs prefixes without braces: the partition's tag must be the first
    `{...}` of every key."""
    if not layout.tagged:
        return
    for name, value in (("key prefix", key_prefix), ("queue prefix", queue_prefix)):
        if "{" in value or "}" in value:
            raise ValueError(
                f"the {name} {value!r} must not contain '{{' or '}}' on a Redis Cluster or with "
                "partitions: the partition's hash tag must be the first in every key"
            )
