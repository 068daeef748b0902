-- Add entries to one scope (mta/suppress/redis.py). KEYS[1]: the scope's entry hash,
-- KEYS[2]: its ordered index (zset, score 0, by address), KEYS[3]: the set of scopes,
-- KEYS[4]: the additions log (stream), KEYS[5]: its sequence number.
-- ARGV[1]: scope, ARGV[2]: "1" replace (an operator's add or import: keeps the first
-- created time, so importing twice changes nothing) or "0" (automatic: only an entry that
-- suppresses longer replaces one), then address, value pairs. Answers how many were written.
-- The addresses written go to the log as one entry {g = sequence, a = addresses by "\n"}:
-- every node follows it into its address filter (a gap in g: it rebuilds the filter).
local replace = ARGV[2] == '1'
local n = 0
local added = {}
for i = 3, #ARGV, 2 do
  local addr, v = ARGV[i], ARGV[i + 1]
  local put = v
  local old = redis.call('HGET', KEYS[1], addr)
  if old then
    local ox, oc = string.match(old, '^[^|]*|([^|]*)|([^|]*)|')
    local r, x, c, s = string.match(v, '^([^|]*)|([^|]*)|([^|]*)|(.*)$')
    if replace then
      if tonumber(oc) < tonumber(c) then put = r .. '|' .. x .. '|' .. oc .. '|' .. s end
    elseif ox == '' or (x ~= '' and tonumber(x) <= tonumber(ox)) then
      put = nil
    end
  end
  if put then
    redis.call('HSET', KEYS[1], addr, put)
    redis.call('ZADD', KEYS[2], 0, addr)
    n = n + 1
    added[n] = addr
  end
end
redis.call('SADD', KEYS[3], ARGV[1])
if n > 0 then
  local g = redis.call('INCR', KEYS[5])
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', 10000, '*', 'g', g, 'a', table.concat(added, '\n'))
end
return n
