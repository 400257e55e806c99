--[[ cancel: end a running or awaiting run as cancelled, keeping its context.

  KEYS[1] run state   KEYS[2] run meta   KEYS[3] run joins   KEYS[4] run status
  KEYS[5] active-runs index
  ARGV[1] run id   ARGV[2] state ttl s   ARGV[3] status payload
  ARGV[4] the queue's stops channel (workers stop the run's running nodes when told there)
  Queued jobs of the run are dropped when claimed; in-flight nodes are stopped at once by
  their workers, told on the stops channel (or, should a worker miss it, at its next lease
  renewal, which reports the run's status). Returns "ok", the run's final
  status when it had already ended, or "missing".
]]
local status = redis.call('HGET', KEYS[2], 'status')
if not status then return 'missing' end
if status ~= 'running' and status ~= 'awaiting' then return status end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[2], 'status', 'cancelled', 'endedAt', now)
redis.call('SET', KEYS[4], ARGV[3])
for i = 1, 4 do redis.call('EXPIRE', KEYS[i], tonumber(ARGV[2])) end
redis.call('ZREM', KEYS[5], ARGV[1])
redis.call('PUBLISH', KEYS[4], 'cancelled')
redis.call('PUBLISH', ARGV[4], ARGV[1])
return 'ok'
