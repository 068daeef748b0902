-- Apply a reservation plan (mta/policy/plan.py) atomically on the Redis server: every guard
-- is checked first, in the plan's order; the first that fails names the refusal and
-- nothing is written. Then every effect runs. The rules (which counters, limits, alerts,
-- ledger rows) are the plan's: this script only knows how each kind of operation works on
-- the keys of redis_store.py. Loaded once (SCRIPT LOAD) and run by EVALSHA.
--
-- KEYS: every key the plan touches (a key it was not given is refused before any write).
-- ARGV: prefix, plan (JSON), transaction, owner, tenant, recipient, now.
local P = ARGV[1]
local plan = cjson.decode(ARGV[2])
local txn, owner, tenant, rcpt, now_s = ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local now = tonumber(now_s)
local HAVE = {}
for _, k in ipairs(KEYS) do HAVE[k] = true end
local MISSING = false
local function K(s)
  local k = P .. s
  if not HAVE[k] then MISSING = true end
  return k
end
local function ttl_ms(expires)
  local t = math.ceil((tonumber(expires) - now) * 1000)
  if t < 1000 then t = 1000 end
  return t
end
local function extend(k, ms)
  if redis.call('PTTL', k) < ms then redis.call('PEXPIRE', k, ms) end
end
local function bump(k, ms)
  local n = redis.call('INCRBY', k, 1)
  extend(k, ms)
  return n
end
local function counter(k) return tonumber(redis.call('GET', k) or '0') end

-- Guards.
local used = nil  -- the reported count (the licence volume)
local function refuse(why)
  return cjson.encode({ok = false, refused = why, licence_used = used})
end
for _, c in ipairs(plan.counts) do
  local n = counter(K('c:' .. c.key))
  if c.reported then used = n end
  if c.limit > 0 and n >= c.limit then return refuse(c.refusal) end
end
local new_u = {}
for i, u in ipairs(plan.uniques) do
  local ck = K('c:' .. u.key)
  if redis.call('HEXISTS', K('u:' .. u.tenant .. '|' .. u.month), rcpt) == 0 then
    if u.limit > 0 and counter(ck) >= u.limit then return refuse(u.key) end
    new_u[i] = true
  end
end
local w, lot_id, lot = plan.take, false, nil
if w then
  K('lots:' .. w); K('ledger:' .. w); K('held:' .. w)
  local first = redis.call('ZRANGEBYSCORE', K('wallet:' .. w), '(' .. now_s, '+inf',
                           'LIMIT', 0, 1)
  if #first == 0 then return refuse('credit') end
  lot_id = tonumber(first[1])
  local raw = redis.call('HGET', K('lots:' .. w), tostring(lot_id))
  if not raw then return redis.error_reply('policy store: lot ' .. lot_id .. ' is gone') end
  lot = cjson.decode(raw)
end
K('seq'); K('alerts'); K('txn:' .. txn); K('owner:' .. owner)
if MISSING then return redis.error_reply('policy store: undeclared key') end

-- Effects.
local filled = {}
for _, c in ipairs(plan.counts) do
  local n = bump(P .. 'c:' .. c.key, ttl_ms(c.expires))
  if c.reported then
    used = n
  elseif c.limit > 0 and n >= c.limit then
    table.insert(filled, c.key)
  end
end
local alerts = {}
for _, a in ipairs(plan.alerts) do
  if used >= a.threshold and redis.call('HSETNX', P .. 'alerts', a.name, now_s) == 1 then
    table.insert(alerts, a.level)
  end
end
for i, u in ipairs(plan.uniques) do
  local h = P .. 'u:' .. u.tenant .. '|' .. u.month
  redis.call('HINCRBY', h, rcpt, 1)
  extend(h, ttl_ms(u.expires))
  if new_u[i] then bump(P .. 'c:' .. u.key, ttl_ms(u.expires)) end
end
if w then
  lot.remaining = lot.remaining - 1
  redis.call('HSET', P .. 'lots:' .. w, tostring(lot_id), cjson.encode(lot))
  if lot.remaining <= 0 then
    redis.call('ZREM', P .. 'wallet:' .. w, string.format('%012d', lot_id))
  end
  redis.call('INCR', P .. 'held:' .. w)
  local id = redis.call('HINCRBY', P .. 'seq', 'ledger', 1)
  redis.call('RPUSH', P .. 'ledger:' .. w, cjson.encode({id = id, time = now_s, tenant = w,
    lot = lot_id, delta = -1, kind = plan.take_kind, msg_id = '', recipient = rcpt,
    note = 'txn ' .. txn}))
end
local rid = redis.call('HINCRBY', P .. 'seq', 'reservation', 1)
redis.call('HSET', P .. 'txn:' .. txn, tostring(rid), cjson.encode({id = rid, txn = txn,
  owner = owner, tenant = tenant, rcpt = rcpt, counters = plan.record.counters,
  uniques = plan.record.uniques, lot = lot_id, wallet = w or '', state = 'reserved',
  msg_id = '', created = now_s}))
redis.call('ZADD', P .. 'owner:' .. owner, 'NX', rid, txn)
return cjson.encode({ok = true, licence_used = used, alerts = alerts, filled = filled})
