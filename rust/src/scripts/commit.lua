--[[ commit: record one finished node and move its job to completed/failed, atomically.

  KEYS[1] job hash   KEYS[2] job lock   KEYS[3] active   KEYS[4] completed   KEYS[5] failed
  KEYS[6] wait   KEYS[7] marker   KEYS[8] events   KEYS[9] run state   KEYS[10] run meta
  KEYS[11] run joins   KEYS[12] run status   KEYS[13] active-runs index   KEYS[14] queue meta
  KEYS[15] ended-runs index (a run this commit ends goes there: end_run, trim_ended in lib.lua)
  KEYS[16] flow limits hash   KEYS[17] the set of limit groups with waiters (limit.lua)
  KEYS[18..] one job hash per arrival, for the successor job it may create

  ARGV: queue prefix, job id, lease token, node key ("<iteration>|<nodeId>"), mode, result text,
        state ttl s, keep completed, keep failed, run id, status payload, claim follows ("1": a
        claim in the same round trip takes the new jobs and sets the marker if any are left),
        stops channel (where a run that fails is announced, so workers stop its other nodes),
        job events ("1": write BullMQ's events stream, for QueueEvents listeners),
        take (how many fired successor jobs this worker claims at once), lease token prefix,
        lease ms, known state version (of the snapshot the node ran with; -1: none),
        held group (the digest of the concurrency group whose slot the job holds; "" none),
        reserve ms (limit.lua's reservation for a promoted waiter),
        n_sets, (field, json)*, n_dels, field*,
        n_arrivals, (target key, pred, value|"\1" for skipped, strategy, n_preds, pred*,
                     successor job id, successor data, successor opts,
                     successor's concurrency group digest ("" none), its name, its limit)*,
        stacktrace (last; with "fail": the node's traceback, appended to the job's BullMQ
        `stacktrace` field, see push_stacktrace in lib.lua; "" for none)
  mode: "ok" (node finished), "await" (a wait node parked the run), "await-event" (a
  wait-for-event node parks the run: only on the state version it ran with, else an event may
  have arrived since: the job goes back to the queue, nothing else changes, and the node runs
  again on the new state; see event.lua; a context write `_evtimer.<name>` = {id, data, opts,
  delay, event} also creates the node's timeout job), "fail" (the run fails),
  "reject" (the job cannot run: it alone fails with the result text as its reason; the run is
  not touched).

  Lease fencing: a worker whose token is not the lock's value has lost the job: nothing happens.
  A node commits at most once: the run's "done:<node key>" field is set by the first commit and
  a later commit of the same node (re-delivery, duplicate job) only finishes its job.
  Joins: each arrival is one field "<target key>\31<pred>" of the run's joins hash, written with
  HSETNX (a set of arrivals, never a bare counter); counters move only when a field is new.
  The join rule is also python/flowcraft_fast/runtime/ledger.py (MemoryLedger, in-memory runs);
  tests/integration/test_ledger_differential.py proves the two decide alike.
  Local continuation: up to `take` fired successor jobs (unless the queue is paused) are not
  pushed to wait but created claimed by this worker, as claim.lua would claim them: in active,
  with a lock holding a fresh token (`fce` 1), `processedOn` and `ats` 1. A chain thus runs on
  one worker at one round trip per step; if that worker dies, the lock lapses and the stalled
  check returns the job to wait like any other.
  Speculative continuation: the token of a taken job is "<prefix>:<job id>:p" when the state
  before this commit is the version the node ran with and the job's input is this arrival's
  value, i.e. when the worker could compute the job's state and input itself. The worker may
  then have run the job already and pipelined its commit behind this one; claim.lua's tokens
  end in a number, so only a commit that took the job this way accepts that commit.
  Flow limits: a successor of a concurrency-limited node (its group computed by the worker from
  the edge's value and the context after this commit) is taken only if it gets a slot of its
  group here (limit_hold, as limit.lua's admission); a full group leaves it on the queue, where
  its claim parks it. The committing job frees its own slot as it finishes (the lock is gone),
  and its group's waiters are promoted into it.
  State versions: every write to the run's state bumps the run's `sv`. When the state before
  this commit was the version the node ran with, the worker knows the state after it (its
  snapshot plus these writes) and none is sent back; otherwise the taken jobs come with the
  whole state.
  Returns {code, detail, fired, taken, state, version}: code "ok", "dup", "terminal", "lost";
  for "ok" the detail is the run's outstanding job count (or "failed"/"awaiting"), `fired` the
  node keys of the successor jobs created, separated by \31, `taken` one {arrival index
  (0-based), token, input} per job claimed here, `state` the run's state fields (flat) when a
  job was taken and the worker's snapshot is stale (else false), `version` the state version
  after the commit.
]]
local now = now_ms()
local qp, job_id, token, node_key, mode, result = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local ttl, keep_done, keep_failed = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local run_id, status_payload, claim_follows = ARGV[10], ARGV[11], ARGV[12] == '1'
local stops_channel, job_events = ARGV[13], ARGV[14] == '1'
local take, token_prefix, lease_ms = tonumber(ARGV[15]), ARGV[16], ARGV[17]
local known_version = tonumber(ARGV[18])
local held, reserve = ARGV[19], tonumber(ARGV[20])

if redis.call('GET', KEYS[2]) ~= token then return {'lost', ''} end

-- Retention, amortised: once the set holds `keep` + a tenth of it (at least 1, at most 100)
-- more jobs than `keep`, the oldest extra ones go at once, hashes and logs in one DEL.
local function trim(set, keep)
  if keep < 0 then return end
  local slack = math.max(1, math.min(100, math.floor(keep / 10)))
  local extra = redis.call('ZCARD', set) - keep
  if extra >= slack then
    if extra > 1000 then extra = 1000 end
    local old = redis.call('ZRANGE', set, 0, extra - 1)
    local keys = {}
    for _, id in ipairs(old) do
      keys[#keys + 1] = qp .. id
      keys[#keys + 1] = qp .. id .. ':logs'
    end
    redis.call('DEL', unpack(keys))
    redis.call('ZREMRANGEBYRANK', set, 0, extra - 1)
  end
end

local function finish(failed, text)
  redis.call('DEL', KEYS[2])
  redis.call('LREM', KEYS[3], 0, job_id)  -- all entries: superseded claims of it too
  redis.call('HINCRBY', KEYS[1], 'atm', 1)
  local set, field, event, keep = KEYS[4], 'returnvalue', 'completed', keep_done
  if failed then set, field, event, keep = KEYS[5], 'failedReason', 'failed', keep_failed end
  redis.call('HSET', KEYS[1], 'finishedOn', now, field, text)
  redis.call('ZADD', set, now, job_id)
  if held ~= '' then  -- its slot is free now (the lock is gone): a waiter may take it
    limit_leave(qp, now, reserve, KEYS[16], KEYS[17], KEYS[6], KEYS[7], held, job_id)
  end
  if job_events then
    redis.call('XADD', KEYS[8], 'MAXLEN', '~', 10000, '*', 'event', event, 'jobId', job_id,
               field, text)
  end
  trim(set, keep)
end

local function end_this_run(status, payload, stops)
  if payload == '' then payload = '{"status":"' .. status .. '"}' end
  end_run(KEYS[10], KEYS[12], {KEYS[9], KEYS[10], KEYS[11], KEYS[12]}, KEYS[13], run_id, status,
          payload, ttl, now, stops, KEYS[15])
  trim_ended(KEYS[15], now, ttl)
end

if mode == 'reject' then
  finish(true, result)
  return {'ok', 'rejected'}
end
-- one read of the run's meta: its status, priority, state version, and for each arrival the
-- largest predecessor set its target's join has known (the arrivals follow the sets and dels)
local meta_fields = {'status', 'priority', STATE_VERSION}
do
  local at = 22 + 2 * tonumber(ARGV[21])
  at = at + 1 + tonumber(ARGV[at])
  local j = at + 1
  for _ = 1, tonumber(ARGV[at]) do
    meta_fields[#meta_fields + 1] = JOIN_PREDS .. ARGV[j]
    j = j + 11 + tonumber(ARGV[j + 4])
  end
end
local run_meta = redis.call('HMGET', KEYS[10], unpack(meta_fields))
local run_status, priority = run_meta[1], tonumber(run_meta[2] or '0') or 0
local stored_version = tonumber(run_meta[3] or '0')
if not is_live(run_status) then
  -- the run ended while the node ran: its result is discarded, so the job did not succeed
  finish(true, 'run ' .. run_id .. ' ended (' .. (run_status or 'expired')
               .. ') before node ' .. node_key .. ' committed; its result was discarded')
  return {'terminal', run_status or ''}
end
if mode == 'await-event' then
  local version_now = stored_version
  if known_version >= 0 and version_now ~= known_version
     and redis.call('HEXISTS', KEYS[10], DONE .. node_key) == 0 then
    redis.call('DEL', KEYS[2])
    redis.call('LREM', KEYS[3], 0, job_id)
    enqueue(KEYS[6], job_id, priority)
    redis.call('ZADD', KEYS[7], 0, '0')
    return {'ok', 'requeued'}
  end
  mode = 'await'
  -- a timeout: the node's job made it (an `_evtimer.<name>` write): a delayed job that resumes
  -- the node with the action "timeout" unless an event did first (claim.lua checks, event.lua
  -- deletes it)
  for s = 0, tonumber(ARGV[21]) - 1 do
    local field = ARGV[22 + 2 * s]
    if string.sub(field, 1, #EVENT_TIMER) == EVENT_TIMER then
      local t = cjson.decode(ARGV[23 + 2 * s])
      create_job(qp .. t.id, t.data, t.opts, now, 0, priority, 'fcr',
                 '{"output":null,"action":"timeout"}', 'fcev', t.event, 'delay', t.delay)
      delay_job(qp .. 'delayed', KEYS[7], t.id, now + t.delay)
    end
  end
end
if redis.call('HSETNX', KEYS[10], DONE .. node_key, job_id) == 0 then
  finish(false, 'null')
  return {'dup', ''}
end

if mode == 'fail' then
  end_this_run('failed', status_payload, stops_channel)
  push_stacktrace(KEYS[1], ARGV[#ARGV])
  finish(true, result)
  return {'ok', 'failed'}
end

-- context writes and the node's output
local n_sets = tonumber(ARGV[21])
local i = hset_pairs(KEYS[9], 21)
local n_dels = tonumber(ARGV[i]); i = i + 1
if n_dels > 0 then
  redis.call('HDEL', KEYS[9], unpack(ARGV, i, i + n_dels - 1))
  i = i + n_dels
end
local version_before, version = nil, nil
if n_sets > 0 or n_dels > 0 then
  version = redis.call('HINCRBY', KEYS[10], STATE_VERSION, 1)
  version_before = version - 1
elseif take > 0 then
  version = stored_version
  version_before = version
end

if mode == 'await' then
  redis.call('HSET', KEYS[10], 'status', AWAITING, AWAIT .. node_key, job_id)
  redis.call('HINCRBY', KEYS[10], 'awaiting', 1)
  redis.call('HDEL', KEYS[10], DONE .. node_key)  -- the node finishes when it is resumed
  redis.call('SET', KEYS[12], status_payload)
  redis.call('PUBLISH', KEYS[12], AWAITING)
  redis.call('ZADD', KEYS[13], now, run_id)
  finish(false, result)
  return {'ok', 'awaiting'}
end

local pending = -1
local fired_keys, taken, pushed = {}, {}, 0
local raised = {}  -- target -> the predecessor count this commit stored for its join
if take > 0 and redis.call('HEXISTS', KEYS[14], 'paused') == 1 then take = 0 end
local n_arr = tonumber(ARGV[i]); i = i + 1
for a = 1, n_arr do
  local target, pred, value, strategy = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local n_listed = tonumber(ARGV[i + 4])
  local n_preds = n_listed
  local preds_at = i + 5
  i = preds_at + n_listed
  local succ_id, succ_data, succ_opts = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local l_digest, l_name, l_limit = ARGV[i + 3], ARGV[i + 4], tonumber(ARGV[i + 5])
  i = i + 6
  local fire, input = false, nil
  -- a join's predecessors can grow while the run goes (batch workers added on the way):
  -- decide against the largest set any arrival has known
  local known = raised[target] or tonumber(run_meta[3 + a] or '0')
  if n_listed == 1 and known <= 1 then
    -- one predecessor (most edges): no join to count. The arrival is still recorded (the
    -- reconciler rebuilds inputs from it) and `fired:` guards the one activation.
    redis.call('HSET', KEYS[11], target .. SEP .. pred, value)
    if redis.call('HSETNX', KEYS[10], FIRED .. target, succ_id) == 1 then
      fire, input = true, value
    end
  else
    if n_preds > known then
      redis.call('HSET', KEYS[10], JOIN_PREDS .. target, n_preds)
      raised[target] = n_preds  -- what a later arrival of this commit at it reads
    else
      n_preds = known
    end
    if redis.call('HSETNX', KEYS[11], target .. SEP .. pred, value) == 1 then
      local arrived = redis.call('HINCRBY', KEYS[10], JOIN_ARRIVED .. target, 1)
      local finished
      if value ~= SKIP then
        finished = redis.call('HINCRBY', KEYS[10], JOIN_FINISHED .. target, 1)
      else
        finished = tonumber(redis.call('HGET', KEYS[10], JOIN_FINISHED .. target) or '0')
      end
      if redis.call('HEXISTS', KEYS[10], FIRED .. target) == 0 then
        if strategy == 'any' and value ~= SKIP then
          fire, input = true, value
        elseif arrived >= n_preds and (strategy == 'all' or finished == 0) then
          fire = true
          if finished == 0 then
            input = SKIP
          elseif strategy == 'any' then
            input = value
          else
            local fields = {}
            for p = 0, n_listed - 1 do
              fields[#fields + 1] = target .. SEP .. ARGV[preds_at + p]
            end
            local values = redis.call('HMGET', KEYS[11], unpack(fields))
            local parts = {}
            for p = 0, n_listed - 1 do
              local v = values[p + 1]
              if v and v ~= SKIP then
                parts[#parts + 1] = cjson.encode(ARGV[preds_at + p]) .. ':' .. v
              end
            end
            input = '{' .. table.concat(parts, ',') .. '}'
          end
        end
      end
    end
  end
  if fire then
    if n_listed ~= 1 or known > 1 then redis.call('HSET', KEYS[10], FIRED .. target, succ_id) end
    -- `fci`: the input the edges carry; "\1" makes it a skip token (a dead path passing through)
    local succ_hash = KEYS[17 + a]
    local take_it = #taken < take
    if take_it and l_digest ~= '' then
      -- taken only with a slot (so a job taken with a group holds it); the worker's group is
      -- for this edge's value as the input, not a join's merged one
      local holders = limit_keys(qp, l_digest)
      take_it = input == value and input ~= SKIP
                and limit_hold(qp, now, nil, holders, succ_id, l_digest, l_name, l_limit)
    end
    if take_it then
      -- ':p' (predicted): the worker knew this state and this input, so it may have run the
      -- job already and sends that commit behind this one; ':1' otherwise (that commit, if
      -- any, then finds another token and is discarded; the job runs on what comes back)
      local succ_token = token_prefix .. ':' .. succ_id .. ':1'
      if version_before == known_version and input == value then
        succ_token = token_prefix .. ':' .. succ_id .. ':p'
      end
      create_job(succ_hash, succ_data, succ_opts, now, 1, priority, 'fci', input, 'fce', 1,
                 'processedOn', now)
      redis.call('SET', succ_hash .. ':lock', succ_token, 'PX', lease_ms)
      redis.call('LPUSH', KEYS[3], succ_id)
      taken[#taken + 1] = {a - 1, succ_token, input}
    else
      create_job(succ_hash, succ_data, succ_opts, now, 0, priority, 'fci', input)
      enqueue(KEYS[6], succ_id, priority)
      pushed = pushed + 1
    end
    fired_keys[#fired_keys + 1] = target
    pending = pending + 1
  end
end
if pushed > 0 and not claim_follows then redis.call('ZADD', KEYS[7], 0, '0') end

local left = redis.call('HINCRBY', KEYS[10], PENDING, pending)
if left <= 0 then
  if status_payload == '' and redis.call('HGET', KEYS[10], 'adopted') == '1' then
    -- a run the TypeScript client protocol started: the result in the shape its side reads
    -- ({status, payload: {context, serializedContext, status}}); state values are JSON already
    local flat, parts = redis.call('HGETALL', KEYS[9]), {}
    for f = 1, #flat, 2 do parts[#parts + 1] = cjson.encode(flat[f]) .. ':' .. flat[f + 1] end
    local context = '{' .. table.concat(parts, ',') .. '}'
    status_payload = '{"status":"completed","payload":{"context":' .. context
                     .. ',"serializedContext":' .. cjson.encode(context)
                     .. ',"status":"completed"}}'
  end
  end_this_run('completed', status_payload, nil)
else
  redis.call('ZADD', KEYS[13], now, run_id)
end
finish(false, result)
local state = false
if #taken > 0 and version_before ~= known_version then state = redis.call('HGETALL', KEYS[9]) end
return {'ok', tostring(left), table.concat(fired_keys, SEP), taken, state, version or -1}
