redis.call('SREM', KEYS[2], ARGV[4])
local held = redis.call('HMGET', KEYS[1], 'gateway_id', 'conn_id', 'instance')
if held[1] ~= ARGV[1] or held[2] ~= ARGV[2] or held[3] ~= ARGV[3] then return 0 end
redis.call('DEL', KEYS[1])
return 1
