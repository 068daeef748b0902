-- Apply a policy plan (mta/policy/plan.py) atomically on the Redis server: every guard is
-- checked first, in the plan's order; the first that fails names the refusal (or, for a
-- plan built from records read before, asks for a new plan: -1) and nothing is written.
-- Then every effect runs. The rules (which counters, limits, alerts, ledger rows, what a
-- release gives back) are the plan's: this script only knows how each kind of operation
-- works on the keys of redis_store.py. Loaded once (SCRIPT LOAD) and run by EVALSHA.
--
-- KEYS: every key the plan touches (a key it was not given is refused before any write).
-- ARGV: prefix, plan (JSON), now, then for a reservation: transaction, owner, tenant,
-- recipient; for a duplicate check: transaction, its index entry.
-- Runs after prelude.lua (P, K, MISSING, extend), which redis_store.py puts in front.
local plan = cjson.decode(ARGV[2])
local now_s = ARGV[3]
local now = tonumber(now_s)
local function ttl_ms(expires)
  local t = math.ceil((tonumber(expires) - now) * 1000)
  if t < 1000 then t = 1000 end
  return t
end
local function bump(k, ms)
  local n = redis.call('INCRBY', k, 1)
  extend(k, ms)
  return n
end
local function unbump(k)
  if redis.call('EXISTS', k) == 1 then redis.call('DECRBY', k, 1) end
end
local function counter(k) return tonumber(redis.call('GET', k) or '0') end
local function pad(id) return string.format('%012d', id) end
local function ledger(w, lot, delta, kind, msg, rcpt, note, time)
  local id = redis.call('HINCRBY', P .. 'seq', 'ledger', 1)
  redis.call('RPUSH', P .. 'ledger:' .. w, cjson.encode({id = id, time = time or now_s,
    tenant = w, lot = lot, delta = delta, kind = kind, msg_id = msg, recipient = rcpt,
    note = note}))
end

-- A settle plan: reservations given back (release, outcome), each guarded by its record
-- being still as read. Answers how many, or -1.
local function settle()
  local h = K(plan.hash)
  if redis.call('HLEN', h) ~= plan.count then return -1 end
  for _, u in ipairs(plan.undos) do
    if redis.call('HGET', h, u.field) ~= u.raw then return -1 end
    for _, k in ipairs(u.counters) do K('c:' .. k) end
    for _, t in ipairs(u.uniques) do K('u:' .. t[1] .. '|' .. t[2]); K('c:' .. t[3]) end
    if u.lot then
      K('seq'); K('lots:' .. u.wallet); K('wallet:' .. u.wallet); K('ledger:' .. u.wallet)
    end
    if u.unhold then K('held:' .. u.wallet) end
  end
  for _, o in ipairs(plan.owners) do K('owner:' .. o) end
  local dt = nil
  if plan.txn then
    dt = K('ddtxn:' .. plan.txn)
    if redis.call('SCARD', dt) ~= plan.dd_count then return -1 end
    for _, d in ipairs(plan.dd_drop) do K(d[2]) end
  end
  if MISSING then return -1 end

  for _, u in ipairs(plan.undos) do
    for _, k in ipairs(u.counters) do unbump(P .. 'c:' .. k) end
    for _, t in ipairs(u.uniques) do
      local uh = P .. 'u:' .. t[1] .. '|' .. t[2]
      if redis.call('HEXISTS', uh, u.rcpt) == 1 then
        if redis.call('HINCRBY', uh, u.rcpt, -1) <= 0 then
          redis.call('HDEL', uh, u.rcpt)
          unbump(P .. 'c:' .. t[3])
        end
      end
    end
    if u.lot then
      local lk = P .. 'lots:' .. u.wallet
      local raw = redis.call('HGET', lk, tostring(u.lot))
      if raw then
        local lot = cjson.decode(raw)
        ledger(u.wallet, u.lot, 1, plan.kind, u.msg_id, u.rcpt, '')
        if lot.expired then
          -- The lot expired meanwhile: it takes the credit back and expires it at once.
          ledger(u.wallet, u.lot, -1, 'expire', u.msg_id, u.rcpt, 'lot already expired')
        else
          lot.remaining = lot.remaining + 1
          redis.call('HSET', lk, tostring(u.lot), cjson.encode(lot))
          if lot.paid then
            redis.call('ZADD', P .. 'wallet:' .. u.wallet, lot.expires, pad(u.lot))
          end
        end
      end
    end
    if u.unhold then redis.call('DECR', P .. 'held:' .. u.wallet) end
    redis.call('HDEL', h, u.field)
  end
  if #plan.undos > 0 and plan.txn and redis.call('EXISTS', h) == 0 then
    for _, o in ipairs(plan.owners) do redis.call('ZREM', P .. 'owner:' .. o, plan.txn) end
  end
  for _, d in ipairs(plan.dd_drop) do
    local raw = redis.call('HGET', P .. d[2], plan.txn)
    if raw and cjson.decode(raw).state == 'pending' then
      redis.call('HDEL', P .. d[2], plan.txn)
    end
    redis.call('SREM', dt, d[1])
  end
  return #plan.undos
end
-- A duplicate check plan: the guard (no committed marker of the message's recipient at or
-- after `since`; else 1, a duplicate, and nothing written), then the effect: the
-- transaction's pending marker, kept as the plan says, and its entry in the transaction's
-- index. ARGV[4]: the transaction, ARGV[5]: the index entry. Answers 0 or 1.
local function duplicate()
  local dk, dt = KEYS[1], KEYS[2]
  local since = tonumber(plan.since)
  local all = redis.call('HGETALL', dk)
  for i = 1, #all, 2 do
    local v = cjson.decode(all[i + 1])
    if v.state == 'committed' and tonumber(v.time) >= since then return 1 end
  end
  redis.call('HSET', dk, ARGV[4], cjson.encode({state = 'pending', time = now_s,
    keep = plan.keep_ms}))
  extend(dk, plan.keep_ms)
  redis.call('SADD', dt, ARGV[5])
  extend(dt, plan.index_keep_ms)
  return 0
