-- credentialflow's hook for the Lua scenario: deny without x-tenant, else copy it upstream.
function on_access(ctx)
    local tenant = ctx:header("x-tenant")
    if tenant == nil then
        ctx:deny(403, "missing tenant")
        return
    end
    ctx:set_header("x-tenant-checked", tenant)
end
