"""The Lua scripts of RedisStore's operations that are not plans (see plan.py and apply.lua,
which runs reservations, commits, releases, outcomes and credit lot changes): naming a
message, duplicate markers, and operator records (suspensions, limits). Each is one atomic
operation on the keys listed in redis_store.py, with the semantics of the embedded store
(sqlite_store.py).
"""

from __future__ import annotations

from importlib import resources

__all__ = ["ADD_RECORD", "CHECK_DUPLICATE", "LIFT", "PRELUDE", "PREPARE"]

# Shared by every script: key naming checked against KEYS[], TTLs.
PRELUDE = (resources.files("mta.policy") / "prelude.lua").read_text(encoding="utf-8")

# ARGV: prefix, txn, msg id.
PREPARE = PRELUDE + """
local th = K('txn:' .. ARGV[2])
local all = redis.call('HGETALL', th)
for i = 1, #all, 2 do
  local row = cjson.decode(all[i + 1])
  if row.state == 'reserved' then
    row.msg_id = ARGV[3]
    redis.call('HSET', th, all[i], cjson.encode(row))
  end
end
return 0
"""

# Duplicate markers live max(window, 2 days) + 1 day after their last write: committed ones
# must outlive the duplicate window; a pending one of a crashed session goes with them.
DEDUPE_TTL = """
local function dedupe_ttl(window)
  local w = tonumber(window) or 0
  if w < 172800 then w = 172800 end
  return math.ceil((w + 86400) * 1000)
end
"""

# ARGV: prefix, tenant, message-id, rcpt, txn, since, now. 1 = a duplicate.
CHECK_DUPLICATE = PRELUDE + DEDUPE_TTL + """
local tenant, mid, rcpt, txn = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local since, now_s = tonumber(ARGV[6]), ARGV[7]
local dk = K('dd:' .. tenant .. '|' .. mid .. '|' .. rcpt)
local dt = K('ddtxn:' .. txn)
local all = redis.call('HGETALL', dk)
for i = 1, #all, 2 do
  local v = cjson.decode(all[i + 1])
  if v.state == 'committed' and tonumber(v.time) >= since then return 1 end
end
-- Pending until this transaction commits: an aborted attempt must not make its own retry
-- look like a duplicate. Two attempts in flight at once are both sent (at least once).
local window = tonumber(now_s) - since
redis.call('HSET', dk, txn, cjson.encode({state = 'pending', time = now_s,
  window = window}))
extend(dk, dedupe_ttl(window))
redis.call('SADD', dt, cjson.encode({tenant, mid, rcpt}))
extend(dt, dedupe_ttl(0))
return 0
"""

# ARGV: prefix, seq name, record (JSON). The new record's id.
ADD_RECORD = PRELUDE + """
local row = cjson.decode(ARGV[3])
row.id = redis.call('HINCRBY', K('seq'), ARGV[2], 1)
redis.call('HSET', KEYS[2], tostring(row.id), cjson.encode(row))
return row.id
"""

# ARGV: prefix, field, value ("" = every record). How many records were lifted.
LIFT = PRELUDE + """
local all = redis.call('HGETALL', KEYS[1])
local n = 0
for i = 1, #all, 2 do
  if ARGV[3] == '' or cjson.decode(all[i + 1])[ARGV[2]] == ARGV[3] then
    redis.call('HDEL', KEYS[1], all[i])
    n = n + 1
  end
end
return n
"""