end

-- A commit plan: the transaction's records, each guarded by being still as read, settled;
-- those to hold move under the message, final credits are held no longer; its duplicate
-- markers are committed. Answers how many records, or -1.
local function commit()
  local h = K(plan.hash)
  if redis.call('HLEN', h) ~= plan.count then return -1 end
  for _, r in ipairs(plan.records) do
    if redis.call('HGET', h, r.field) ~= r.raw then return -1 end
  end
  local hold = K('hold:' .. plan.msg)
  for _, w in ipairs(plan.final) do K('held:' .. w) end
  for _, o in ipairs(plan.owners) do K('owner:' .. o) end
  local dt = K('ddtxn:' .. plan.txn)
  if redis.call('SCARD', dt) ~= plan.dd_count then return -1 end
  for _, d in ipairs(plan.dd) do K(d) end
  if MISSING then return -1 end

  local raw = {}
  for _, r in ipairs(plan.records) do raw[r.field] = r.raw end
  for _, f in ipairs(plan.hold) do
    local row = cjson.decode(raw[f])
    row.msg_id = plan.msg
    row.state = 'held'
    redis.call('HSET', hold, f, cjson.encode(row))
  end
  for _, w in ipairs(plan.final) do redis.call('DECR', P .. 'held:' .. w) end
  for _, o in ipairs(plan.owners) do redis.call('ZREM', P .. 'owner:' .. o, plan.txn) end
  redis.call('DEL', h)
  for _, d in ipairs(plan.dd) do
    local m = redis.call('HGET', P .. d, plan.txn)
    if m then
      local v = cjson.decode(m)
      v.state = 'committed'
      v.time = now_s
      redis.call('HSET', P .. d, plan.txn, cjson.encode(v))
      -- Kept as its check's plan said, from now on (a marker written before markers
      -- carried it keeps the lifetime its check gave its key).
      if v.keep then extend(P .. d, v.keep) end
    end
  end
  redis.call('DEL', dt)
  return #plan.records
end
-- Lot changes (added, paid, expired), each guarded by the lot's flags being still as
-- decided from. Answers, per change, the lot before and after (JSON), or -1.
local function lots()
  local t = plan.tenant
  local lk = K('lots:' .. t)
  K('wallet:' .. t); K('ledger:' .. t); K('seq'); K('lotowner'); K('lotsdue')
  local before = {}
  for i, c in ipairs(plan.changes) do
    if c.lot ~= 0 then
      local raw = redis.call('HGET', lk, tostring(c.lot))
      if not raw then return -1 end
      local lot = cjson.decode(raw)
      if lot.paid ~= c.was_paid or lot.expired ~= c.was_expired then return -1 end
      before[i] = raw
    end
  end
  if MISSING then return -1 end
  local out = {}
  for i, c in ipairs(plan.changes) do
    local lot
    if c.lot == 0 then
      local id = redis.call('HINCRBY', P .. 'seq', 'lot', 1)
      lot = {id = id, tenant = t, amount = c.amount, remaining = c.amount,
             purchased = c.time, expires = c.expires, paid = false, expired = false,
             note = c.note}
      redis.call('HSET', P .. 'lotowner', tostring(id), t)
      redis.call('ZADD', P .. 'lotsdue', c.expires, tostring(id))
    else
      lot = cjson.decode(before[i])
    end
    ledger(t, lot.id, c.per_credit * lot.remaining, c.kind, '', '', c.note, c.time)
    lot.paid = c.paid
    lot.expired = c.expired
    if c.expired then lot.remaining = 0 end
    local raw = cjson.encode(lot)
    redis.call('HSET', lk, tostring(lot.id), raw)
    -- The wallet: lots that can pay (paid, unexpired, not empty), by expiry.
    if lot.paid and not lot.expired and lot.remaining > 0 then
      redis.call('ZADD', P .. 'wallet:' .. t, lot.expires, pad(lot.id))
    else
      redis.call('ZREM', P .. 'wallet:' .. t, pad(lot.id))
    end
    if lot.expired then redis.call('ZREM', P .. 'lotsdue', tostring(lot.id)) end
    table.insert(out, before[i] or raw)
    table.insert(out, raw)
  end
  return out
end
if plan.op == 'lots' then return lots() end
if plan.op == 'settle' then return settle() end
if plan.op == 'commit' then return commit() end
if plan.op == 'duplicate' then return duplicate() end

-- A reservation plan: one recipient.
local txn, owner, tenant, rcpt = ARGV[4], ARGV[5], ARGV[6], ARGV[7]

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
    redis.call('ZREM', P .. 'wallet:' .. w, pad(lot_id))
  end
  redis.call('INCR', P .. 'held:' .. w)
  ledger(w, lot_id, -1, plan.take_kind, '', rcpt, 'txn ' .. txn)
end
local rid = redis.call('HINCRBY', P .. 'seq', 'reservation', 1)
redis.call('HSET', P .. 'txn:' .. txn, tostring(rid), cjson.encode({id = rid, txn = txn,
  owner = owner, tenant = tenant, rcpt = rcpt, counters = plan.record.counters,
  uniques = plan.record.uniques, lot = lot_id, wallet = w or '', state = 'reserved',
  msg_id = '', created = now_s}))
redis.call('ZADD', P .. 'owner:' .. owner, 'NX', rid, txn)
return cjson.encode({ok = true, licence_used = used, alerts = alerts, filled = filled})
