-- One node's lease traffic for one key's fleet concurrency, atomically.
-- KEYS[1]: the key's lease set (member = node:incarnation:id, score = expiry in Redis ms).
-- KEYS[2]: the key's busy nodes (member = node:incarnation, score = expiry): nodes holding a
--   lease or asking for one. Their number splits the limit into fair shares.
-- KEYS[3]: the key's waiting nodes (same members and expiry): nodes that wanted more than
--   they hold after their last call. While another node waits, nobody grows past its share.
-- ARGV[1]: the key's max_concurrency. ARGV[2]: lease TTL in ms.
-- ARGV[3]: how many members follow to release. ARGV[4]: how many to renew.
-- ARGV[5]: how many slots the node wants in all (its demand, before any fair-share cap).
-- ARGV[6]: the node's id (node:incarnation).
-- Then the members to release, the members to renew, and the members to acquire.
-- A renewed member that is missing (expired, or Redis lost its memory) is added again if
-- there is room: that is how a node re-registers its live leases. New members are added
-- only while the set holds fewer than the limit, so the fleet never holds more.
-- Fair share: with B busy nodes, floor(limit / B) each, plus one for the first
-- (limit mod B) of them in name order, so the shares add up to the limit exactly.
-- Returns {members in the set after, new members granted, this node's share,
--          1 if another node waits else 0, one 1/0 per renewed member}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local key = KEYS[1]
local busy_key = KEYS[2]
local wait_key = KEYS[3]
local limit = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
local n_release = tonumber(ARGV[3])
local n_renew = tonumber(ARGV[4])
local desire = tonumber(ARGV[5])
local me = ARGV[6]
local expiry = now + ttl
redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
redis.call('ZREMRANGEBYSCORE', busy_key, '-inf', now)
redis.call('ZREMRANGEBYSCORE', wait_key, '-inf', now)
local i = 7
for _ = 1, n_release do
  redis.call('ZREM', key, ARGV[i])
  i = i + 1
end
local first_renew = i
local kept = {}
local mine = 0
for r = 1, n_renew do
  local member = ARGV[first_renew + r - 1]
  if redis.call('ZSCORE', key, member) then
    redis.call('ZADD', key, expiry, member)
    kept[r] = 1
    mine = mine + 1
  else
    kept[r] = 0
  end
end
local count = redis.call('ZCARD', key)
for r = 1, n_renew do
  if kept[r] == 0 and count < limit then
    redis.call('ZADD', key, expiry, ARGV[first_renew + r - 1])
    kept[r] = 1
    mine = mine + 1
    count = count + 1
  end
end

-- This node is busy on the key while it holds or wants a slot.
if mine > 0 or desire > 0 then
  redis.call('ZADD', busy_key, expiry, me)
else
  redis.call('ZREM', busy_key, me)
end
local busy = redis.call('ZRANGE', busy_key, 0, -1)
local share = limit
if #busy > 0 then
  local rank = 0
  for _, node in ipairs(busy) do
    if node < me then
      rank = rank + 1
    end
  end
  share = math.floor(limit / #busy)
  if rank < limit % #busy then
    share = share + 1
  end
end
local others_wait = redis.call('ZCARD', wait_key)
if redis.call('ZSCORE', wait_key, me) then
  others_wait = others_wait - 1
end

-- While another node waits, grow only up to the share; alone, up to the limit.
local room = limit - count
if others_wait > 0 then
  room = math.min(room, share - mine)
end
local granted = 0
i = first_renew + n_renew
while i <= #ARGV and granted < room do
  redis.call('ZADD', key, expiry, ARGV[i])
  granted = granted + 1
  count = count + 1
  i = i + 1
end
mine = mine + granted

if desire > mine then
  redis.call('ZADD', wait_key, expiry, me)
else
  redis.call('ZREM', wait_key, me)
end
for _, k in ipairs({key, busy_key, wait_key}) do
  if redis.call('EXISTS', k) == 1 then
    redis.call('PEXPIRE', k, ttl)
  end
end
local reply = {count, granted, share, others_wait > 0 and 1 or 0}
for r = 1, n_renew do
  reply[#reply + 1] = kept[r]
end
return reply
