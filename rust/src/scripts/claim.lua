--[[ claim: move up to N ready jobs wait -> active, each with a lease, and return what they need.

  KEYS[1] wait   KEYS[2] active   KEYS[3] delayed   KEYS[4] marker   KEYS[5] meta   KEYS[6] failed
  KEYS[7] prioritized (jobs BullMQ producers added with a priority; served after wait)
  KEYS[8] completed
  ARGV[1] queue key prefix ("bull:<queue>:")   ARGV[2] lease token prefix   ARGV[3] lease ms
  ARGV[4] max jobs   ARGV[5] run-state key prefix ("workflow:state:")   ARGV[6] run key prefix

  First promotes due delayed jobs (BullMQ score: due_ms * 4096 + seq). Returns
  {next_delayed_ms, {run_id, run_status, state_flat, state_version, ...}, job1, job2, ...}:
  each run's state once (with its version, see commit.lua), however many of its jobs were
  claimed; each job is
  {id, token, data, attempts_made, attempts_started, opts, input, run_id, resume, slept,
   node id, iteration text, blueprint id, blueprint version, stalls} (read from the data,
   decoded here; `stalls`: how often the job's lease expired, see stalled.lua):
  `input` is the value its incoming edges carried ("\1": a skip token),
  `resume` the output/action a client resumed a waiting node with, `slept` set once a sleep
  node's delay has passed.
  Jobs whose data is not a flowcraft job are moved to failed with a reason, never returned.
  The job hash, lock and the runs' keys are derived from the prefixes, as BullMQ's own scripts do;
  with a hash-tagged queue and run ids they share one cluster slot.
]]
local now = now_ms()
local qp = ARGV[1]

-- promote due delayed jobs
local due = redis.call('ZRANGEBYSCORE', KEYS[3], 0, now * 4096 + 4095, 'LIMIT', 0, 1000)
for _, id in ipairs(due) do
  redis.call('ZREM', KEYS[3], id)
  redis.call('LPUSH', KEYS[1], id)
  redis.call('HSET', qp .. id, 'delay', 0)
end

local runs, run_list = {}, {}
local out = {0, run_list}
local nxt = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
if nxt[2] then out[1] = math.floor(tonumber(nxt[2]) / 4096) end

if redis.call('HEXISTS', KEYS[5], 'paused') == 1 then return out end

local max = tonumber(ARGV[4])
local n = 0
while n < max do
  local id = redis.call('RPOPLPUSH', KEYS[1], KEYS[2])
  if not id then
    local top = redis.call('ZPOPMIN', KEYS[7])
    if not top[1] then break end
    id = top[1]
    redis.call('LPUSH', KEYS[2], id)
    if redis.call('ZCARD', KEYS[7]) == 0 then redis.call('DEL', qp .. 'pc') end
  end
  local jk = qp .. id
  local f = redis.call('HMGET', jk, 'data', 'atm', 'attemptsMade', 'ats', 'opts', 'fci', 'fcr', 'fcw',
                        'stc')
  local ok, data = pcall(cjson.decode, f[1] or '')
  local reason = nil
  if not f[1] then
    reason = 'job hash is missing'
  elseif not ok or type(data) ~= 'table' then
    reason = 'job data is not a JSON object'
  elseif type(data['runId']) ~= 'string' or type(data['nodeId']) ~= 'string' then
    reason = 'job data lacks string runId and nodeId (not a flowcraft job)'
  end
  if reason then
    redis.call('LREM', KEYS[2], -1, id)
    if f[1] then
      redis.call('ZADD', KEYS[6], now, id)
      redis.call('HSET', jk, 'failedReason', reason, 'finishedOn', now)
      redis.call('HINCRBY', jk, 'atm', 1)
    end
  elseif redis.call('HEXISTS', ARGV[6] .. data['runId'],
                    DONE .. tostring(data['iteration'] or 0) .. '|' .. data['nodeId']) == 1 then
    -- a copy of a job whose node already committed (re-delivery): settle it, run nothing
    redis.call('LREM', KEYS[2], 0, id)
    redis.call('ZADD', KEYS[8], now, id)
    redis.call('HSET', jk, 'finishedOn', now)
    if redis.call('HEXISTS', jk, 'returnvalue') == 0 then redis.call('HSET', jk, 'returnvalue', 'null') end
  else
    n = n + 1
    -- one token per claim, not per (worker, job): a worker that claims a job again after its
    -- lease lapsed must not commit through the earlier, stale claim (fencing). `fce` only grows.
    local token = ARGV[2] .. ':' .. id .. ':' .. redis.call('HINCRBY', jk, 'fce', 1)
    redis.call('SET', jk .. ':lock', token, 'PX', ARGV[3])
    redis.call('HSET', jk, 'processedOn', now)
    local ats = redis.call('HINCRBY', jk, 'ats', 1)
    local run_id = data['runId']
    if not runs[run_id] then
      local meta = redis.call('HMGET', ARGV[6] .. run_id, 'status', STATE_VERSION)
      local status = meta[1] or ''
      local state = {}
      if is_live(status) then
        state = redis.call('HGETALL', ARGV[5] .. run_id)
      end
      runs[run_id] = true
      run_list[#run_list + 1] = run_id
      run_list[#run_list + 1] = status
      run_list[#run_list + 1] = state
      run_list[#run_list + 1] = tonumber(meta[2] or '0')
    end
    local version = data['blueprintVersion']
    out[#out + 1] = {id, token, f[1], tonumber(f[2] or f[3] or 0), ats, f[5] or '{}', f[6] or false,
                     run_id, f[7] or false, f[8] or false, data['nodeId'],
                     tostring(data['iteration'] or 0), tostring(data['blueprintId'] or ''),
                     type(version) == 'string' and version or '', tonumber(f[9] or 0)}
  end
end
if n > 0 and (redis.call('LLEN', KEYS[1]) > 0 or redis.call('ZCARD', KEYS[7]) > 0) then
  -- chained wake-up: another blocked worker may take what is left
  redis.call('ZADD', KEYS[4], 0, '0')
elseif redis.call('LLEN', KEYS[1]) == 0 and redis.call('ZCARD', KEYS[7]) == 0 then
  -- nothing is ready: a stale "ready" marker would only wake blocked workers for nothing
  redis.call('ZREM', KEYS[4], '0')
end
return out
