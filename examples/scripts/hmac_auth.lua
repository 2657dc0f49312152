-- hmac_auth.lua: HMAC request-signature authentication for a route (examples/lua-auth.toml).
--
-- A client signs every request with a secret it shares with the gateway and sends:
--   x-client:    its name, which is also the name (or id) of its virtual key
--   x-timestamp: the Unix time in seconds when it signed
--   x-signature: hex(hmac_sha256(secret, METHOD .. "\n" .. PATH .. "\n" .. x-timestamp))
-- PATH is the request path without the query string, as the gateway received it (after
-- normalization, before strip_prefix). A good signature makes the request that key's
-- (ctx:set_consumer), so the key's limits, routes and budgets apply; anything else is a 401.
-- A timestamp more than 300 s away from the gateway's clock is refused, so a captured request
-- cannot be replayed later.
--
-- The secrets live in hmac_secrets.lua beside this script, loaded with the config.

local CLIENT_SECRETS = require("hmac_secrets")

-- How far (seconds) a request's timestamp may be from the gateway's clock.
local MAX_SKEW_S = 300

-- Compares two strings without stopping at the first difference, so the time taken does
-- not tell an attacker how much of a forged signature was right.
local function same_secret_string(a, b)
	if #a ~= #b then
		return false
	end
	local diff = 0
	for i = 1, #a do
		diff = bit32.bor(diff, bit32.bxor(string.byte(a, i), string.byte(b, i)))
	end
	return diff == 0
end

function on_access(ctx)
	local client = ctx:header("x-client")
	local timestamp = ctx:header("x-timestamp")
	local signature = ctx:header("x-signature")
	if not client or not timestamp or not signature then
		return ctx:deny(401, "missing x-client, x-timestamp or x-signature")
	end
	local secret = CLIENT_SECRETS[client]
	if not secret then
		-- Same message as a bad signature: do not tell which client names exist.
		return ctx:deny(401, "bad request signature")
	end
	local signed_at = tonumber(timestamp)
	if not signed_at or not string.match(timestamp, "^%d+$") then
		return ctx:deny(401, "x-timestamp must be Unix seconds")
	end
	if math.abs(cf.now_ms() / 1000 - signed_at) > MAX_SKEW_S then
		return ctx:deny(401, "stale request signature")
	end
	local expected = cf.hmac_sha256_hex(secret, ctx.method .. "\n" .. ctx.path .. "\n" .. timestamp)
	if not same_secret_string(expected, string.lower(signature)) then
		return ctx:deny(401, "bad request signature")
	end
	ctx:set_consumer(client)
end
