-- The duplicate check of one recipient (RFC 5322 Message-ID, tenant, recipient) within
-- [policy] duplicate_window, marking it pending. ARGV: prefix, tenant, message-id, rcpt, txn,
-- since, now. 1 = a duplicate.

-- Duplicate markers live max(window, 2 days) + 1 day after their last write: committed ones
-- must outlive the duplicate window; a pending one of a crashed session goes with them.
local function dedupe_ttl(window)
  local w = tonumber(window) or 0
  if w < 172800 then w = 172800 end
  return math.ceil((w + 86400) * 1000)
end
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
