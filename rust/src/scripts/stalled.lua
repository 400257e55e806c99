--[[ stalled: return jobs whose lease expired (their worker died) to wait; fail repeat stallers.

  KEYS[1] active   KEYS[2] wait   KEYS[3] failed   KEYS[4] marker   KEYS[5] stalled-check guard
  KEYS[6] active-runs index
  ARGV[1] queue key prefix   ARGV[2] max stalls before failing   ARGV[3] guard ms
  ARGV[4..7] run meta, status, state and joins key prefixes   ARGV[8] state ttl s
  ARGV[9] the queue's stops channel
  A job is claimed together with its lock in one script, so an active job without a lock key has
  outlived its lease. One worker per interval does the check (the guard key, SET NX PX).
  A job that stalled more than the limit goes to failed, and so does its run (with the reason),
  since the node it runs keeps killing the workers that take it.
  Returns {requeued ids..., "|", failed ids...}.
]]
if not redis.call('SET', KEYS[5], '1', 'NX', 'PX', ARGV[3]) then return {'|'} end
local now = now_ms()
local requeued, failed, seen = {}, {}, {}
local ttl = tonumber(ARGV[8])
for _, id in ipairs(redis.call('LRANGE', KEYS[1], 0, 999)) do
  local jk = ARGV[1] .. id
  -- a job can sit in active more than once (re-delivered copies claimed together): one stall
  if not seen[id] and redis.call('EXISTS', jk .. ':lock') == 0 then
    seen[id] = true
    redis.call('LREM', KEYS[1], 0, id)
    local stc = redis.call('HINCRBY', jk, 'stc', 1)
    if stc > tonumber(ARGV[2]) then
      local reason = 'job stalled more than allowable limit'
      redis.call('HSET', jk, 'failedReason', reason, 'finishedOn', now)
      redis.call('HINCRBY', jk, 'atm', 1)
      redis.call('ZADD', KEYS[3], now, id)
      failed[#failed + 1] = id
      local ok, data = pcall(cjson.decode, redis.call('HGET', jk, 'data') or '')
      if ok and type(data) == 'table' and type(data['runId']) == 'string' then
        local run = data['runId']
        local meta, status_key = ARGV[4] .. run, ARGV[5] .. run
        local status = redis.call('HGET', meta, 'status')
        if is_live(status) then
          local node = tostring(data['nodeId'])
          local why = 'node ' .. node .. ' stalled ' .. stc .. ' times (the workers running it died)'
          local payload = cjson.encode({status = 'failed', reason = why,
            errors = {{nodeId = node, message = why, type = 'StalledJobError'}}})
          end_run(meta, status_key, {meta, status_key, ARGV[6] .. run, ARGV[7] .. run}, KEYS[6],
                  run, 'failed', payload, ttl, now, ARGV[9])
        end
      end
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
