--[[ retry: a failed attempt with attempts left goes back to the queue (BullMQ moveToDelayed).

  KEYS[1] job hash   KEYS[2] job lock   KEYS[3] active   KEYS[4] delayed   KEYS[5] wait
  KEYS[6] marker   KEYS[7] events
  ARGV[1] job id   ARGV[2] lease token   ARGV[3] delay ms   ARGV[4] failed reason
  ARGV[5] why: "attempt" (a failed attempt: counted in `atm`, reason kept), "sleep" (a sleep
  node parking itself: not an attempt, and `fcw` marks that its next run passes its input on),
  "defer" (left for another worker, e.g. one serving the job's blueprint version: not an
  attempt; `ats` keeps counting the offers).
  ARGV[6] "1": also write BullMQ's events stream (for QueueEvents listeners).
  ARGV[7] with "attempt": the attempt's traceback, appended to the job's BullMQ `stacktrace`
  field (see push_stacktrace in lib.lua); "" for none.
  Returns "ok", or "lost" when the lease was lost (another worker owns the job now).
]]
if redis.call('GET', KEYS[2]) ~= ARGV[2] then return 'lost' end
local now = now_ms()
local id, delay = ARGV[1], tonumber(ARGV[3])
redis.call('DEL', KEYS[2])
redis.call('LREM', KEYS[3], 0, id)  -- all entries: superseded claims of it too
if ARGV[5] == 'attempt' then
  redis.call('HINCRBY', KEYS[1], 'atm', 1)
  redis.call('HSET', KEYS[1], 'failedReason', ARGV[4], 'delay', delay)
  push_stacktrace(KEYS[1], ARGV[7])
elseif ARGV[5] == 'sleep' then
  redis.call('HSET', KEYS[1], 'fcw', '1', 'delay', delay)
  redis.call('HINCRBY', KEYS[1], 'ats', -1)
else
  redis.call('HSET', KEYS[1], 'delay', delay)
end
if delay > 0 then
  local due = now + delay
  delay_job(KEYS[4], KEYS[6], id, due)
  if ARGV[6] == '1' then  -- BullMQ's events stream, when the queue writes it
    redis.call('XADD', KEYS[7], 'MAXLEN', '~', 10000, '*', 'event', 'delayed', 'jobId', id,
               'delay', due)
  end
else
  enqueue(KEYS[5], id, redis.call('HGET', KEYS[1], 'priority'), true)
  redis.call('ZADD', KEYS[6], 0, '0')
end
return 'ok'
