--[[ start: create a run and enqueue its start nodes, atomically.

  KEYS[1] run state   KEYS[2] run meta   KEYS[3] active-runs index   KEYS[4] wait   KEYS[5] marker
  KEYS[6] the queue's published blueprints   KEYS[7..] one job hash per start node
  ARGV: run id, blueprint id, blueprint version, n_sets, (field, json)*,
        n_jobs, (job id, node key, data, opts)*, start token
  Returns "ok"; or, changing nothing: "exists" when a run with this id was already started,
  "unpublished" when no worker serves the blueprint, "stale" when the workers now serve another
  version of it than the caller built the start jobs from.
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
local now = now_ms()
local run_id = ARGV[1]
local i = hset_pairs(KEYS[1], 4)
local n_jobs = tonumber(ARGV[i]); i = i + 1
redis.call('HSET', KEYS[2], 'status', RUNNING, 'blueprintId', ARGV[2], 'blueprintVersion', ARGV[3],
           PENDING, n_jobs, 'startedAt', now, 'startToken', token)
redis.call('ZADD', KEYS[3], now, run_id)
for j = 1, n_jobs do
  local id, key, data, opts = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  i = i + 4
  redis.call('HSET', KEYS[2], FIRED .. key, id)
  create_job(KEYS[6 + j], data, opts, now, 0)
  redis.call('LPUSH', KEYS[4], id)
end
redis.call('ZADD', KEYS[5], 0, '0')
return 'ok'
