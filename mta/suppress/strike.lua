-- Count one hard bounce of an address (mta/suppress/redis.py). KEYS[1]: its strike key;
-- ARGV[1]: now (the policy clock), ARGV[2]: the window (seconds). The value is "n|since";
-- a strike older than the window starts again at 1. Answers the count.
local now, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local n, since = 1, ARGV[1]
local v = redis.call('GET', KEYS[1])
if v then
  local on, os = string.match(v, '^(%d+)|(.*)$')
  if now - tonumber(os) <= window then n, since = tonumber(on) + 1, os end
end
-- The TTL only tidies up (in real time); the window is judged on the policy clock above.
redis.call('SET', KEYS[1], n .. '|' .. since, 'PX', math.ceil((window + 86400) * 1000))
return n
