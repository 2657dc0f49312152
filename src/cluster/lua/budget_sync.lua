-- One node's budget traffic for one scope's period, atomically: report spend and hold, ask
-- for a grant, learn the fleet's state.
-- KEYS[1]: the period's hash (cf:budget:<scope>:<period_start_ms>). Fields: s<d> = the fleet's
--   settled spend in dimension <d> (t = tokens, n = nano-USD); per node: c<d>:<node> = the
--   node's cumulative settled spend as last applied, h<d>:<node> = the node's hold (in-flight
--   reservations + unused allowance, plus what this script granted it), a:<node> = present
--   while the node asks for more.
-- KEYS[2]: the period's live nodes (member = node:incarnation, score = expiry on Redis's clock).
-- ARGV[1]: the node's id. ARGV[2]: hold TTL in ms (three ticks). ARGV[3]: when the hash and
--   the node set expire (Unix ms; 0 = never, a `total` budget). ARGV[4]: 1 when the node is
--   leaving (graceful stop): its spend is applied and its fields removed.
-- Then 7 values per dimension, tokens first, then nano-USD:
--   limit (-1 = not limited), cum (the node's cumulative settled spend this period),
--   at_view (cum as of the node's last answered call), view (the fleet spend that answer
--   said), hold, ask (the grant wanted), one (the largest single reservation seen).
-- Spend is reported as a cumulative counter, so a call Redis applied but whose reply was lost
-- is not counted twice when the next call repeats it: only cum - c<d>:<node> is added.
-- The fleet spend never goes below view + (cum - at_view): what this node last saw plus what
-- it settled since. That rebuilds a hash Redis lost (restarted empty) from the nodes' views,
-- which start from the ledger at start-up, and is a no-op otherwise (the hash is ahead).
-- remaining = limit - spent - live holds; grant = min(ask, max(remaining / busy nodes,
-- min(one, remaining))): a fair share, but at least one request's worth while it fits.
-- Returns {spent_t, remaining_t, granted_t, spent_n, remaining_n, granted_n, busy}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local hash = KEYS[1]
local nodes = KEYS[2]
local me = ARGV[1]
local ttl = tonumber(ARGV[2])
local expire_at = tonumber(ARGV[3])
local leaving = ARGV[4] == '1'
local dims = {'t', 'n'}

-- Whole numbers as Redis stores them (tostring would write 1e+15).
local function int(x)
  return string.format('%d', x)
end

-- A node that has not called for a TTL is gone: its holds free. Its in-flight requests never
-- settled anywhere, so no spend is lost; its settled spend was added when it reported it.
local dead = redis.call('ZRANGEBYSCORE', nodes, '-inf', now)
for _, node in ipairs(dead) do
  redis.call('HDEL', hash, 'ht:' .. node, 'hn:' .. node, 'ct:' .. node, 'cn:' .. node,
    'a:' .. node)
end
redis.call('ZREMRANGEBYSCORE', nodes, '-inf', now)

local args = {}
local asking = false
for i, d in ipairs(dims) do
  local b = 4 + (i - 1) * 7
  local a = {
    limit = tonumber(ARGV[b + 1]),
    cum = tonumber(ARGV[b + 2]),
    at_view = tonumber(ARGV[b + 3]),
    view = tonumber(ARGV[b + 4]),
    hold = tonumber(ARGV[b + 5]),
    ask = tonumber(ARGV[b + 6]),
    one = tonumber(ARGV[b + 7]),
  }
  args[d] = a
  if a.ask > 0 and a.limit >= 0 then
    asking = true
  end
  local spent = tonumber(redis.call('HGET', hash, 's' .. d) or '0')
  local last = redis.call('HGET', hash, 'c' .. d .. ':' .. me)
  local base = a.at_view
  if last then
    base = tonumber(last)
  end
  if a.cum > base then
    spent = spent + (a.cum - base)
  end
  local floor = a.view + math.max(0, a.cum - a.at_view)
  if floor > spent then
    spent = floor
  end
  a.spent = spent
  redis.call('HSET', hash, 's' .. d, int(spent))
  if leaving then
    redis.call('HDEL', hash, 'c' .. d .. ':' .. me, 'h' .. d .. ':' .. me)
  else
    redis.call('HSET', hash, 'c' .. d .. ':' .. me, int(a.cum), 'h' .. d .. ':' .. me, int(a.hold))
  end
end
if leaving then
  redis.call('ZREM', nodes, me)
  redis.call('HDEL', hash, 'a:' .. me)
else
  redis.call('ZADD', nodes, now + ttl, me)
  if asking then
    redis.call('HSET', hash, 'a:' .. me, '1')
  else
    redis.call('HDEL', hash, 'a:' .. me)
  end
end

-- What the live nodes hold, and how many of them ask for more.
local held = {t = 0, n = 0}
local busy = 0
for _, node in ipairs(redis.call('ZRANGE', nodes, 0, -1)) do
  local v = redis.call('HMGET', hash, 'ht:' .. node, 'hn:' .. node, 'a:' .. node)
  held.t = held.t + tonumber(v[1] or '0')
  held.n = held.n + tonumber(v[2] or '0')
  if v[3] then
    busy = busy + 1
  end
end

local reply = {}
for _, d in ipairs(dims) do
  local a = args[d]
  local granted = 0
  local remaining = -1
  if a.limit >= 0 then
    remaining = a.limit - a.spent - held[d]
    if a.ask > 0 and remaining > 0 and not leaving then
      local share = math.floor(remaining / math.max(busy, 1))
      granted = math.min(a.ask, math.max(share, math.min(a.one, remaining)))
      remaining = remaining - granted
      redis.call('HSET', hash, 'h' .. d .. ':' .. me, int(a.hold + granted))
    end
  end
  reply[#reply + 1] = a.spent
  reply[#reply + 1] = remaining
  reply[#reply + 1] = granted
end
reply[#reply + 1] = busy

if expire_at > 0 then
  redis.call('PEXPIREAT', hash, expire_at)
  redis.call('PEXPIREAT', nodes, expire_at)
end
return reply
