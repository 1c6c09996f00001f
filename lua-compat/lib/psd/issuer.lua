-- psd.issuer: issues and revokes download links as psd_link_issue and
-- psd_link_revoke do: 22-character base62 ids, ttl bounded by max_ttl,
-- the answer {"url", "id", "expires"}, revocations in psd:{link:<id>} and
-- psd:{order:<id>} (field "revoked", Unix time), so that module nodes and
-- Lua nodes honour each other's revocations.
--
--   local issuer = require "psd.issuer"
--   local iss = issuer.new{ links = links, redis = { port = 6379 } }
--   local res, err, field = iss:issue{ path = "/downloads/a.pdf",
--                                      ttl = 86400, limit = 3,
--                                      order = "ord_42" }
--   -- res = { url = "/downloads/a.pdf?psd_v=1&...", id = "...",
--   --         expires = 1767312000 }
--   local ok, err = iss:revoke{ order = "ord_42" }
--
-- iss:serve_issue() and iss:serve_revoke() are content handlers that speak
-- the module's HTTP API (POST, Authorization: Bearer, JSON; needs
-- lua-cjson).

local link = require "psd.link"
local crypto = require "psd.crypto"

local type, tostring, floor = type, tostring, math.floor
local find, format = string.find, string.format

local _M = { _VERSION = "0.1.0" }
local mt = { __index = _M }

local BODY_MAX = 16384


