--[[ lib: what every script shares; scripts.rs prepends it to each one.

  The engine's vocabulary on the Lua side. Its Python twin is
  python/flowcraft_fast/runtime/vocabulary.py (tests/unit/test_vocabulary.py checks they agree).
]]
local SKIP = '\1'          -- an arrival (and a job's input) meaning "skipped": a dead path
local SEP = '\31'          -- a join arrival is the joins-hash field <target node key> SEP <pred>
local DONE, FIRED, AWAIT = 'done:', 'fired:', 'await:'
local JOIN_PREDS, JOIN_ARRIVED, JOIN_FINISHED = 'np:', 'n:', 'f:'
local PENDING = 'pending'
local STATE_VERSION = 'sv'  -- run meta: bumped by every write to the run's state hash
local RUNNING, AWAITING = 'running', 'awaiting'
local EVENT, EVENT_WAIT = '_events.', '_evwait.'  -- run state: a buffered event, its waiter
local EVENT_TIMER = '_evtimer.'  -- run state: a wait-for-event's timeout job {id, data, opts...}
local DELIVERY = 'evd:'    -- run meta: a delivery id already taken (send_event, webhooks)

-- Redis time in ms: never a worker's clock.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function is_live(status)
  return status == RUNNING or status == AWAITING
end

-- End a run, once: its status and end time, the status payload clients read, the TTL of its
-- keys (from now on, never while it runs), out of the active-runs index and into the ended-runs
-- index `ended` (scored by its end: what `flowcraft-fast runs` and the dashboard list; see
-- trim_ended), and a message to whoever waits on it; when `stops` is a channel, workers running
-- its nodes stop them.
local function end_run(meta, status_key, keys, index, run_id, status, payload, ttl, now, stops,
                       ended)
  local singleton = redis.call('HGET', meta, 'singleton')
  if singleton then
    -- the queue's singleton runs sit next to its index of unfinished runs (keys.rs)
    local singletons = index .. ':singletons'
    if redis.call('HGET', singletons, singleton) == run_id then
      redis.call('HDEL', singletons, singleton)
    end
  end
  redis.call('HSET', meta, 'status', status, 'endedAt', now)
  redis.call('SET', status_key, payload)
  for _, k in ipairs(keys) do redis.call('EXPIRE', k, ttl) end
  redis.call('ZREM', index, run_id)
  redis.call('ZADD', ended, now, run_id)
  redis.call('PUBLISH', status_key, status)
  if stops then redis.call('PUBLISH', stops, run_id) end
end

-- The ended-runs index stays bounded: the runs whose keys expired (ended more than `ttl` s
-- ago) leave it, a slice at a time, and past RECENT_RUNS entries the oldest go; the index
-- itself expires `ttl` s after the last run ended. Called by the commit that ends a run (a
-- cancel only adds: the next run a worker ends trims).
local RECENT_RUNS = 10000
local function trim_ended(ended, now, ttl)
  local gone = redis.call('ZRANGEBYSCORE', ended, '-inf', now - ttl * 1000, 'LIMIT', 0, 100)
  if #gone > 0 then redis.call('ZREM', ended, unpack(gone)) end
  if redis.call('ZCARD', ended) > RECENT_RUNS + 100 then
    redis.call('ZREMRANGEBYRANK', ended, 0, -(RECENT_RUNS + 1))
  end
  redis.call('PEXPIRE', ended, ttl * 1000)
end

-- A run id flowcraft-fast accepts: 1-128 letters, digits, '_', '-', '{', '}' (hash tags).
-- Python's twin is distributed/jobs.py RUN_ID_PATTERN (tests/unit/test_vocabulary.py compares).
local function valid_run_id(id)
  return type(id) == 'string' and #id >= 1 and #id <= 128 and string.find(id, '^[%w_%-{}]+$') ~= nil
end

-- A decoded JSON scalar as text ("3", "1.2", "abc"), or `default` for absent/null.
-- BullMQ's queue-level key names (`<prefix>:<queue>:<name>`) and ours: an id on wait, delayed
-- or prioritized that is one of them, or holds ':' (a job's own sub-keys: `<id>:lock` ...), or
-- is empty, is not a job id: its "job hash" would be another key of the queue. Never touched.
local QUEUE_KEY_NAMES = {
  wait = true, paused = true, meta = true, id = true, delayed = true, active = true,
  completed = true, failed = true, stalled = true, ['stalled-check'] = true, limiter = true,
  prioritized = true, marker = true, events = true, pc = true, ['repeat'] = true,
  metrics = true, de = true, flowcraft = true,
}
local function not_a_job_id(id)
  return id == '' or QUEUE_KEY_NAMES[id] ~= nil or string.find(id, ':', 1, true) ~= nil
end

local function text_or(v, default)
  if v == nil or v == cjson.null then return default end
  if type(v) == 'number' and v == math.floor(v) then return string.format('%d', v) end
  return tostring(v)
end

-- A job-hash counter (BullMQ's atm/attemptsMade/ats, our stc/fce) as a number HINCRBY can count
-- on: 0 when absent, else a whole number >= 0 of at most 15 digits written as Redis writes one;
-- nil for anything else a producer may have put there ("abc", "1.5", "1e400", "-1", " 1", "01").
local function counter(v)
  if not v then return 0 end
  if v == '0' or (#v <= 15 and string.find(v, '^[1-9]%d*$')) then return tonumber(v) end
  return nil
end

-- Why a decoded job payload is not a flowcraft job (naming the field), or nil when it is one.
local function bad_job_field(data)
  local function describe(v)
    if v == nil then return 'absent' end
    if v == cjson.null then return 'null' end
    if type(v) == 'string' then return cjson.encode(string.sub(v, 1, 40)) end
    return type(v) == 'table' and 'an array or object' or tostring(v)
  end
  if type(data['runId']) ~= 'string' then
    return 'job data field runId must be a string, not ' .. describe(data['runId'])
  end
  if not valid_run_id(data['runId']) then
    return 'job data field runId ' .. describe(data['runId']) .. ' is not a run id (1-128 '
           .. "letters, digits, '_', '-', '{', '}')"
  end
  if type(data['nodeId']) ~= 'string' or data['nodeId'] == '' then
    return 'job data field nodeId must be a non-empty string, not ' .. describe(data['nodeId'])
  end
  local bp = data['blueprintId']
  if bp ~= nil and bp ~= cjson.null and type(bp) ~= 'string' then
    return 'job data field blueprintId must be a string, not ' .. describe(bp)
  end
  local version = data['blueprintVersion']
  if version ~= nil and version ~= cjson.null and type(version) ~= 'string' then
    return 'job data field blueprintVersion must be a string or null, not ' .. describe(version)
  end
  local it = data['iteration']
  if it ~= nil and it ~= cjson.null then
    local ok = (type(it) == 'number' and it >= 0 and it == math.floor(it))
               or (type(it) == 'string' and string.find(it, '^%d+[%.%d]*$') ~= nil
                   and string.find(it, '%.%.') == nil and string.sub(it, -1) ~= '.')
    if not ok then
      return 'job data field iteration must be a whole number >= 0 or dotted ones ("1.2"), not '
             .. describe(it)
    end
  end
  return nil
end

-- Whether a job will still run: its hash exists and it has not finished (completed, or failed
-- for good). O(1), whatever the queue's length: waiting, delayed, retrying and leased jobs are all
-- pending; a job whose lease expired is pending too (the stalled-jobs check requeues it). The
-- scripts never leave an unfinished job hash on no list, so "exists and unfinished" is enough.
local function job_pending(hash)
  local f = redis.call('HMGET', hash, 'timestamp', 'finishedOn')
  return f[1] ~= false and f[2] == false
end

-- Create a flowcraft job hash the way BullMQ's addJob does (name, data, opts, timestamps,
-- counters); `ats` is 1 for a job created already claimed (a commit's local continuation), else
-- 0; extra field/value pairs follow (`fci` the input its edges carried, `fcr` a resume payload).
local function create_job(hash, data, opts, now, ats, priority, ...)
  redis.call('HSET', hash, 'name', 'executeNode', 'data', data, 'opts', opts, 'timestamp', now,
             'delay', 0, 'priority', priority, 'atm', 0, 'ats', ats, ...)
end

-- A run's priority (its meta's `priority`, set by start.lua; 0: none), which every job of the
-- run carries (BullMQ's `priority` job field).
local function run_priority(meta)
  return tonumber(redis.call('HGET', meta, 'priority') or '0') or 0
end

-- Queue job `id` where BullMQ's moveToActive finds it: with a priority > 0 in the `prioritized`
-- zset, scored as BullMQ scores it (priority * 2^32 + the queue's `pc` counter: lower first,
-- FIFO within a priority; served after `wait`), else on `wait` (LPUSH; RPUSH when `first`: the
-- next one taken). `wait` is the queue's wait key; `prioritized` and `pc` sit next to it.
local function enqueue(wait, id, priority, first)
  priority = tonumber(priority) or 0
  if priority > 0 then
    local qp = string.sub(wait, 1, #wait - 4)
    local seq = redis.call('INCR', qp .. 'pc') % 4294967296
    redis.call('ZADD', qp .. 'prioritized', priority * 4294967296 + seq, id)
  elseif first then
    redis.call('RPUSH', wait, id)
  else
    redis.call('LPUSH', wait, id)
  end
end

-- args[i] (args: ARGV unless given) is a count n followed by n field/value pairs: HSET them
-- into `hash`; returns the index after them.
local function hset_pairs(hash, i, args)
  args = args or ARGV
  local n = tonumber(args[i])
  if n > 0 then redis.call('HSET', hash, unpack(args, i + 1, i + 2 * n)) end
  return i + 1 + 2 * n
end

-- BullMQ's `stacktrace` job field: a JSON array of strings, newest last (what bull-board shows
-- as a failed job's trace). Append `entry` (nothing when it is empty), keeping the last
-- `opts.stackTraceLimit` entries when the job's options set it, else the last 10.
local function push_stacktrace(hash, entry)
  if entry == nil or entry == '' then return end
  local stored = redis.call('HMGET', hash, 'stacktrace', 'opts')
  local stack = {}
  if stored[1] then
    local ok, old = pcall(cjson.decode, stored[1])
    if ok and type(old) == 'table' then
      for _, s in ipairs(old) do
        if type(s) == 'string' then stack[#stack + 1] = s end
      end
    end
  end
  stack[#stack + 1] = entry
  local keep = 10
  if stored[2] then
    local ok, opts = pcall(cjson.decode, stored[2])
    if ok and type(opts) == 'table' and type(opts.stackTraceLimit) == 'number'
       and opts.stackTraceLimit >= 1 then
      keep = math.floor(opts.stackTraceLimit)
    end
  end
  local kept = {}
  for k = math.max(1, #stack - keep + 1), #stack do kept[#kept + 1] = stack[k] end
  redis.call('HSET', hash, 'stacktrace', cjson.encode(kept))
end

-- Flow limits (limit.lua; commit.lua admits the successor it continues locally and frees the
-- committing job's slot with the same functions). A concurrency group's holders are a sorted
-- set of job ids: score 0 while the job's lease exists, or a time (ms) until which a slot is
-- reserved for a waiter sent back to the queue; its waiting jobs a list. `qp` is the queue's
-- key prefix, `now` Redis time in ms.
local function limit_keys(qp, digest)
  return qp .. 'flowcraft:limit:' .. digest, qp .. 'flowcraft:limit:' .. digest .. ':waiting'
end

-- the limits hash: digest -> "<limit>\31<name>" (a rate group: "r<max>/<ms>\31<name>")
local function limit_of(limits, digest)
  local raw = redis.call('HGET', limits, digest)
  if not raw then return 0 end
  return tonumber(string.match(raw, '^(%d+)\31')) or 0
end

-- drop holders whose lease is gone and whose reservation (if any) has passed
local function limit_prune(qp, now, holders)
  local flat = redis.call('ZRANGE', holders, 0, -1, 'WITHSCORES')
  for i = 1, #flat, 2 do
    local id, until_ms = flat[i], tonumber(flat[i + 1])
    if until_ms <= now and redis.call('EXISTS', qp .. id .. ':lock') == 0 then
      redis.call('ZREM', holders, id)
    end
  end
end

-- Job `id` takes a slot of group `digest` (named `name`, of `limit` slots) unless it is full;
-- whether it holds one now. Holders leave when their worker releases them; only a full group
-- looks for dead ones. With `limits`, the group's entry in the limits hash is written (what
-- promote reads, and inspect lists): limit.lua's admission writes it; a commit taking a
-- successor passes nil (promote needs it only for waiters, which only that admission parks).
local function limit_hold(qp, now, limits, holders, id, digest, name, limit)
  if limits then redis.call('HSET', limits, digest, limit .. '\31' .. name) end
  local n = redis.call('ZCARD', holders)
  if n >= limit then
    -- a waiter promoted with a reserved slot (or a job claimed again) holds one already
    if not redis.call('ZSCORE', holders, id) then
      limit_prune(qp, now, holders)
      n = redis.call('ZCARD', holders)
    else
      n = 0
    end
  end
  if n >= limit then return false end
  redis.call('ZADD', holders, 0, id)  -- held while its lease exists
  return true
end

-- Job `id` (whose lease is gone: it finished) leaves group `digest`; waiters are promoted
-- into free slots when there are any.
local function limit_leave(qp, now, reserve, limits, index, wait, marker, digest, id)
  local holders, waiting = limit_keys(qp, digest)
  redis.call('ZREM', holders, id)
  if redis.call('LLEN', waiting) > 0 then
    limit_promote(qp, now, reserve, holders, waiting, digest, limit_of(limits, digest), index,
                  wait, marker)
  end
end

-- Fill the group's free slots from its waiting list (FIFO; groups are independent, so a busy
-- key never delays another key's jobs), sending each job back to the queue with a reservation
-- of `reserve` ms; `index` is the set of groups with waiters.
local function limit_promote(qp, now, reserve, holders, waiting, digest, limit, index, wait,
                             marker)
  if redis.call('LLEN', waiting) == 0 then
    redis.call('SREM', index, digest)
    return
  end
  limit_prune(qp, now, holders)
  while redis.call('ZCARD', holders) < limit do
    local id = redis.call('LPOP', waiting)
    if not id then break end
    if redis.call('EXISTS', qp .. id) == 1 then
      redis.call('ZADD', holders, now + reserve, id)
      enqueue(wait, id, redis.call('HGET', qp .. id, 'priority'), true)
      redis.call('ZADD', marker, 0, '0')
    end
  end
  if redis.call('LLEN', waiting) == 0 then redis.call('SREM', index, digest) end
end

-- A parked activation `node_key` leaves its wait: its await marker goes, and the run is running
-- again once no node waits. False when it does not wait (any more).
local function unpark(meta, status_key, node_key)
  if redis.call('HDEL', meta, AWAIT .. node_key) == 0 then return false end
  if redis.call('HINCRBY', meta, 'awaiting', -1) <= 0 then
    redis.call('HSET', meta, 'status', RUNNING)
    redis.call('DEL', status_key)
  end
  return true
end

-- A waiting node gets its result from outside (resume.lua, event.lua): it leaves its wait
-- (unpark), and a job carrying `payload` ({output, action}, routed by the worker like any
-- result, no user code) is queued for it. False when the node does not wait (any more).
local function resume_node(meta, status_key, wait, marker, job_hash, index, run_id, node_key,
                           job_id, data, opts, payload)
  if not unpark(meta, status_key, node_key) then return false end
  local now = now_ms()
  local priority = run_priority(meta)
  create_job(job_hash, data, opts, now, 0, priority, 'fcr', payload)
  redis.call('HSET', meta, FIRED .. node_key, job_id)
  enqueue(wait, job_id, priority)
  redis.call('ZADD', marker, 0, '0')
  redis.call('ZADD', index, now, run_id)
  return true
end

-- Put job `id` on the `delayed` zset, due at `due` (ms), as BullMQ scores it (FIFO within one
-- millisecond in the low 12 bits), and move the queue's delayed marker earlier if needed.
local function delay_job(delayed, marker, id, due)
  local seq = redis.call('ZCOUNT', delayed, due * 4096, due * 4096 + 4095)
  redis.call('ZADD', delayed, due * 4096 + math.min(seq, 4095), id)
  local marked = redis.call('ZSCORE', marker, '1')
  if not marked or tonumber(marked) > due then redis.call('ZADD', marker, due, '1') end
end
