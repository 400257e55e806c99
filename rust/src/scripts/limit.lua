--[[ limit: per-key concurrency and rate limits (SPEC section 10; runtime/limits.py names the
  groups, rust/src/limits.rs the keys).

  A concurrency group is a sorted set of its holders (job ids): score 0 for a job that acquired
  a slot (it holds it while its lease `<job>:lock` exists: a commit, a retry, a lapsed lease of a
  dead worker all free it), or a time (ms) until which a slot is reserved for a waiter just sent
  back to the queue. Jobs over the limit wait in the group's list, out of the queue: they hold
  no worker and nobody polls. `limit_promote` (lib.lua) fills free slots from that list (FIFO
  per group; groups are independent, so a busy key never delays another key's jobs) and sends
  the jobs back to the queue with their reservation. A rate group counts starts per window of
  Redis time.

  ARGV[1] mode: "admit" | "release" | "sweep"   ARGV[2] queue key prefix   ARGV[3] reserve ms
  admit:   KEYS[1] holders  KEYS[2] waiting  KEYS[3] limits hash  KEYS[4] groups-waiting set
           KEYS[5] job lock  KEYS[6] active  KEYS[7] rate counter base  KEYS[8] wait
           KEYS[9] marker
           ARGV[4] job id  ARGV[5] lease token  ARGV[6] concurrency digest ("" none)
           ARGV[7] its name  ARGV[8] limit  ARGV[9] rate digest ("" none)  ARGV[10] its name
           ARGV[11] max starts  ARGV[12] window ms
           Returns {"ok", 0}, {"parked", 0} (waiting in the group), {"delay", ms} (the next
           window; the caller defers the job that long), {"lost", 0} (not its lease).
  release: KEYS: limits hash, groups-waiting set, wait, marker, then (holders, waiting) per
           group; ARGV[4..]: per group its digest, a count n and n job ids that left the
           worker that admitted them: each leaves the holders unless its lease exists again (a
           later claim of it holds the slot now); then waiters are promoted into free slots.
  sweep:   KEYS: limits hash, groups-waiting set, wait, marker; ARGV[4] at most this many
           groups with waiters. Promotes waiters whose holders died. Returns groups looked at.
]]
local mode, qp, reserve = ARGV[1], ARGV[2], tonumber(ARGV[3])
local now = now_ms()

if mode == 'admit' then
  local id, token = ARGV[4], ARGV[5]
  if redis.call('GET', KEYS[5]) ~= token then return {'lost', 0} end
  local held = false
  if ARGV[6] ~= '' then
    local limit = tonumber(ARGV[8])
    if limit_hold(qp, now, KEYS[3], KEYS[1], id, ARGV[6], ARGV[7], limit) then
      held = true
    else
      redis.call('DEL', KEYS[5])
      redis.call('LREM', KEYS[6], 0, id)
      redis.call('RPUSH', KEYS[2], id)
      redis.call('SADD', KEYS[4], ARGV[6])
      return {'parked', 0}
    end
  end
  if ARGV[9] ~= '' then
    local per = tonumber(ARGV[12])
    local window = math.floor(now / per)
    local counter = KEYS[7] .. ':' .. window
    redis.call('HSET', KEYS[3], ARGV[9], 'r' .. ARGV[11] .. '/' .. per .. '\31' .. ARGV[10])
    if redis.call('INCR', counter) > tonumber(ARGV[11]) then
      redis.call('DECR', counter)
      redis.call('PEXPIRE', counter, per * 2)
      if held then
        redis.call('ZREM', KEYS[1], id)
        limit_promote(qp, now, reserve, KEYS[1], KEYS[2], ARGV[6], tonumber(ARGV[8]), KEYS[4],
                      KEYS[8], KEYS[9])
      end
      return {'delay', (window + 1) * per - now}
    end
    redis.call('PEXPIRE', counter, per * 2)
  end
  return {'ok', 0}
elseif mode == 'release' then
  local i, g = 4, 0
  while i <= #ARGV do
    local digest, n = ARGV[i], tonumber(ARGV[i + 1])
    local holders, waiting = KEYS[5 + g * 2], KEYS[6 + g * 2]
    for j = i + 2, i + 1 + n do
      if redis.call('EXISTS', qp .. ARGV[j] .. ':lock') == 0 then
        redis.call('ZREM', holders, ARGV[j])
      end
    end
    limit_promote(qp, now, reserve, holders, waiting, digest, limit_of(KEYS[1], digest), KEYS[2],
                  KEYS[3], KEYS[4])
    i, g = i + 2 + n, g + 1
  end
  return 'ok'
else  -- sweep
  local digests = redis.call('SRANDMEMBER', KEYS[2], tonumber(ARGV[4]))
  for _, digest in ipairs(digests) do
    local holders, waiting = limit_keys(qp, digest)
    limit_promote(qp, now, reserve, holders, waiting, digest, limit_of(KEYS[1], digest), KEYS[2],
                  KEYS[3], KEYS[4])
  end
  return #digests
end
