local prefix = ARGV[3] .. '|'
local suffix = '|' .. ARGV[5] .. '|' .. ARGV[4]
local instance = false
for _, field in ipairs(redis.call('HKEYS', KEYS[4])) do
  if #field > #prefix + #suffix
     and string.sub(field, 1, #prefix) == prefix
     and string.sub(field, -#suffix) == suffix then
    instance = string.sub(field, #prefix + 1, #field - #suffix)
  end
end
if not instance then return {'gone'} end
local held = redis.call('HMGET', KEYS[1], 'token', 'fence', 'gateway_id', 'conn_id', 'instance')
if held[1] then
  if held[3] == ARGV[3] and held[4] == ARGV[4] and held[5] == instance then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    redis.call('PEXPIRE', KEYS[3], ARGV[2])
    return {'mine', held[1], held[2]}
  end
  local h = redis.call('HMGET', KEYS[1], 'user_id', 'display_name', 'session_id', 'since')
  return {'locked', h[1] or '', h[2] or '', h[3] or '', h[4] or '0'}
end
local fence = redis.call('INCR', KEYS[2])
local floor = tonumber(ARGV[9])
if fence < floor then
  fence = floor
  redis.call('SET', KEYS[2], fence)
end
redis.call('HSET', KEYS[1], 'token', ARGV[1], 'fence', fence,
  'gateway_id', ARGV[3], 'conn_id', ARGV[4], 'instance', instance,
  'session_id', ARGV[5], 'user_id', ARGV[6], 'display_name', ARGV[7], 'since', ARGV[8])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('SADD', KEYS[3], ARGV[10])
redis.call('PEXPIRE', KEYS[3], ARGV[2])
return {'acquired', ARGV[1], tostring(fence)}
