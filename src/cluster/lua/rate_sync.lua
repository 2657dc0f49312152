-- One node's traffic for one fleet-wide rate (a key's or a team's rps, rpm or tpm), atomically:
-- a token bucket on Redis's clock that refills at the rate up to its burst, charged with what
-- the node borrowed, refunded with what it did not use, and split into grants among the nodes
-- busy on the rate.
-- KEYS[1]: the bucket, a hash {level, ts}: units available (negative while borrowed units are
--   being paid back) as of ts (Redis ms, a float: exact to the microsecond).
-- KEYS[2]: the busy nodes (member = node, score = expiry in Redis ms): nodes asking for units.
-- ARGV[1]: the node's report: units granted and not used (> 0, refunded) or units admitted on
--   credit (< 0, charged).
-- ARGV[2]: units asked for this tick (0: the node is idle on this rate).
-- ARGV[3]: the fleet level this node last saw, or '' if none: the bucket is rebuilt from it when
--   Redis lost the hash (restarted empty), so a restart is no windfall.
-- ARGV[4]: the emission interval in ms (a float): one unit refills per interval.
-- ARGV[5]: the burst: the bucket's capacity.
-- ARGV[6]: the node's name. ARGV[7]: the sync interval in ms.
-- Returns {units granted, the level after (a string: Redis truncates Lua floats), busy nodes}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local bucket = KEYS[1]
local busy_key = KEYS[2]
local report = tonumber(ARGV[1])
local ask = tonumber(ARGV[2])
local interval = tonumber(ARGV[4])
local cap = tonumber(ARGV[5])
local me = ARGV[6]
local tick = tonumber(ARGV[7])

local level
local ts
local stored = redis.call('HMGET', bucket, 'level', 'ts')
if stored[1] and stored[2] then
  level = tonumber(stored[1])
  ts = tonumber(stored[2])
else
  if ARGV[3] ~= '' then
    level = math.min(tonumber(ARGV[3]), cap)
  else
    level = cap
  end
  ts = now
end
if now > ts then
  level = level + (now - ts) / interval
end
-- A refund never fills the bucket past its capacity; a charge may take it below zero, and
-- then nobody is granted anything (or may borrow) until the refill has paid it back.
level = math.min(cap, level + report)

local busy_ttl = 3 * tick
redis.call('ZREMRANGEBYSCORE', busy_key, '-inf', now)
if ask > 0 then
  redis.call('ZADD', busy_key, now + busy_ttl, me)
else
  redis.call('ZREM', busy_key, me)
end
local busy = redis.call('ZCARD', busy_key)

-- Fair share: an equal part of what is there for each busy node, but at least one unit so a
-- slow rate (less than a unit per node) still goes round.
local granted = 0
if ask > 0 and level >= 1 then
  local fair = math.floor(level / math.max(busy, 1))
  granted = math.min(ask, math.max(math.min(1, math.floor(level)), fair))
  level = level - granted
end

local level_text = string.format('%.17g', level)
redis.call('HSET', bucket, 'level', level_text, 'ts', string.format('%.17g', now))
-- Kept while a node uses it, and until it would be full again anyway: a bucket that expired
-- is rebuilt full, which is what it would be by then.
local refill = 0
if level < cap then
  refill = math.ceil((cap - level) * interval)
end
local expire = math.max(busy_ttl, refill)
redis.call('PEXPIRE', bucket, expire)
if busy > 0 then
  redis.call('PEXPIRE', busy_key, busy_ttl)
end
return {granted, level_text, busy}
