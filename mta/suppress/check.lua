-- The suppression entry that applies to a recipient, in one round trip (mta/suppress/redis.py).
-- KEYS: the entry hashes of the scopes to look in, nearest first (the tenant, its
-- ancestors, global). ARGV[1]: now (the policy clock); ARGV[2..]: the recipient, then its
-- "@domain". Answers {scope index, target, value} of the first active entry, or nil.
-- A value is "reason|expires|created|source" (expires "" = never).
local now = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  for j = 2, #ARGV do
    local v = redis.call('HGET', key, ARGV[j])
    if v then
      local x = string.match(v, '^[^|]*|([^|]*)|')
      if x == '' or tonumber(x) > now then
        return {i, ARGV[j], v}
      end
    end
  end
end
return nil
