--[[ reconcile: re-enqueue the nodes of a live run whose jobs are gone or dead.

  A run's frontier is recorded in its meta hash: `fired:<node key>` = the job that runs it,
  `done:<node key>` once it committed, `await:<node key>` while it waits. A fired node that is
  neither done nor waiting must have a pending job (`job_pending` in lib.lua: its hash exists
  and it has not finished; the survey script uses the same rule). When it has none (the job was
  lost, or failed after stalling too often), a new job is
  enqueued with the input the old one carried (or the one rebuilt from the join arrivals).
  Untaken branches stay untaken: only recorded decisions are replayed. Safe with two
  reconcilers at once: each candidate is checked and re-enqueued in this one atomic script.

  KEYS[1] run meta   KEYS[2] wait   KEYS[3] marker   KEYS[4] active-runs index
  KEYS[5..] per candidate: old job hash, new job hash
  ARGV[1] run id   ARGV[2] n candidates, then per candidate:
    node key, old job id, new job id, data, opts, rebuilt input ("" when none is known)
  Returns the node keys enqueued.
]]
local status = redis.call('HGET', KEYS[1], 'status')
if not is_live(status) then return {} end
local now = now_ms()
local out = {}
local n = tonumber(ARGV[2])
for c = 0, n - 1 do
  local a = 3 + c * 6
  local key, old, new, data, opts, rebuilt = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3],
                                             ARGV[a + 4], ARGV[a + 5]
  local old_hash, new_hash = KEYS[5 + c * 2], KEYS[6 + c * 2]
  local settled = redis.call('HEXISTS', KEYS[1], DONE .. key) == 1
                  or redis.call('HEXISTS', KEYS[1], AWAIT .. key) == 1
                  or redis.call('HGET', KEYS[1], FIRED .. key) ~= old
  if not settled and not job_pending(old_hash) then
    local exists = redis.call('EXISTS', old_hash) == 1
    local fci, fcr, fcw = rebuilt, false, false
    local target, target_hash = old, old_hash
    if exists then
      local f = redis.call('HMGET', old_hash, 'fci', 'fcr', 'fcw')
      fci, fcr, fcw = f[1] or '', f[2], f[3]
      target, target_hash = new, new_hash
    end
    local priority = run_priority(KEYS[1])
    create_job(target_hash, data, opts, now, 0, priority)
    if fci ~= '' then redis.call('HSET', target_hash, 'fci', fci) end
    if fcr then redis.call('HSET', target_hash, 'fcr', fcr) end
    if fcw then redis.call('HSET', target_hash, 'fcw', fcw) end
    redis.call('HSET', KEYS[1], FIRED .. key, target)
    enqueue(KEYS[2], target, priority)
    out[#out + 1] = key
  end
end
if #out > 0 then
  redis.call('ZADD', KEYS[3], 0, '0')
  redis.call('ZADD', KEYS[4], now, ARGV[1])
end
return out
