local held = redis.call('HMGET', KEYS[1], 'token', 'gateway_id', 'conn_id')
if held[1] ~= ARGV[1] or held[2] ~= ARGV[3] or held[3] ~= ARGV[4] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return 1
