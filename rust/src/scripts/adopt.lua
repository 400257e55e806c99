--[[ adopt: take over a run started by the TypeScript Flowcraft's client protocol, once.

  Such a producer writes the run's context into `workflow:state:<runId>` (JSON fields, with
  `blueprintId` and `blueprintVersion`) and adds one `executeNode` job per start node (job id
  `<runId>_<nodeId>`) with BullMQ's Queue.add; it writes no run record. The first claim of one
  of those jobs creates the record here, as start.lua would have: status running, the start
  nodes fired (each with the job id the TypeScript client gives it), `adopted` set (the run's
  end writes the status payload the TypeScript side reads, see commit.lua). Several workers
  claiming the run's start jobs at once create it once: the first call does, the others find it.

  KEYS[1] run meta   KEYS[2] run state   KEYS[3] active-runs index
  ARGV: run id, blueprint id, blueprint version ("" for none), n, (start node key, job id)*
  Returns the run's status after the call ("running" when created here or already running), or
  "mismatch" when the state names another blueprint (nothing changes).
]]
local status = redis.call('HGET', KEYS[1], 'status')
if status then return status end
local ok, named = pcall(cjson.decode, redis.call('HGET', KEYS[2], 'blueprintId') or '')
if not ok or named ~= ARGV[2] then return 'mismatch' end
local now = now_ms()
local n = tonumber(ARGV[4])
redis.call('HSET', KEYS[1], 'status', RUNNING, 'blueprintId', ARGV[2], 'blueprintVersion', ARGV[3],
           PENDING, n, 'startedAt', now, 'adopted', '1')
for i = 0, n - 1 do
  redis.call('HSET', KEYS[1], FIRED .. ARGV[5 + 2 * i], ARGV[6 + 2 * i])
end
redis.call('ZADD', KEYS[3], now, ARGV[1])
return RUNNING
