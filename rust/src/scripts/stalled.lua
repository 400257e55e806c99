--[[ stalled: return jobs whose lease expired (their worker died) to wait; fail repeat stallers.

  KEYS[1] active   KEYS[2] wait   KEYS[3] failed   KEYS[4] marker   KEYS[5] stalled-check guard
  ARGV[1] queue key prefix   ARGV[2] max stalls before failing   ARGV[3] guard ms
  A job is claimed together with its lock in one script, so an active job without a lock key has
  outlived its lease. One worker per interval does the check (the guard key, SET NX PX).
  Returns {requeued ids..., "|", failed ids...}.
]]
if not redis.call('SET', KEYS[5], '1', 'NX', 'PX', ARGV[3]) then return {} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local requeued, failed = {}, {}
for _, id in ipairs(redis.call('LRANGE', KEYS[1], 0, 999)) do
  local jk = ARGV[1] .. id
  if redis.call('EXISTS', jk .. ':lock') == 0 then
    redis.call('LREM', KEYS[1], 1, id)
    local stc = redis.call('HINCRBY', jk, 'stc', 1)
    if stc > tonumber(ARGV[2]) then
      redis.call('HSET', jk, 'failedReason', 'job stalled more than allowable limit',
                 'finishedOn', now)
      redis.call('ZADD', KEYS[3], now, id)
      failed[#failed + 1] = id
    else
      redis.call('RPUSH', KEYS[2], id)
      requeued[#requeued + 1] = id
    end
  end
end
if #requeued > 0 then redis.call('ZADD', KEYS[4], 0, '0') end
local out = requeued
out[#out + 1] = '|'
for _, id in ipairs(failed) do out[#out + 1] = id end
return out
