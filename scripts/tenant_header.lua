-- tenant_header.lua: authenticate by a tenant header set by a trusted front proxy.
--
-- A request carrying `x-tenant: acme` is made the request of the virtual key named
-- `tenant-acme` (ctx:set_consumer), so that key's limits, routes and budget apply. A request
-- without the header, or naming a tenant without a live key, is refused with 401.
--
-- Use this only behind a proxy that sets (and overwrites) x-tenant itself: the header alone
-- proves nothing when clients can reach the gateway directly. Restrict the route to the
-- proxy's addresses with `allow_ips`.
--
-- Configure:
--   [[route]]
--   name = "tenants"
--   path_prefix = "/"
--   upstream = "backend"
--   auth = "lua"
--   allow_ips = ["10.0.0.0/8"]          # the front proxy
--   hooks = "scripts/tenant_header.lua"
-- and one key per tenant:
--   credentialflow keys create --config credentialflow.toml --name tenant-acme --rpm 600

function on_access(ctx)
	local tenant = ctx:header("x-tenant")
	-- A tenant name is a short slug; anything else cannot name a key of ours.
	if not tenant or not string.match(tenant, "^[%w_%-]+$") or #tenant > 64 then
		return ctx:deny(401, "missing or invalid x-tenant")
	end
	-- A name without a live key fails closed: the gateway answers 401.
	ctx:set_consumer("tenant-" .. string.lower(tenant))
end
