-- hmac_auth.lua: HMAC request-signature authentication for a route.
--
-- A client signs every request with a secret it shares with the gateway and sends:
--   x-client:    its name, which is also the name (or id) of its virtual key
--   x-timestamp: the Unix time in seconds when it signed
--   x-signature: hex(hmac_sha256(secret, METHOD .. "\n" .. PATH .. "\n" .. x-timestamp))
-- PATH is the request path without the query string, exactly as sent.
-- A good signature makes the request that key's (ctx:set_consumer), so the key's limits,
-- routes and budgets apply; anything else is a 401. A timestamp more than 300 s away from
-- the gateway's clock is refused, so a captured request cannot be replayed later.
--
-- Configure:
--   [[route]]
--   name = "partners"
--   path_prefix = "/partners/"
--   upstream = "backend"
--   auth = "lua"                    # the route trusts only what this script decides
--   hooks = "scripts/hmac_auth.lua" # relative to the config file's folder
-- and create a key per client whose name matches the table below:
--   credentialflow keys create --config credentialflow.toml --name partner-a
--
-- The secrets below are examples. In real use, do not keep them in a script that is
-- committed or shared: put the table in a module beside this script (for example
-- `return { ["partner-a"] = "..." }` in scripts/hmac_secrets.lua, readable only by the
-- gateway's user and kept out of version control), load it with
-- `local CLIENT_SECRETS = require("hmac_secrets")`, generate each secret randomly
-- (32 bytes or more) and rotate it by editing that file and reloading the gateway.

local CLIENT_SECRETS = {
	["partner-a"] = "example-secret-of-partner-a-change-me",
	["partner-b"] = "example-secret-of-partner-b-change-me",
}

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
