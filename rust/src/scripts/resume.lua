--[[ resume: a waiting node gets its result from outside; a job carries it to a worker.

  KEYS[1] run meta   KEYS[2] run status   KEYS[3] wait   KEYS[4] marker   KEYS[5] new job hash
  KEYS[6] active-runs index
  ARGV[1] run id   ARGV[2] node key   ARGV[3] job id   ARGV[4] job data   ARGV[5] job opts
  ARGV[6] resume payload JSON {output, action}
  The job runs no user code: the worker routes the given output and action like any result.
  Returns "ok", "missing" (no such run), "not-awaiting" (the run or this node is not waiting).
]]
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 'missing' end
if not is_live(status) then return 'not-awaiting' end
if redis.call('HDEL', KEYS[1], AWAIT .. ARGV[2]) == 0 then return 'not-awaiting' end
if redis.call('HINCRBY', KEYS[1], 'awaiting', -1) <= 0 then
  redis.call('HSET', KEYS[1], 'status', RUNNING)
  redis.call('DEL', KEYS[2])
end
local now = now_ms()
local priority = run_priority(KEYS[1])
create_job(KEYS[5], ARGV[4], ARGV[5], now, 0, priority, 'fcr', ARGV[6])
redis.call('HSET', KEYS[1], FIRED .. ARGV[2], ARGV[3])
enqueue(KEYS[3], ARGV[3], priority)
redis.call('ZADD', KEYS[4], 0, '0')
redis.call('ZADD', KEYS[6], now, ARGV[1])
return 'ok'