--[[
opts:
  links    a psd.link object (its keys, signing key, skew and max_ttl), or
  keys, sign_kid, skew, max_ttl   to make one
  redis    psd.redis options or object (for revoke)
  api_key  the bearer key of serve_issue()/serve_revoke() (16-512 bytes)
  api_key_file  or the file that holds it (read now: init phase only)
]]
function _M.new(opts)
    opts = opts or {}

    local links = opts.links
    local err

    if not links then
        links, err = link.new{ keys = opts.keys, key_files = opts.key_files,
                               sign_kid = opts.sign_kid, skew = opts.skew,
                               max_ttl = opts.max_ttl }
        if not links then
            return nil, err
        end
    end

    local self = { links = links, api_key = opts.api_key }

    -- as psd_link_api_key: the file's bytes, trailing newlines ignored
    if opts.api_key_file then
        local f
        f, err = io.open(opts.api_key_file, "rb")
        if not f then
            return nil, err
        end
        self.api_key = (f:read("*a") or ""):gsub("[\r\n]+$", "")
        f:close()
    end

    if self.api_key and (#self.api_key < 16 or #self.api_key > 512) then
        return nil, "api_key must be 16 to 512 bytes"
    end

    local r = opts.redis or links.redis
    if r then
        self.redis, err = require("psd.redis").new(r)
        if not self.redis then
            return nil, err
        end
    end

    return setmetatable(self, mt)
end


local function is_integer(v)
    return type(v) == "number" and v == floor(v) and v > -2^53 and v < 2^53
end


--[[
Issues a link: req = { path = ... | prefix = ..., ttl = <seconds>, order,
limit, ip, now }.  Returns { url, id, expires }, or nil, an error code
("invalid_field", "ttl_too_long") and the field, as the module's
endpoint answers.
]]
function _M.issue(self, req)
    local links = self.links
    local path, prefix = req.path, req.prefix

    if path ~= nil and type(path) ~= "string" then
        return nil, "invalid_field", "path"
    end

    if (prefix ~= nil and type(prefix) ~= "string")
       or (prefix and path) or (prefix == nil and path == nil)
    then
        return nil, "invalid_field", "path|prefix"
    end

    if prefix then
        path = prefix
    end

    local order, ip = req.order, req.ip
    if order ~= nil and type(order) ~= "string" then
        return nil, "invalid_field", "order"
    end
    if ip ~= nil and type(ip) ~= "string" then
        return nil, "invalid_field", "ip"
    end

    local ttl = req.ttl
    if not is_integer(ttl) or ttl <= 0 then
        return nil, "invalid_field", "ttl"
    end

    local now = req.now or (ngx and ngx.time() or os.time())

    if (links.max_ttl > 0 and ttl > links.max_ttl)
       or ttl > link.EXP_MAX - now
    then
        return nil, "ttl_too_long", "ttl"
    end

    local limit = req.limit
    if limit ~= nil then
        if not is_integer(limit) or limit < 1 or limit > link.LIMIT_MAX then
            return nil, "invalid_field", "limit"
        end
    end

    local id, err = crypto.random_base62(22)
    if not id then
        return nil, err
    end

    local url, query, exp = links:sign_link{
        path = not prefix and path or nil, prefix = prefix and path or nil,
        exp = now + ttl, id = id, order = order, ip = ip, limit = limit,
    }

    if not url then
        -- as the module: the field is what psd_link_sign() said
        return nil, "invalid_field", query or "path"
    end

    if #path > link.SCOPE_MAX then
        return nil, "invalid_field", "path"
    end

    return { url = url, id = id, expires = exp }
end


--[[
Revokes a link or every link of an order: req = { link = <id> } or
{ order = <id> }.  Returns true, or nil and an error ("invalid_field"
and the field, or a Redis error).
]]
function _M.revoke(self, req)
    local kind, id = "link", req.link

    if id == nil then
        kind, id = "order", req.order
    end

    if type(id) ~= "string" or #id == 0 or #id > 64 then
        return nil, "invalid_field", "link|order"
    end

    local bad = kind == "link" and "[^A-Za-z0-9_%-]" or "[^A-Za-z0-9_%-%.:]"
    if find(id, bad) then
        return nil, "invalid_field", kind
    end

    if not self.redis then
        return nil, "no redis configured"
    end

    local key = "psd:{" .. kind .. ":" .. id .. "}"
    local now = ngx and ngx.time() or os.time()
    local cmds = { { "hset", key, "revoked", format("%.0f", now) } }

    -- no link outlives max_ttl, so a link's revocation need not either;
    -- an order's record is its history (webhooks write it) and stays
    local links = self.links
    if kind == "link" and links.max_ttl > 0 then
        cmds[2] = { "expire", key,
                    format("%.0f", links.max_ttl + links.skew + 86400) }
    end

    local res, err = self.redis:pipeline(cmds)
    if not res then
        return nil, err
    end

    if type(res[1]) ~= "number" then
        return nil, require("psd.redis").reply_error(res[1]) or "error"
    end

    return true
end


-- HTTP endpoints ------------------------------------------------------

local function send_json(status, body, retry_after)
    ngx.status = status
    ngx.header["Content-Type"] = "application/json"
    if retry_after then
        ngx.header["Retry-After"] = tostring(retry_after)
    end
    ngx.print(body)
    return ngx.exit(ngx.HTTP_OK)
end


local function json_string(s)
    return (s:gsub('[%c"\\]', function(c)
        if c == '"' or c == "\\" then
            return "\\" .. c
        end
        return format("\\u%04x", c:byte())
    end))
end


local function send_error(status, code, field)
    local body = '{"error":"' .. code .. '"'
    if field then
        body = body .. ',"field":"' .. json_string(field) .. '"'
    end
    return send_json(status, body .. "}\n")
end


-- POST, bearer key compared in constant time, a JSON object body
local function read_request(self)
    if ngx.req.get_method() ~= "POST" then
        return send_error(405, "method_not_allowed")
    end

    -- as ngx_http_psd_bearer_ok(): "Bearer " (any case) and the key, the
    -- key compared in constant time
    local auth = ngx.var.http_authorization or ""
    local key = self.api_key
    if not key or #auth ~= 7 + #key or auth:sub(1, 7):lower() ~= "bearer "
       or not crypto.equal(auth:sub(8), key)
    then
        return send_error(401, "unauthorized")
    end

    local length = tonumber(ngx.var.http_content_length)
    if length and length > BODY_MAX then
        return send_error(413, "body_too_large")
    end

    ngx.req.read_body()
    local body = ngx.req.get_body_data()
    if not body then
        if ngx.req.get_body_file() then
            return send_error(413, "body_too_large")
        end
        body = ""
    end

    if #body > BODY_MAX then
        return send_error(413, "body_too_large")
    end

    local cjson = require "cjson.safe"
    local v = cjson.decode(body)
    if type(v) ~= "table" or v[1] ~= nil then
        return send_error(400, "invalid_json")
    end

    for k, x in pairs(v) do
        if x == cjson.null then
            v[k] = nil
        end
    end

    return v
end


--- content_by_lua*: the module's psd_link_issue endpoint
function _M.serve_issue(self)
    local req = read_request(self)
    local res, err, field = self:issue(req)

    if not res then
        if field then
            return send_error(400, err, field)
        end
        ngx.log(ngx.ERR, "psd.issuer: ", err)
        return ngx.exit(500)
    end

    return send_json(200, format('{"url":"%s","id":"%s","expires":%.0f}\n',
                                 res.url, res.id, res.expires))
end


--- content_by_lua*: the module's psd_link_revoke endpoint
function _M.serve_revoke(self)
    local req = read_request(self)
    local ok, err, field = self:revoke(req)

    if not ok then
        if field then
            return send_error(400, err, field)
        end
        ngx.log(ngx.ERR, "psd.issuer: revoke: ", err)
        send_json(503, '{"error":"backend_unavailable"}\n', 1)
        return
    end

    return send_json(200, '{"revoked":true}\n')
end


return _M
