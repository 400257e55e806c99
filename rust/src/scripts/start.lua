--[[ start: create a run and enqueue its start nodes, atomically.

  KEYS[1] run state   KEYS[2] run meta   KEYS[3] active-runs index   KEYS[4] wait   KEYS[5] marker
  KEYS[6] the queue's published blueprints   KEYS[8..] one job hash per start node
  KEYS[7] the queue's singleton runs (hash: singleton key -> run id)
  ARGV: run id, blueprint id, blueprint version, traceparent, n_sets, (field, json)*,
        n_jobs, (job id, node key, data, opts)*, priority, singleton key, start token
  Returns "ok"; or, changing nothing: "exists" when a run with this id was already started,
  "unpublished" when no worker serves the blueprint, "stale" when the workers now serve another
  version of it than the caller built the start jobs from, "singleton:<run id>" when the
  singleton key (not "") names a live run.
  Priority (0: none): kept in the run's meta and carried by every job of the run (enqueue in
  lib.lua). The singleton key maps to the run while it lives; end_run clears it, and a key
  naming a run that ended (or expired) is taken over.
  The traceparent (W3C trace context of the client's start span; "" for none) is kept in the
  run's meta once: claim.lua hands it to workers with the run (python/flowcraft_fast/tracing.py).
  The start token (random, one per start request) is kept in the run's meta: the same request
  sent again after its reply was lost (a broken connection) finds its own run and answers "ok",
  so a start is reported once and never as a duplicate of itself (see rust/src/retry.rs).
]]
local token = ARGV[#ARGV]
if redis.call('EXISTS', KEYS[2]) == 1 then
  if redis.call('HGET', KEYS[2], 'startToken') == token then return 'ok' end
  return 'exists'
end
local served = redis.call('HGET', KEYS[6], ARGV[2] .. '\31version')
if not served then return 'unpublished' end
if served ~= ARGV[3] then return 'stale' end
local run_id = ARGV[1]
local priority, singleton = tonumber(ARGV[#ARGV - 2]), ARGV[#ARGV - 1]
if singleton ~= '' then
  local holder = redis.call('HGET', KEYS[7], singleton)
  if holder then
    -- the holder's meta: this run's meta key with the holder's id in place of this run's
    local meta = string.sub(KEYS[2], 1, #KEYS[2] - #run_id) .. holder
    if is_live(redis.call('HGET', meta, 'status')) then return 'singleton:' .. holder end
  end
  redis.call('HSET', KEYS[7], singleton, run_id)
  redis.call('HSET', KEYS[2], 'singleton', singleton)
end
local now = now_ms()
local i = hset_pairs(KEYS[1], 5)
local n_jobs = tonumber(ARGV[i]); i = i + 1
if ARGV[4] ~= '' then redis.call('HSET', KEYS[2], 'traceparent', ARGV[4]) end
redis.call('HSET', KEYS[2], 'status', RUNNING, 'blueprintId', ARGV[2], 'blueprintVersion', ARGV[3],
           PENDING, n_jobs, 'startedAt', now, 'startToken', token)
if priority > 0 then redis.call('HSET', KEYS[2], 'priority', priority) end
redis.call('ZADD', KEYS[3], now, run_id)
for j = 1, n_jobs do
  local id, key, data, opts = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  i = i + 4
  redis.call('HSET', KEYS[2], FIRED .. key, id)
  create_job(KEYS[7 + j], data, opts, now, 0, priority)
  enqueue(KEYS[4], id, priority)
end
redis.call('ZADD', KEYS[5], 0, '0')
return 'ok'
