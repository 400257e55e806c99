--[[ event: deliver a named event to a run (client.send_event, the webhook endpoint).

  KEYS[1] run meta   KEYS[2] run status   KEYS[3] run state   KEYS[4] wait   KEYS[5] marker
  KEYS[6] new job hash (the resume job; unused when the event is buffered)   KEYS[7] active-runs
  index
  ARGV[1] run id   ARGV[2] event name   ARGV[3] payload (JSON)   ARGV[4] delivery id ("" none;
  kept in the run's meta, so for the run's lifetime)   ARGV[5] the waiting node's key as the
  caller read it ("" none seen)   ARGV[6] resume job id   ARGV[7] job data   ARGV[8] job opts

  A `wait-for-event` node (nodes/wait_event.py) parks its run with the state field
  `_evwait.<name>` holding its activation's node key. If it waits, the event resumes it (resume_node: its output is
  the payload); else the event is buffered in the state as `_events.<name>` (the latest of a
  name wins) and bumps the state version, so the node takes it when it runs, and a park commit
  made on an older snapshot is refused (commit.lua, mode "await-event") and the node runs again.
  Either way the delivery and the park are ordered by Redis: no event is lost between them.
  A delivery id already taken changes nothing: a replayed webhook.
  Returns "delivered", "buffered", "duplicate", "missing" (no such run), "ended", or
  "retry:<node key>" (a node waits but not the one the caller read: read again, send again).
]]
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 'missing' end
local name, payload = ARGV[2], ARGV[3]
if ARGV[4] ~= '' and redis.call('HEXISTS', KEYS[1], DELIVERY .. ARGV[4]) == 1 then
  return 'duplicate'  -- (also once the run ended: a replay of the delivery that ended it)
end
if not is_live(status) then return 'ended' end
local waiter = redis.call('HGET', KEYS[3], EVENT_WAIT .. name)
if waiter then
  local waiting = cjson.decode(waiter)  -- the parked activation's node key
  if redis.call('HEXISTS', KEYS[1], AWAIT .. waiting) == 1 then
    if waiting ~= ARGV[5] then return 'retry:' .. waiting end
    resume_node(KEYS[1], KEYS[2], KEYS[4], KEYS[5], KEYS[6], KEYS[7], ARGV[1], waiting,
                ARGV[6], ARGV[7], ARGV[8], '{"output":' .. payload .. ',"action":null}')
    redis.call('HDEL', KEYS[3], EVENT_WAIT .. name)
    local timer = redis.call('HGET', KEYS[3], EVENT_TIMER .. name)
    if timer then  -- its timeout job is not needed any more
      local t = cjson.decode(timer)
      local qp = string.sub(KEYS[4], 1, #KEYS[4] - 4)
      redis.call('ZREM', qp .. 'delayed', t.id)
      redis.call('DEL', qp .. t.id)
      redis.call('HDEL', KEYS[3], EVENT_TIMER .. name)
    end
    redis.call('HINCRBY', KEYS[1], STATE_VERSION, 1)
    if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], DELIVERY .. ARGV[4], '1') end
    return 'delivered'
  end
end
redis.call('HSET', KEYS[3], EVENT .. name, payload)
redis.call('HINCRBY', KEYS[1], STATE_VERSION, 1)
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], DELIVERY .. ARGV[4], '1') end
return 'buffered'
