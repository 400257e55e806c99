--[[ resume: a waiting node gets its result from outside; a job carries it to a worker.

  KEYS[1] run meta   KEYS[2] run status   KEYS[3] wait   KEYS[4] marker   KEYS[5] new job hash
  KEYS[6] active-runs index
  ARGV[1] run id   ARGV[2] node key   ARGV[3] job id   ARGV[4] job data   ARGV[5] job opts
  ARGV[6] resume payload JSON {output, action}
  The job runs no user code: the worker routes the given output and action like any result.
  Returns "ok", "missing" (no such run), "not-awaiting" (the run or this node is not waiting).
]]
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 'missing' end
if not is_live(status) then return 'not-awaiting' end
if not resume_node(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], ARGV[1], ARGV[2],
                   ARGV[3], ARGV[4], ARGV[5], ARGV[6]) then
  return 'not-awaiting'
end
return 'ok'
