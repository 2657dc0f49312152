-- log_enricher.lua: add request context to the access log.
--
-- on_log adds two fields to the request's access-log JSON line:
--   tenant:     the `x-tenant` request header, else the consumer's team, else "-"
--   user_agent: the `user-agent` request header, cut to 256 bytes, else "-"
-- Fields added this way sit beside the gateway's own (ts_ms, status, route, ...).
--
-- Configure on a route (or `[ai] hooks` for the AI front doors):
--   [[route]]
--   name = "api"
--   path_prefix = "/"
--   upstream = "backend"
--   hooks = "scripts/log_enricher.lua"
--   [server]
--   access_log = "./data/access.log"

local MAX_USER_AGENT = 256

function on_log(ctx, entry)
	local tenant = ctx:header("x-tenant")
	if not tenant and ctx.consumer and ctx.consumer.team ~= "" then
		tenant = ctx.consumer.team
	end
	entry.tenant = tenant or "-"
	local user_agent = ctx:header("user-agent")
	if user_agent and #user_agent > MAX_USER_AGENT then
		user_agent = string.sub(user_agent, 1, MAX_USER_AGENT)
	end
	entry.user_agent = user_agent or "-"
end
