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
  then have run the job already and sent its commit behind this one; claim.lua's tokens
  end in a number, so only a commit that took the job this way accepts that commit.
  Inline jobs: when that commit is later in the same call (an "ok" commit with that job id and
  token), the job is not locked nor pushed to active: the later commit creates it as it
  finishes it (the fields a claim and a commit would leave), since nothing can see the job in
  between. A commit before the one that takes its job, or one whose job was taken with
  another token or not at all, goes the usual way (it finds no lock of its own: "lost").
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
local inline = {}     -- job id -> the job an earlier commit of this call took for its follower
local followers = {}  -- job id -> token: the "ok" commits after the first, which may be inline
local trims = {}      -- completed/failed set -> {queue prefix, keep}: trimmed once, at the end
local paused = nil    -- the queue's `paused` flag, read once per call

-- Retention, amortised: once the set holds `keep` + a tenth of it (at least 1, at most 100)
-- more jobs than `keep`, the oldest extra ones go at once, hashes and logs in one DEL.
local function trim(qp, set, keep)
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

local function commit_one(K, A)
  local qp, job_id, token, node_key, mode, result = A[1], A[2], A[3], A[4], A[5], A[6]
  local ttl, keep_done, keep_failed = tonumber(A[7]), tonumber(A[8]), tonumber(A[9])
  local run_id, status_payload, claim_follows = A[10], A[11], A[12] == '1'
  local stops_channel, job_events = A[13], A[14] == '1'
  local take, token_prefix, lease_ms = tonumber(A[15]), A[16], A[17]
  local known_version = tonumber(A[18])
  local held, reserve = A[19], tonumber(A[20])

  -- an inline job (see the header) has no lock and is not in active: this call holds it
  local mine = inline[job_id]
  inline[job_id] = nil
  if mine then
    if mine.token ~= token then return {'lost', ''} end
  elseif redis.call('GET', K[2]) ~= token then
    return {'lost', ''}
  end

  local function finish(failed, text)
    local set, field, event, keep = K[4], 'returnvalue', 'completed', keep_done
    if failed then set, field, event, keep = K[5], 'failedReason', 'failed', keep_failed end
    if mine then  -- created as it finishes, as claimed and finished in one go
      create_job(K[1], mine.data, mine.opts, now, 1, mine.priority, 'fci', mine.input, 'fce', 1,
                 'processedOn', now, 'atm', 1, 'finishedOn', now, field, text)
    else
      redis.call('DEL', K[2])
      redis.call('LREM', K[3], 0, job_id)  -- all entries: superseded claims of it too
      redis.call('HINCRBY', K[1], 'atm', 1)
      redis.call('HSET', K[1], 'finishedOn', now, field, text)
    end
    redis.call('ZADD', set, now, job_id)
    if held ~= '' then  -- its slot is free now (the lock is gone): a waiter may take it
      limit_leave(qp, now, reserve, K[16], K[17], K[6], K[7], held, job_id)
    end
    if job_events then
      redis.call('XADD', K[8], 'MAXLEN', '~', 10000, '*', 'event', event, 'jobId', job_id,
                 field, text)
    end
    trims[set] = {qp, keep}
  end

  local function end_this_run(status, payload, stops)
    if payload == '' then payload = '{"status":"' .. status .. '"}' end
    end_run(K[10], K[12], {K[9], K[10], K[11], K[12]}, K[13], run_id, status,
            payload, ttl, now, stops, K[15])
    trim_ended(K[15], now, ttl)
  end

  if mode == 'reject' then
    finish(true, result)
    return {'ok', 'rejected'}
  end
  -- one read of the run's meta: its status, priority, state version, and for each arrival the
  -- largest predecessor set its target's join has known (the arrivals follow the sets and dels)
  local meta_fields = {'status', 'priority', STATE_VERSION}
  do
    local at = 22 + 2 * tonumber(A[21])
    at = at + 1 + tonumber(A[at])
    local j = at + 1
    for _ = 1, tonumber(A[at]) do
      meta_fields[#meta_fields + 1] = JOIN_PREDS .. A[j]
      j = j + 11 + tonumber(A[j + 4])
    end
  end
  local run_meta = redis.call('HMGET', K[10], unpack(meta_fields))
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
       and redis.call('HEXISTS', K[10], DONE .. node_key) == 0 then
      redis.call('DEL', K[2])
      redis.call('LREM', K[3], 0, job_id)
      enqueue(K[6], job_id, priority)
      redis.call('ZADD', K[7], 0, '0')
      return {'ok', 'requeued'}
    end
    mode = 'await'
    -- a timeout: the node's job made it (an `_evtimer.<name>` write): a delayed job that resumes
    -- the node with the action "timeout" unless an event did first (claim.lua checks, event.lua
    -- deletes it)
    for s = 0, tonumber(A[21]) - 1 do
      local field = A[22 + 2 * s]
      if string.sub(field, 1, #EVENT_TIMER) == EVENT_TIMER then
        local t = cjson.decode(A[23 + 2 * s])
        create_job(qp .. t.id, t.data, t.opts, now, 0, priority, 'fcr',
                   '{"output":null,"action":"timeout"}', 'fcev', t.event, 'delay', t.delay)
        delay_job(qp .. 'delayed', K[7], t.id, now + t.delay)
      end
    end
  end
  if redis.call('HSETNX', K[10], DONE .. node_key, job_id) == 0 then
    finish(false, 'null')
    return {'dup', ''}
  end

  if mode == 'fail' then
    end_this_run('failed', status_payload, stops_channel)
    push_stacktrace(K[1], A[#A])
    finish(true, result)
    return {'ok', 'failed'}
  end

  -- context writes and the node's output
  local n_sets = tonumber(A[21])
  local i = hset_pairs(K[9], 21, A)
  local n_dels = tonumber(A[i]); i = i + 1
  if n_dels > 0 then
    redis.call('HDEL', K[9], unpack(A, i, i + n_dels - 1))
    i = i + n_dels
  end
  local version_before, version = nil, nil
  if n_sets > 0 or n_dels > 0 then
    version = redis.call('HINCRBY', K[10], STATE_VERSION, 1)
    version_before = version - 1
  elseif take > 0 then
    version = stored_version
    version_before = version
  end

  if mode == 'await' then
    redis.call('HSET', K[10], 'status', AWAITING, AWAIT .. node_key, job_id)
    redis.call('HINCRBY', K[10], 'awaiting', 1)
    redis.call('HDEL', K[10], DONE .. node_key)  -- the node finishes when it is resumed
    redis.call('SET', K[12], status_payload)
    redis.call('PUBLISH', K[12], AWAITING)
    redis.call('ZADD', K[13], now, run_id)
    finish(false, result)
    return {'ok', 'awaiting'}
  end

  local pending = -1
  local fired_keys, taken, pushed = {}, {}, 0
  local raised = {}  -- target -> the predecessor count this commit stored for its join
  if take > 0 then
    if paused == nil then paused = redis.call('HEXISTS', K[14], 'paused') == 1 end
    if paused then take = 0 end
  end
  local n_arr = tonumber(A[i]); i = i + 1
  for a = 1, n_arr do
    local target, pred, value, strategy = A[i], A[i + 1], A[i + 2], A[i + 3]
    local n_listed = tonumber(A[i + 4])
    local n_preds = n_listed
    local preds_at = i + 5
    i = preds_at + n_listed
    local succ_id, succ_data, succ_opts = A[i], A[i + 1], A[i + 2]
    local l_digest, l_name, l_limit = A[i + 3], A[i + 4], tonumber(A[i + 5])
    i = i + 6
    local fire, input = false, nil
    -- a join's predecessors can grow while the run goes (batch workers added on the way):
    -- decide against the largest set any arrival has known
    local known = raised[target] or tonumber(run_meta[3 + a] or '0')
    if n_listed == 1 and known <= 1 then
      -- one predecessor (most edges): no join to count. The arrival is still recorded (the
      -- reconciler rebuilds inputs from it) and `fired:` guards the one activation.
      redis.call('HSET', K[11], target .. SEP .. pred, value)
      if redis.call('HSETNX', K[10], FIRED .. target, succ_id) == 1 then
        fire, input = true, value
      end
    else
      if n_preds > known then
        redis.call('HSET', K[10], JOIN_PREDS .. target, n_preds)
        raised[target] = n_preds  -- what a later arrival of this commit at it reads
      else
        n_preds = known
      end
      if redis.call('HSETNX', K[11], target .. SEP .. pred, value) == 1 then
        local arrived = redis.call('HINCRBY', K[10], JOIN_ARRIVED .. target, 1)
        local finished
        if value ~= SKIP then
          finished = redis.call('HINCRBY', K[10], JOIN_FINISHED .. target, 1)
        else
          finished = tonumber(redis.call('HGET', K[10], JOIN_FINISHED .. target) or '0')
        end
        if redis.call('HEXISTS', K[10], FIRED .. target) == 0 then
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
                fields[#fields + 1] = target .. SEP .. A[preds_at + p]
              end
              local values = redis.call('HMGET', K[11], unpack(fields))
              local parts = {}
              for p = 0, n_listed - 1 do
                local v = values[p + 1]
                if v and v ~= SKIP then
                  parts[#parts + 1] = cjson.encode(A[preds_at + p]) .. ':' .. v
                end
              end
              input = '{' .. table.concat(parts, ',') .. '}'
            end
          end
        end
      end
    end
    if fire then
      if n_listed ~= 1 or known > 1 then redis.call('HSET', K[10], FIRED .. target, succ_id) end
      -- `fci`: the input the edges carry; "\1" makes it a skip token (a dead path passing through)
      local succ_hash = K[17 + a]
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
        if followers[succ_id] == succ_token then
          -- its commit follows in this call: it creates the job as it finishes it (no lock,
          -- no trip through active; nothing can see the job in between)
          inline[succ_id] = {token = succ_token, data = succ_data, opts = succ_opts,
                             input = input, priority = priority}
        else
          create_job(succ_hash, succ_data, succ_opts, now, 1, priority, 'fci', input, 'fce', 1,
                     'processedOn', now)
          redis.call('SET', succ_hash .. ':lock', succ_token, 'PX', lease_ms)
          redis.call('LPUSH', K[3], succ_id)
        end
        taken[#taken + 1] = {a - 1, succ_token, input}
      else
        create_job(succ_hash, succ_data, succ_opts, now, 0, priority, 'fci', input)
        enqueue(K[6], succ_id, priority)
        pushed = pushed + 1
      end
      fired_keys[#fired_keys + 1] = target
      pending = pending + 1
    end
  end
  if pushed > 0 and not claim_follows then redis.call('ZADD', K[7], 0, '0') end

  local left = redis.call('HINCRBY', K[10], PENDING, pending)
  if left <= 0 then
    if status_payload == '' and redis.call('HGET', K[10], 'adopted') == '1' then
      -- a run the TypeScript client protocol started: the result in the shape its side reads
      -- ({status, payload: {context, serializedContext, status}}); state values are JSON already
      local flat, parts = redis.call('HGETALL', K[9]), {}
      for f = 1, #flat, 2 do parts[#parts + 1] = cjson.encode(flat[f]) .. ':' .. flat[f + 1] end
      local context = '{' .. table.concat(parts, ',') .. '}'
      status_payload = '{"status":"completed","payload":{"context":' .. context
                       .. ',"serializedContext":' .. cjson.encode(context)
                       .. ',"status":"completed"}}'
    end
    end_this_run('completed', status_payload, nil)
  elseif not mine then  -- (an inline job's run: the commit before it in this call did)
    redis.call('ZADD', K[13], now, run_id)
  end
  finish(false, result)
  local state = false
  if #taken > 0 and version_before ~= known_version then state = redis.call('HGETALL', K[9]) end
  return {'ok', tostring(left), table.concat(fired_keys, SEP), taken, state, version or -1}
end

-- the call (see the header): S commits, each with its slice of KEYS and ARGV
local S = tonumber(ARGV[1])
local segments, ko, ao = {}, 0, 1 + 2 * S
for s = 1, S do
  local nk, na = tonumber(ARGV[2 * s]), tonumber(ARGV[2 * s + 1])
  segments[s] = {ko, nk, ao, na}
  if s > 1 and ARGV[ao + 5] == 'ok' then followers[ARGV[ao + 2]] = ARGV[ao + 3] end
  ko, ao = ko + nk, ao + na
end
local replies = {}
for s = 1, S do
  local seg = segments[s]
  local K, A = {}, {}
  for j = 1, seg[2] do K[j] = KEYS[seg[1] + j] end
  for j = 1, seg[4] do A[j] = ARGV[seg[3] + j] end
  followers[A[2]] = nil  -- from here on, a commit that fires its job creates it as usual
  replies[s] = commit_one(K, A)
end
for set, t in pairs(trims) do trim(t[1], set, t[2]) end
return replies
