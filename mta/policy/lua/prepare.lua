-- Names a transaction's reservations after its message (the queue id), once the
-- message is in the spool. ARGV: prefix, txn, msg id.
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
