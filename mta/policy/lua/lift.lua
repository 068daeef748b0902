-- Removes operator records whose `field` equals `value` ("" = every record).
-- ARGV: prefix, field, value. How many records were lifted.
local all = redis.call('HGETALL', KEYS[1])
local n = 0
for i = 1, #all, 2 do
  if ARGV[3] == '' or cjson.decode(all[i + 1])[ARGV[2]] == ARGV[3] then
    redis.call('HDEL', KEYS[1], all[i])
    n = n + 1
  end
end
return n
