-- Empty the additions log (mta/suppress/redis.py: an erasure must not leave the address in
-- it). KEYS[1]: the log, KEYS[2]: its sequence number. One empty entry carries the next
-- number: a node that had read the whole log goes on; one that had not sees a gap and
-- rebuilds its filter from the lists themselves.
redis.call('DEL', KEYS[1])
local g = redis.call('INCR', KEYS[2])
redis.call('XADD', KEYS[1], '*', 'g', g, 'a', '')
return g
