-- HAProxy's twin of scripts/bench/lua/on_access.lua: deny without x-tenant, else copy it.
core.register_action("tenant_check", { "http-req" }, function(txn)
    local tenant = txn.sf:req_hdr("x-tenant")
    if tenant == nil or tenant == "" then
        txn:set_var("txn.cf_deny", 1)
        return
    end
    txn.http:req_set_header("x-tenant-checked", tenant)
end)
