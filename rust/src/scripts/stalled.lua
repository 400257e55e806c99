--[[ stalled: return jobs whose lease expired (their worker died) to wait, one slice of active.

  KEYS[1] active   KEYS[2] wait   KEYS[3] marker   KEYS[4] stalled-check guard
  ARGV[1] queue key prefix   ARGV[2] guard ms ("0": a later slice of a pass that holds it)
  ARGV[3] first index of the slice of active to look at   ARGV[4] slice length
  ARGV[5] a worker name's lease prefix ("<name>@"; "" for none) and ARGV[6] the prefix of its
  current incarnation ("<name>@<incarnation>:"): a worker restarted under a stable name releases
  the leases its previous incarnation held, at once, instead of waiting for them to expire.
  A job is claimed together with its lock in one script, so an active job without a lock key has
  outlived its lease. A pass covers all of active a slice per call (rust/src/runs.rs), so no
  call holds Redis for long however many jobs are active; one worker per interval does the pass
  (the guard key, SET NX PX, taken by the first slice).
  Every stalled job goes back to wait with its stall count (`stc`) raised: the worker that
  claims it next compares the count with its stall limit, and past the limit fails the node
  without running it (through the engine's failure path: the node's fallback, else the run
  fails with a StalledJobError naming the node). The rule lives there, once.
  Returns {entries in the slice, entries removed from active, requeued ids...}, or {-1} when
  another worker holds the guard.
]]
if ARGV[2] ~= '0' and not redis.call('SET', KEYS[4], '1', 'NX', 'PX', ARGV[2]) then
  return {-1}
end
local first = tonumber(ARGV[3])
local requeued, seen = {}, {}
local removed = 0
local slice = redis.call('LRANGE', KEYS[1], first, first + tonumber(ARGV[4]) - 1)
for _, id in ipairs(slice) do
  local jk = ARGV[1] .. id
  -- a job can sit in active more than once (re-delivered copies claimed together): one stall
  local lock = redis.call('GET', jk .. ':lock')
  local dead = not lock
  if lock and ARGV[5] ~= '' and string.sub(lock, 1, #ARGV[5]) == ARGV[5]
     and string.sub(lock, 1, #ARGV[6]) ~= ARGV[6] then
    redis.call('DEL', jk .. ':lock')  -- held by this worker's previous incarnation: it died
    dead = true
  end
  if not seen[id] and dead then
    seen[id] = true
    removed = removed + redis.call('LREM', KEYS[1], 0, id)
    if redis.call('EXISTS', jk) == 1 then
      redis.call('HINCRBY', jk, 'stc', 1)
      enqueue(KEYS[2], id, redis.call('HGET', jk, 'priority'), true)
      requeued[#requeued + 1] = id
    end
  end
end
if #requeued > 0 then redis.call('ZADD', KEYS[3], 0, '0') end
local out = {#slice, removed}
for _, id in ipairs(requeued) do out[#out + 1] = id end
return out
