-- hmac_secrets.lua: the secret each partner signs with, by client name (which is also the
-- name of the partner's virtual key). Loaded by hmac_auth.lua with require("hmac_secrets")
-- when the config is loaded; edit it and reload (SIGHUP or POST /admin/reload) to add,
-- rotate or remove a partner.
--
-- These values are examples. Generate each real secret randomly (openssl rand -hex 32),
-- keep this file readable only by the gateway's user and out of version control, and share
-- each secret with its partner only.

return {
	["partner-a"] = "example-secret-of-partner-a-change-me",
	["partner-b"] = "example-secret-of-partner-b-change-me",
}
