-- Adds an operator record (a suspension, a limit) under a fresh id.
-- ARGV: prefix, seq name, record (JSON). The new record's id.
local row = cjson.decode(ARGV[3])
row.id = redis.call('HINCRBY', K('seq'), ARGV[2], 1)
redis.call('HSET', KEYS[2], tostring(row.id), cjson.encode(row))
return row.id
