--[[ beat: a worker's heartbeat record on its queue, and which of its blueprints are missing.

  KEYS[1] the worker's record (hash)   KEYS[2] the queue's workers index (sorted set)
  KEYS[3] the queue's published blueprints
  ARGV[1] worker id   ARGV[2] ttl ms (0: the worker leaves)   ARGV[3] n, then n field/value
  pairs of the record, then the ids of the blueprints the worker serves

  The record is replaced (its fields plus `lastBeat`, Redis time in ms) and expires after the
  ttl unless the worker beats again; the index scores the worker by its last beat, loses the
  members whose beat is older than the ttl (their records have expired) and expires itself a
  ttl after the last beat of any worker. A worker that leaves deletes its record and its entry.
  Returns the served blueprint ids the queue has not published (Redis lost its data, a
  FLUSHALL): the worker publishes them again. One that is published, whatever its version, is
  left alone: during a rolling upgrade another worker may serve a newer one.
]]
local ttl = tonumber(ARGV[2])
if ttl == 0 then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
  return {}
end
local now = now_ms()
redis.call('DEL', KEYS[1])
local i = hset_pairs(KEYS[1], 3)
redis.call('HSET', KEYS[1], 'lastBeat', now)
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('ZADD', KEYS[2], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. (now - ttl))
redis.call('PEXPIRE', KEYS[2], ttl)
local missing = {}
for j = i, #ARGV do
  if redis.call('HEXISTS', KEYS[3], ARGV[j]) == 0 then missing[#missing + 1] = ARGV[j] end
end
return missing
