-- One node's lease traffic for one key's fleet concurrency, atomically.
-- KEYS[1]: the key's lease set (member = node:incarnation:id, score = expiry in Redis ms).
-- ARGV[1]: the key's max_concurrency. ARGV[2]: lease TTL in ms.
-- ARGV[3]: how many members follow to release. ARGV[4]: how many to renew.
-- Then the members to release, the members to renew, and the members to acquire.
-- A renewed member that is missing (expired, or Redis lost its memory) is added again if
-- there is room: that is how a node re-registers its live leases. New members are added
-- only while the set holds fewer than the limit, so the fleet never holds more.
-- Returns {members in the set after, new members granted, one 1/0 per renewed member}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local key = KEYS[1]
local limit = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
local n_release = tonumber(ARGV[3])
local n_renew = tonumber(ARGV[4])
local expiry = now + ttl
redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
local i = 5
for _ = 1, n_release do
  redis.call('ZREM', key, ARGV[i])
  i = i + 1
end
local first_renew = i
local kept = {}
for r = 1, n_renew do
  local member = ARGV[first_renew + r - 1]
  if redis.call('ZSCORE', key, member) then
    redis.call('ZADD', key, expiry, member)
    kept[r] = 1
  else
    kept[r] = 0
  end
end
local count = redis.call('ZCARD', key)
for r = 1, n_renew do
  if kept[r] == 0 and count < limit then
    redis.call('ZADD', key, expiry, ARGV[first_renew + r - 1])
    kept[r] = 1
    count = count + 1
  end
end
local granted = 0
i = first_renew + n_renew
while i <= #ARGV and count < limit do
  redis.call('ZADD', key, expiry, ARGV[i])
  granted = granted + 1
  count = count + 1
  i = i + 1
end
if count > 0 then
  redis.call('PEXPIRE', key, ttl)
end
local reply = {count, granted}
for r = 1, n_renew do
  reply[#reply + 1] = kept[r]
end
return reply
