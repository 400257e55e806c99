--[[ cancel: end a running or awaiting run as cancelled, keeping its context.

  KEYS[1] run state   KEYS[2] run meta   KEYS[3] run joins   KEYS[4] run status
  KEYS[5] active-runs index   KEYS[6] ended-runs index
  ARGV[1] run id   ARGV[2] state ttl s   ARGV[3] status payload
  ARGV[4] the queue's stops channel (workers stop the run's running nodes when told there)
  Queued jobs of the run are dropped when claimed; in-flight nodes are stopped at once by
  their workers, told on the stops channel (or, should a worker miss it, at its next lease
  renewal, which reports the run's status). Returns "ok", the run's final
  status when it had already ended, or "missing".
]]
local status = redis.call('HGET', KEYS[2], 'status')
if not status then return 'missing' end
if not is_live(status) then return status end
end_run(KEYS[2], KEYS[4], {KEYS[1], KEYS[2], KEYS[3], KEYS[4]}, KEYS[5], ARGV[1], 'cancelled',
        ARGV[3], tonumber(ARGV[2]), now_ms(), ARGV[4], KEYS[6])
return 'ok'
