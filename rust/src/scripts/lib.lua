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

-- Redis time in ms: never a worker's clock.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function is_live(status)
  return status == RUNNING or status == AWAITING
end

-- End a run, once: its status and end time, the status payload clients read, the TTL of its
-- keys (from now on, never while it runs), out of the active-runs index, and a message to
-- whoever waits on it; when `stops` is a channel, workers running its nodes stop them.
local function end_run(meta, status_key, keys, index, run_id, status, payload, ttl, now, stops)
  redis.call('HSET', meta, 'status', status, 'endedAt', now)
  redis.call('SET', status_key, payload)
  for _, k in ipairs(keys) do redis.call('EXPIRE', k, ttl) end
  redis.call('ZREM', index, run_id)
  redis.call('PUBLISH', status_key, status)
  if stops then redis.call('PUBLISH', stops, run_id) end
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
local function create_job(hash, data, opts, now, ats, ...)
  redis.call('HSET', hash, 'name', 'executeNode', 'data', data, 'opts', opts, 'timestamp', now,
             'delay', 0, 'priority', 0, 'atm', 0, 'ats', ats, ...)
end

-- ARGV[i] is a count n followed by n field/value pairs: HSET them into `hash`; returns the
-- index after them.
local function hset_pairs(hash, i)
  local n = tonumber(ARGV[i])
  if n > 0 then redis.call('HSET', hash, unpack(ARGV, i + 1, i + 2 * n)) end
  return i + 1 + 2 * n
end
