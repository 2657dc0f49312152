-- One node's heartbeat in the fleet's node set, answering how many nodes are alive.
-- KEYS[1]: the node set (member = node name, score = expiry in Redis milliseconds).
-- ARGV[1]: the node's name. ARGV[2]: how long the beat stays valid, in milliseconds.
-- Redis's own clock is used so the nodes' clocks need not agree.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('PEXPIRE', KEYS[1], ttl)
return redis.call('ZCARD', KEYS[1])
