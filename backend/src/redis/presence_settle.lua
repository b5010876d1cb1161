local live = false
for _, field in ipairs(redis.call('HKEYS', KEYS[1])) do
  local gateway, instance = string.match(field, '^([^|]*)|([^|]*)|')
  if gateway and redis.call('GET', ARGV[2] .. gateway) == instance then
    live = true
    break
  end
end
local was = redis.call('HGET', KEYS[2], 'online') == '1'
if live == was then
  return -1
end
redis.call('HSET', KEYS[2], 'online', live and '1' or '0', 'last_seen', ARGV[1])
if live then return 1 else return 0 end
