--[[ renew: extend the leases of a worker's in-flight jobs, and report their runs' status.

  ARGV[1] queue key prefix   ARGV[2] lease ms   ARGV[3] run key prefix
  ARGV[4..] (job id, token, run id) triples
  Returns one entry per job: the run's status ("running", "cancelled", ...) when the lease was
  renewed, or "lost" when the job's lock is gone or belongs to someone else (the worker must
  abandon it; its commit would be refused anyway).
]]
local out = {}
for i = 4, #ARGV, 3 do
  local lock = ARGV[1] .. ARGV[i] .. ':lock'
  if redis.call('GET', lock) == ARGV[i + 1] then
    redis.call('PEXPIRE', lock, ARGV[2])
    out[#out + 1] = redis.call('HGET', ARGV[3] .. ARGV[i + 2], 'status') or ''
  else
    out[#out + 1] = 'lost'
  end
end
return out
