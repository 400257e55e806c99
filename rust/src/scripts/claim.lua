--[[ claim: move up to N ready jobs wait -> active, each with a lease, and return what they need.

  KEYS[1] wait   KEYS[2] active   KEYS[3] delayed   KEYS[4] marker   KEYS[5] meta   KEYS[6] failed
  KEYS[7] prioritized (jobs BullMQ producers added with a priority; served after wait)
  KEYS[8] completed   KEYS[9] the queue's published blueprints
  ARGV[1] queue key prefix ("bull:<queue>:")   ARGV[2] lease token prefix   ARGV[3] lease ms
  ARGV[4] max jobs   ARGV[5] run-state key prefix ("workflow:state:")   ARGV[6] run key prefix
  ARGV[7] the largest job data accepted, in bytes   ARGV[8] run status key prefix

  First promotes due delayed jobs (BullMQ score: due_ms * 4096 + seq). Returns
  {next_delayed_ms, {run_id, run_status, state_flat, state_version, traceparent, pending, ...},
   {rejected id, reason, ...}, job1, job2, ...}:
  each run's state once (with its version, see commit.lua), however many of its jobs were
  claimed (`traceparent`: the W3C trace context its client stored at start, or false; see
  python/flowcraft_fast/tracing.py; `pending`: its outstanding jobs, -1 unknown: a run whose
  only outstanding job is claimed here may speculate, see commit.lua); each job is
  {id, token, data, attempts_made, attempts_started, opts, input, run_id, resume, slept,
   node id, iteration text, blueprint id (its run's when the data names none), blueprint
   version, stalls} (read from the data, decoded here; `stalls`: how often the job's lease
   expired, see stalled.lua):
  `input` is the value its incoming edges carried ("\1": a skip token),
  `resume` the output/action a client resumed a waiting node with, `slept` set once a sleep
  node's delay has passed.
  A job that cannot run fails alone, here, with the reason (BullMQ's failedReason), and is
  listed in `rejected`: data missing, too large, too deep, not JSON, not an object, a field of
  the wrong type (named), a counter field (atm, attemptsMade, ats, stc, fce) that is not a whole
  number, a run that does not exist or already ended. An id on wait without a job hash is removed
  and listed too, and so is one that is no job id (lib.lua `not_a_job_id`: a queue key name or
  an id holding ':'; also when it comes due in delayed), without touching the key it names. A copy of a job whose node already committed, in a run that is live or
  completed, is settled as completed (its node ran, once; in a failed or cancelled run it may be
  the node that failed it: such a copy is rejected as the run's other jobs are). Nothing else
  changes.
  The job hash, lock and the runs' keys are derived from the prefixes, as BullMQ's own scripts do;
  with a hash-tagged queue and run ids they share one cluster slot.
]]
local now = now_ms()
local qp = ARGV[1]

local NOT_A_JOB = 'not a job id (names a key of the queue, holds ":" or is empty): removed '
                  .. 'from the queue, nothing else touched'
local rejected = {}

-- promote due delayed jobs
local due = redis.call('ZRANGEBYSCORE', KEYS[3], 0, now * 4096 + 4095, 'LIMIT', 0, 1000)
for _, id in ipairs(due) do
  redis.call('ZREM', KEYS[3], id)
  if not_a_job_id(id) then
    rejected[#rejected + 1] = id
    rejected[#rejected + 1] = NOT_A_JOB
  else
    redis.call('HSET', qp .. id, 'delay', 0)
    enqueue(KEYS[1], id, redis.call('HGET', qp .. id, 'priority'))
  end
end

local runs, run_list = {}, {}
local out = {0, run_list, rejected}
local nxt = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
if nxt[2] then out[1] = math.floor(tonumber(nxt[2]) / 4096) end

if redis.call('HEXISTS', KEYS[5], 'paused') == 1 then return out end

local max = tonumber(ARGV[4])
local max_bytes = tonumber(ARGV[7])
local n = 0
-- A job that is not a runnable flowcraft job leaves active for failed at once, with the reason
-- (BullMQ's failedReason), and the worker is told; nothing else changes.
local function reject(id, jk, reason)
  redis.call('LREM', KEYS[2], -1, id)
  redis.call('ZADD', KEYS[6], now, id)
  redis.call('HSET', jk, 'failedReason', reason, 'finishedOn', now)
  if counter(redis.call('HGET', jk, 'atm')) then
    redis.call('HINCRBY', jk, 'atm', 1)
  else
    redis.call('HSET', jk, 'atm', 1)  -- junk was there: this attempt is the one counted
  end
  rejected[#rejected + 1] = id
  rejected[#rejected + 1] = reason
end
-- Why a job's counters cannot be used (HINCRBY and tonumber below need whole numbers), or nil.
local COUNTERS = {{2, 'atm'}, {3, 'attemptsMade'}, {4, 'ats'}, {9, 'stc'}, {10, 'fce'}}
local function bad_counter(f)
  for _, c in ipairs(COUNTERS) do
    if not counter(f[c[1]]) then
      return 'job field ' .. c[2] .. ' must be a whole number >= 0, not '
             .. cjson.encode(string.sub(f[c[1]], 1, 40))
    end
  end
  return nil
end
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
  local data, reason, status, settled, bp = nil, nil, nil, false, nil
  local f = not_a_job_id(id) and {err = 'reserved'}
            or redis.pcall('HMGET', jk, 'data', 'atm', 'attemptsMade', 'ats', 'opts', 'fci',
                           'fcr', 'fcw', 'stc', 'fce', 'fcev')
  if f.err then
    -- its "job hash" is another key of the queue (or of some other type): leave it alone
    redis.call('LREM', KEYS[2], -1, id)
    rejected[#rejected + 1] = id
    rejected[#rejected + 1] = NOT_A_JOB
  elseif not f[1] then
    if redis.call('EXISTS', jk) == 0 then
      -- an id pushed without a job hash: nothing to run or to fail; it leaves, and is reported
      redis.call('LREM', KEYS[2], -1, id)
      rejected[#rejected + 1] = id
      rejected[#rejected + 1] = 'orphan: no job hash for this id (removed from the queue)'
    else
      reject(id, jk, 'job has no data field')
    end
  elseif #f[1] > max_bytes then
    reject(id, jk, 'job data is ' .. #f[1] .. ' bytes, over the limit of ' .. max_bytes .. ' bytes')
  else
    local ok, decoded = pcall(cjson.decode, f[1])
    if not ok then
      if string.find(tostring(decoded), 'too many nested', 1, true) then
        reason = 'job data is nested deeper than 1000 levels (the limit)'
      else
        reason = 'job data is not valid JSON: ' .. tostring(decoded)
      end
    elseif type(decoded) ~= 'table' or decoded[1] ~= nil then
      reason = 'job data is not a JSON object'
    else
      data = decoded
      reason = bad_job_field(data) or bad_counter(f)
    end
    if not reason then
      local run = redis.call('HMGET', ARGV[6] .. data['runId'], 'status', 'blueprintId')
      -- a job without a blueprint id runs its run's (and is handed to the worker with it)
      bp = text_or(data['blueprintId'], run[2] or '')
      status = run[1]
      if not status then
        -- started by the TypeScript client protocol (no run record yet, its state names a
        -- blueprint published here)? The worker adopts it (adopt.lua); else: not found
        local ok, named = pcall(cjson.decode,
                                redis.call('HGET', ARGV[5] .. data['runId'], 'blueprintId') or '')
        if ok and type(named) == 'string' and named == bp
           and redis.call('HEXISTS', KEYS[9], bp) == 1 then
          status = ''
        else
          reason = 'run ' .. data['runId'] .. ' not found (no run record on this queue, and no '
                   .. 'state naming a blueprint published here)'
        end
      elseif run[2] and bp ~= run[2] then
        reason = 'job names blueprint ' .. cjson.encode(bp) .. ' but its run '
                 .. data['runId'] .. ' runs ' .. cjson.encode(run[2])
      elseif redis.call('HEXISTS', KEYS[9], bp) == 0 then
        reason = 'blueprint ' .. cjson.encode(bp) .. ' not found (no worker on this queue '
                 .. 'publishes it)'
      else
        -- which job committed the node, if one did (commit.lua's done: marker holds its id)
        local done_by = (is_live(status) or status == 'completed')
                        and redis.call('HGET', ARGV[6] .. data['runId'],
                                       DONE .. text_or(data['iteration'], '0') .. '|'
                                       .. data['nodeId'])
        if done_by == id and redis.call('HEXISTS', jk, 'finishedOn') == 0 then
          -- this very job committed the node and is back without its finishedOn: a BullMQ tool
          -- retried it (bull-board's retry of a completed job: reprocessJob drops finishedOn;
          -- a mere re-delivery of the id keeps it and is settled below). Its effects happened
          -- once; running it again would not be a retry of it but a second run of the node.
          reason = 'node ' .. data['nodeId'] .. ' of run ' .. data['runId'] .. ' already ran '
                   .. 'and committed as this job (run ' .. status .. '); a retry does not run '
                   .. 'a committed node again: start a new run to run it again'
        elseif done_by then
          -- a copy of a job whose node already committed (re-delivery): settle it, run nothing
          redis.call('LREM', KEYS[2], 0, id)
          redis.call('ZADD', KEYS[8], now, id)
          redis.call('HSET', jk, 'finishedOn', now)
          if redis.call('HEXISTS', jk, 'returnvalue') == 0 then
            redis.call('HSET', jk, 'returnvalue', 'null')
          end
          settled = true
        elseif not is_live(status) then
          reason = 'run ' .. data['runId'] .. ' already ended (' .. status .. '); node '
                   .. data['nodeId'] .. ' not run'
        elseif f[11] then
          -- a wait-for-event's timeout (commit.lua made it): it resumes the node only if it
          -- still waits; an event that came first leaves it nothing to do
          local run_id = data['runId']
          local key = text_or(data['iteration'], '0') .. '|' .. data['nodeId']
          if unpark(ARGV[6] .. run_id, ARGV[8] .. run_id, key) then
            redis.call('HDEL', ARGV[5] .. run_id, EVENT_WAIT .. f[11], EVENT_TIMER .. f[11])
            redis.call('HINCRBY', ARGV[6] .. run_id, STATE_VERSION, 1)
            redis.call('HSET', ARGV[6] .. run_id, FIRED .. key, id)
          else
            redis.call('LREM', KEYS[2], 0, id)
            redis.call('ZADD', KEYS[8], now, id)
            redis.call('HSET', jk, 'finishedOn', now, 'returnvalue', '"event came first"')
            settled = true
          end
        end
      end
    end
    if reason then reject(id, jk, reason) end
  end
  if not data or reason or settled then
    -- rejected, or settled, above
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
      local meta = redis.call('HMGET', ARGV[6] .. run_id, 'status', STATE_VERSION, 'traceparent',
                              PENDING)
      local status = meta[1] or ''
      local state = {}
      if is_live(status) or status == '' then  -- '': a run to adopt (see above)
        state = redis.call('HGETALL', ARGV[5] .. run_id)
      end
      runs[run_id] = true
      run_list[#run_list + 1] = run_id
      run_list[#run_list + 1] = status
      run_list[#run_list + 1] = state
      run_list[#run_list + 1] = tonumber(meta[2] or '0')
      run_list[#run_list + 1] = meta[3]
      run_list[#run_list + 1] = tonumber(meta[4] or '-1')
    end
    local version = data['blueprintVersion']
    out[#out + 1] = {id, token, f[1], counter(f[2] or f[3]), ats, f[5] or '{}', f[6] or false,
                     run_id, f[7] or false, f[8] or false, data['nodeId'],
                     text_or(data['iteration'], '0'), bp,
                     text_or(version, ''), counter(f[9])}
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
