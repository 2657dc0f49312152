-- log_enricher.lua: add request context to the access log.
--
-- on_log adds two fields to the request's access-log JSON line:
--   tenant:     the `x-tenant` request header, else the consumer's team, else "-"
--   referer:    the `referer` request header, cut to 256 bytes, else "-"
-- Fields added this way sit beside the gateway's own (ts_ms, status, route, user_agent,
-- ...); a field named like one of those is dropped.
--
-- Configure on a route (or `[ai] hooks` for the AI front doors):
--   [[route]]
--   name = "api"
--   path_prefix = "/"
--   upstream = "backend"
--   hooks = "scripts/log_enricher.lua"
--   [server]
--   access_log = "./data/access.log"

local MAX_REFERER = 256

function on_log(ctx, entry)
	local tenant = ctx:header("x-tenant")
	if not tenant and ctx.consumer and ctx.consumer.team ~= "" then
		tenant = ctx.consumer.team
	end
	entry.tenant = tenant or "-"
	local referer = ctx:header("referer")
	if referer and #referer > MAX_REFERER then
		referer = string.sub(referer, 1, MAX_REFERER)
	end
	entry.referer = referer or "-"
end
