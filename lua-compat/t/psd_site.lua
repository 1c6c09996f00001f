-- The "site" of t/060-lua-compat.t: lua-compat objects made once in
-- init_by_lua_block and used by the test locations, as a real site would
-- keep them in a module of its own.
--
--   init_by_lua_block { require("psd_site").init{ ... } }
--   access_by_lua_block { require("psd_site").links:access() }

local _M = {}

function _M.init(o)
    local link = require "psd.link"
    local redis = { host = "127.0.0.1", port = o.redis_port, timeout = 2000 }

    _M.links = assert(link.new{
        key_files = { { kid = "k1", file = o.key_dir .. "/k1" } },
        revocation = true,
        redis = redis,
    })

    _M.issuer = assert(require("psd.issuer").new{
        links = _M.links,
        api_key_file = o.key_dir .. "/api",
    })

    _M.limit = assert(require("psd.limit").new("shared", {
        rate = "1r/m", burst = 4, redis = redis,
    }))

    _M.fraud = assert(require("psd.fraud").new{
        rules = {
            { "per_user", "count() by $arg_u over 1h > 3", "block" },
            { "failed", "count(payment_failed) by $arg_u over 1d >= 1",
              "review" },
        },
        redis = redis,
    })

    _M.stripe = assert(require("psd.webhook").new{
        kind = "stripe", secrets = o.stripe_secrets,
    })

    _M.standard = assert(require("psd.webhook").new{
        kind = "standard", secrets = o.standard_secrets,
    })
end

return _M
