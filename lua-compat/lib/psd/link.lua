-- psd.link: signed download links, format v1 (docs/link-format.md), the
-- same bytes as ngx_psd_module's psd_link (psd_link.c): parsing, the
-- canonical string, signing, verification; and, in nginx, the access and
-- log phase checks of psd_link with the module's Redis keys and scripts,
-- so that revocations, download limits and leases are shared with module
-- nodes.
--
-- Pure functions (usable outside nginx):
--   link.parse(query)                       -> fields | nil, "malformed"
--   link.canonical(fields, path)            -> string
--   link.sign(params)                       -> query | nil, err
--   link.verify(query, path, client, conf)  -> status, fields
--   link.encode_path(path), link.load_key(file), link.status_code(status)
-- Objects:
--   local links = link.new{ keys = ..., ... }
--   links:sign{ ... }, links:verify(query, path, client)
--   links:access(), links:log()             (access_by_lua, log_by_lua)

local crypto = require "psd.crypto"
local cidr = require "psd.cidr"

local byte, char, sub, find, format, gsub = string.byte, string.char,
    string.sub, string.find, string.format, string.gsub
local concat = table.concat
local type, tonumber, tostring, ipairs = type, tonumber, tostring, ipairs
local floor = math.floor

local _M = { _VERSION = "0.1.0" }
local mt = { __index = _M }

_M.KID_MAX = 32
_M.ID_MAX = 64
_M.ORDER_MAX = 64
_M.SCOPE_MAX = 1024
_M.EXP_MAX = 999999999999
_M.LIMIT_MAX = 1000000
_M.KEY_MIN = 32
_M.KEY_MAX = 1024
_M.SIG_LEN = 43

local CIDR_TEXT_MAX = 43

-- statuses, in psd_link_status_e order, then the module's own
_M.statuses = { "ok", "malformed", "unknown_key", "invalid", "expired",
                "wrong_path", "wrong_client", "revoked", "exhausted", "busy" }

-- the HTTP status and JSON error of each denial, as psd_link answers
local denials = {
    malformed = { 403, "link_malformed" },
    unknown_key = { 403, "link_unknown_key" },
    invalid = { 403, "link_invalid" },
    expired = { 410, "link_expired" },
    wrong_path = { 403, "link_wrong_path" },
    wrong_client = { 403, "link_wrong_client" },
    revoked = { 410, "link_revoked" },
    exhausted = { 410, "link_exhausted" },
    busy = { 429, "link_busy" },
}


--- the HTTP status and the "error" code psd_link answers for a status
function _M.status_code(status)
    local d = denials[status]
    if d then
        return d[1], d[2]
    end
    return 200
end


-- values ----------------------------------------------------------------

-- %XX only ('+' is a plus sign); nil on a bad escape or beyond max bytes
local function unescape(s, max)
    if find(s, "%", 1, true) then
        if find(s, "%%[^%x]") or find(s, "%%%x[^%x]") or find(s, "%%%x?$")
        then
            return nil
        end
        s = gsub(s, "%%(%x%x)", function(h)
            return char(tonumber(h, 16))
        end)
    end

    if #s > max then
        return nil
    end

    return s
end


-- every byte but A-Z a-z 0-9 - . _ ~ (and '/' if keep_slash) as %XX
local function escape(s, keep_slash)
    local pat = keep_slash and "[^A-Za-z0-9%-%._~/]" or "[^A-Za-z0-9%-%._~]"
    return (gsub(s, pat, function(c)
        return format("%%%02X", byte(c))
    end))
end

_M.escape = escape


--- percent-encodes a decoded path for a URL (psd_link_encode_path)
function _M.encode_path(path)
    return escape(path, true)
end


-- kid and id: [A-Za-z0-9_-]; an order id also allows '.' and ':'
local function token(s, max, order)
    if type(s) ~= "string" or #s == 0 or #s > max then
        return false
    end
    if order then
        return not find(s, "[^A-Za-z0-9_%-%.:]")
    end
    return not find(s, "[^A-Za-z0-9_%-]")
end


-- decimal, no sign, no leading zero
local function number(s, digits)
    local n = #s
    if n == 0 or n > digits or (n > 1 and byte(s, 1) == 48)
       or find(s, "[^0-9]")
    then
        return nil
    end
    return tonumber(s)
end


--[[
A path starts with '/', holds no control byte and no "." or ".." segment;
strict (what a signer accepts, and psd_scope) also refuses empty segments
("//"), but not the last one (a trailing '/').
]]
local function path_valid(p, strict)
    local len = #p
    if len == 0 or byte(p, 1) ~= 47 then
        return false
    end

    local seg = 2
    for i = 2, len + 1 do
        local c = byte(p, i)
        local boundary = true

        if i <= len then
            if c < 0x20 or c == 0x7f then
                return false
            end
            boundary = c == 47
        end

        if boundary then
            local n = i - seg
            if n == 0 and i <= len and strict then
                return false
            end
            if n > 0 and n <= 2 and byte(p, seg) == 46
               and (n == 1 or byte(p, seg + 1) == 46)
            then
                return false
            end
            seg = i + 1
        end
    end

    return true
end

_M.path_valid = path_valid


local function scope_valid(p)
    local len = #p
    return len > 0 and len <= _M.SCOPE_MAX and byte(p, len) == 47
           and path_valid(p, true)
end


-- parsing ---------------------------------------------------------------

local parsers = {
    v = function(_, v)
        v = unescape(v, 1)
        return v == "1"
    end,

    kid = function(link, v)
        v = unescape(v, _M.KID_MAX)
        if not v or not token(v, _M.KID_MAX) then
            return false
        end
        link.kid = v
        return true
    end,

    exp = function(link, v)
        v = unescape(v, 12)
        local n = v and number(v, 12)
        if not n then
            return false
        end
        link.exp = n
        return true
    end,

    id = function(link, v)
        v = unescape(v, _M.ID_MAX)
        if not v or not token(v, _M.ID_MAX) then
            return false
        end
        link.id = v
        return true
    end,

    order = function(link, v)
        v = unescape(v, _M.ORDER_MAX)
        if not v or not token(v, _M.ORDER_MAX, true) then
            return false
        end
        link.order = v
        return true
    end,

    scope = function(link, v)
        v = unescape(v, _M.SCOPE_MAX)
        if not v or not scope_valid(v) then
            return false
        end
        link.scope = v
        return true
    end,

    ip = function(link, v)
        v = unescape(v, CIDR_TEXT_MAX)
        local block = v and #v > 0 and cidr.parse_cidr(v)
        if not block then
            return false
        end
        link.ip = v
        link.cidr = block
        return true
    end,

    limit = function(link, v)
        v = unescape(v, 7)
        local n = v and number(v, 7)
        if not n or n < 1 or n > _M.LIMIT_MAX then
            return false
        end
        link.limit = n
        return true
    end,

    sig = function(link, v)
        -- the one spelling: 43 characters, no escapes, no padding
        if #v ~= _M.SIG_LEN then
            return false
        end
        local mac = crypto.b64url_decode(v)
        if not mac or #mac ~= 32 then
            return false
        end
        link.mac = mac
        return true
    end,
}

local required = { "v", "kid", "exp", "id", "sig" }


--[[
Parses the raw query string ($args, without '?').  Returns the link's
fields { kid, exp, id, order, scope, ip, cidr, limit, mac } (absent
optional fields: "" or 0), or nil, "malformed", and the fields read so far
(safe to log: only validated values).
]]
function _M.parse(query)
    local link = { kid = "", id = "", order = "", scope = "", ip = "",
                   exp = 0, limit = 0 }
    local seen = {}
    local p, len = 1, #query

    while p <= len do
        local amp = find(query, "&", p, true) or len + 1

        -- other arguments belong to the application, unsigned
        if amp - p >= 4 and sub(query, p, p + 3) == "psd_" then
            local eq = find(query, "=", p, true)
            if not eq or eq > amp then
                return nil, "malformed", link
            end

            local name = sub(query, p + 4, eq - 1)
            local parse = parsers[name]

            if not parse or seen[name] then
                return nil, "malformed", link
            end

            seen[name] = true

            if not parse(link, sub(query, eq + 1, amp - 1)) then
                return nil, "malformed", link
            end
        end

        p = amp + 1
    end

    for _, name in ipairs(required) do
        if not seen[name] then
            return nil, "malformed", link
        end
    end

    return link
end


-- the canonical string --------------------------------------------------

local function field(name, value)
    return "\n" .. name .. "=" .. #value .. ":" .. value
end


--[[
The string a link signs (fields as parse() returns them: kid, exp, id,
order, scope, ip, limit); path is the request path of an exact link and
is ignored for a prefix link.
]]
function _M.canonical(link, path)
    local scope = link.scope or ""
    local prefix = #scope > 0

    if prefix then
        path = scope
    end

    path = path or ""

    local limit = link.limit or 0

    return "psd-link-v1"
        .. field("kid", link.kid)
        .. field("exp", format("%.0f", link.exp))
        .. field("id", link.id)
        .. field("order", link.order or "")
        .. field("scope", prefix and "prefix" or "exact")
        .. field("path", path)
        .. field("ip", link.ip or "")
        .. field("limit", limit > 0 and format("%.0f", limit) or "")
end


-- keys ------------------------------------------------------------------

--[[
A key set from { { kid = "2026a", key = <bytes> }, ... } (in order: the
last one signs by default) or { ["2026a"] = <bytes>, ... }.  Returns
{ list = {...}, by_kid = {...} }, or nil and an error.
]]
local function key_set(keys)
    if type(keys) ~= "table" then
        return nil, "keys must be a table"
    end

    local list, by_kid = {}, {}

    local function add(kid, key)
        if not token(kid, _M.KID_MAX) then
            return nil, "invalid key id \"" .. tostring(kid)
                        .. "\": 1 to 32 of [A-Za-z0-9_-]"
        end
        if type(key) ~= "string" or #key < _M.KEY_MIN then
            return nil, "key \"" .. kid .. "\" is shorter than 32 bytes"
        end
        if by_kid[kid] then
            return nil, "duplicate key id \"" .. kid .. "\""
        end
        by_kid[kid] = key
        list[#list + 1] = { kid = kid, key = key }
        return true
    end

    if #keys > 0 then
        for _, k in ipairs(keys) do
            local ok, err = add(k.kid, k.key)
            if not ok then
                return nil, err
            end
        end
    else
        local kids = {}
        for kid in pairs(keys) do
            kids[#kids + 1] = kid
        end
        table.sort(kids)
        for _, kid in ipairs(kids) do
            local ok, err = add(kid, keys[kid])
            if not ok then
                return nil, err
            end
        end
    end

    if #list == 0 then
        return nil, "no keys"
    end

    return { list = list, by_kid = by_kid }
end

_M.key_set = key_set


--[[
Reads a key file as psd_link_key does: raw bytes, trailing CR and LF
removed, 32 to 1024 bytes.  Blocking file I/O: call it in init_by_lua*
(or init_worker_by_lua*), never while serving requests.
]]
function _M.load_key(file)
    local f, err = io.open(file, "rb")
    if not f then
        return nil, err
    end

    local data = f:read("*a")
    f:close()

    if not data then
        return nil, file .. ": cannot read"
    end

    data = gsub(data, "[\r\n]+$", "")

    if #data < _M.KEY_MIN then
        return nil, file .. ": key shorter than 32 bytes"
    end

    if #data > _M.KEY_MAX then
        return nil, file .. ": key longer than 1024 bytes"
    end

    return data
end


-- signing ---------------------------------------------------------------

--[[
params: kid, key (raw bytes), path (decoded; the prefix itself if
prefix), prefix (boolean), exp (Unix time), id, and optional order, ip
(canonical address or CIDR), limit.  Returns the query string (no '?') in
the order of docs/link-format.md, or nil and what is wrong (the messages
of psd_link_sign()).
]]
function _M.sign(params)
    local kid, key, path = params.kid, params.key, params.path
    local exp, id = params.exp, params.id
    local order, ip = params.order or "", params.ip or ""
    local limit = params.limit or 0
    local prefix = params.prefix and true or false

    if not token(kid, _M.KID_MAX) then
        return nil, "invalid kid: 1 to 32 of [A-Za-z0-9_-]"
    end

    if type(key) ~= "string" or #key < _M.KEY_MIN then
        return nil, "key shorter than 32 bytes"
    end

    if type(exp) ~= "number" or exp < 0 or exp > _M.EXP_MAX
       or exp ~= floor(exp)
    then
        return nil, "invalid expiry time"
    end

    if not token(id, _M.ID_MAX) then
        return nil, "invalid link id: 1 to 64 of [A-Za-z0-9_-]"
    end

    if type(order) ~= "string"
       or (#order > 0 and not token(order, _M.ORDER_MAX, true))
    then
        return nil, "invalid order id: 1 to 64 of [A-Za-z0-9_.:-]"
    end

    if type(path) ~= "string"
       or (prefix and not scope_valid(path))
       or (not prefix and not path_valid(path, true))
    then
        if prefix then
            return nil, "invalid prefix: must start and end with '/', at"
                .. " most 1024 bytes, no \"//\", \".\" or \"..\" segment,"
                .. " no control byte"
        end
        return nil, "invalid path: must start with '/', no \"//\", \".\" or"
            .. " \"..\" segment, no control byte"
    end

    if type(ip) ~= "string"
       or (#ip > 0 and (#ip > CIDR_TEXT_MAX or not cidr.parse_cidr(ip)))
    then
        return nil, "invalid ip: not a canonical IPv4/IPv6 address or CIDR"
    end

    if type(limit) ~= "number" or limit < 0 or limit > _M.LIMIT_MAX
       or limit ~= floor(limit)
    then
        return nil, "invalid limit: 1 to 1000000"
    end

    local link = { kid = kid, exp = exp, id = id, order = order,
                   scope = prefix and path or "", ip = ip, limit = limit }

    local mac, err = crypto.hmac_sha256(key, _M.canonical(link, path))
    if not mac then
        return nil, err
    end

    local q = { "psd_v=1", "psd_kid=" .. escape(kid),
                "psd_exp=" .. format("%.0f", exp), "psd_id=" .. escape(id) }

    if #order > 0 then
        q[#q + 1] = "psd_order=" .. escape(order)
    end
    if prefix then
        q[#q + 1] = "psd_scope=" .. escape(path)
    end
    if #ip > 0 then
        q[#q + 1] = "psd_ip=" .. escape(ip)
    end
    if limit > 0 then
        q[#q + 1] = "psd_limit=" .. format("%.0f", limit)
    end
    q[#q + 1] = "psd_sig=" .. crypto.b64url_encode(mac)

    return concat(q, "&")
end


-- verification ----------------------------------------------------------

local function client_address(client)
    if client == nil then
        return nil
    end
    if type(client) == "table" then
        return client
    end
    -- text first: a 4 or 16 byte string could be either
    return cidr.from_text(client) or cidr.from_binary(client)
end


--[[
The checks of psd_link_check(), in their order, on parsed fields:
conf = { keys = <key set or key table>, now, skew, max_ttl }; path is the
normalized, decoded request path (ngx.var.uri); client an address table,
text ("192.0.2.7") or nil.
]]
function _M.check(link, conf, path, client)
    local keys = conf.keys
    if keys and not keys.by_kid then
        keys = key_set(keys)
    end

    local key = keys and keys.by_kid[link.kid]
    if not key then
        return "unknown_key"
    end

    path = path or ""

    -- a failing HMAC fails closed, like a forged link
    local mac = crypto.hmac_sha256(key, _M.canonical(link, path))
    if not mac or not crypto.equal(mac, link.mac) then
        return "invalid"
    end

    local now = conf.now or (ngx and ngx.time() or os.time())
    local skew = conf.skew or 0
    if now < 0 then
        now = 0
    end
    if skew < 0 then
        skew = 0
    end

    if now > link.exp and now - link.exp > skew then
        return "expired"
    end

    -- a leaked key must not mint links that outlive its rotation
    local max_ttl = conf.max_ttl or 0
    if max_ttl > 0 and link.exp > now and link.exp - now > max_ttl then
        return "invalid"
    end

    if not path_valid(path, false) then
        return "wrong_path"
    end

    -- an exact link's path is in the MAC: it matched already
    local scope = link.scope
    if #scope > 0 and sub(path, 1, #scope) ~= scope then
        return "wrong_path"
    end

    if #link.ip > 0 then
        local ip = client_address(client)
        if not ip or not cidr.match(link.cidr, ip) then
            return "wrong_client"
        end
    end

    return "ok"
end


--[[
Parses and checks a link (psd_link_verify): returns the status ("ok",
"malformed", "unknown_key", "invalid", "expired", "wrong_path",
"wrong_client") and the fields.  Only "ok" vouches for the fields.
]]
function _M.verify(query, path, client, conf)
    local link, status, partial = _M.parse(query or "")
    if not link then
        return status, partial
    end
    return _M.check(link, conf, path, client), link
end


-- objects ---------------------------------------------------------------

local redis_mod

--[[
opts:
  keys         { { kid =, key = }, ... } or { kid = key, ... }
  key_files    { { kid =, file = }, ... } (read now: init phase only)
  sign_kid     the key that signs (default: the last key)
  skew         seconds past exp a link is still good (default 0)
  max_ttl      seconds; links expiring further ahead are invalid, and
               issued ttls are bounded by it (default 30 days; 0: none)
  revocation   check psd:{link:<id>} and psd:{order:<id>} (default false)
  concurrency  simultaneous downloads per link (default 0: no cap)
  lease_ttl    seconds a download in progress holds its place (3600)
  failure_mode "open" (default) or "closed" when Redis cannot answer
  redis        psd.redis options or object (needed for revocation,
               concurrency and links with psd_limit)
]]
function _M.new(opts)
    opts = opts or {}

    local keys = opts.keys
    if opts.key_files then
        keys = {}
        for _, kf in ipairs(opts.key_files) do
            local key, err = _M.load_key(kf.file)
            if not key then
                return nil, err
            end
            keys[#keys + 1] = { kid = kf.kid, key = key }
        end
    end

    local set, err = key_set(keys)
    if not set then
        return nil, err
    end

    local sign_kid = opts.sign_kid or set.list[#set.list].kid
    if not set.by_kid[sign_kid] then
        return nil, "sign_kid names unknown key \"" .. tostring(sign_kid)
                    .. "\""
    end

    local self = {
        keys = set,
        sign_kid = sign_kid,
        skew = opts.skew or 0,
        max_ttl = opts.max_ttl or 30 * 86400,
        revocation = opts.revocation and true or false,
        concurrency = opts.concurrency or 0,
        lease_ttl_ms = floor((opts.lease_ttl or 3600) * 1000),
        failure_mode = opts.failure_mode or "open",
    }

    if self.failure_mode ~= "open" and self.failure_mode ~= "closed" then
        return nil, "failure_mode must be \"open\" or \"closed\""
    end

    if type(self.concurrency) ~= "number" or self.concurrency < 0
       or self.concurrency > 1000
    then
        return nil, "concurrency must be 0 to 1000"
    end

    if opts.redis then
        redis_mod = redis_mod or require "psd.redis"
        self.redis, err = redis_mod.new(opts.redis)
        if not self.redis then
            return nil, err
        end
    end

    return setmetatable(self, mt)
end


--[[
Signs a link with the signing key: p = { path | prefix, exp | ttl, id,
order, ip, limit }.  Returns the URL ("<encoded path>?<query>"), the
query, and the expiry; or nil and an error.
]]
function _M.sign_link(self, p)
    local path, prefix = p.path, false
    if p.prefix then
        path, prefix = p.prefix, true
    end

    local exp = p.exp
    if not exp and p.ttl then
        exp = (ngx and ngx.time() or os.time()) + p.ttl
    end

    local query, err = _M.sign{
        kid = self.sign_kid, key = self.keys.by_kid[self.sign_kid],
        path = path, prefix = prefix, exp = exp, id = p.id,
        order = p.order, ip = p.ip, limit = p.limit,
    }
    if not query then
        return nil, err
    end

    return _M.encode_path(path) .. "?" .. query, query, exp
end


--- checks a link against this object's keys and time limits
function _M.verify_link(self, query, path, client, now)
    return _M.verify(query, path, client, {
        keys = self.keys, now = now, skew = self.skew,
        max_ttl = self.max_ttl,
    })
end


-- in nginx: psd_link ----------------------------------------------------

local scripts

--[[
Ends the request as the module's JSON errors do: status, Content-Type
application/json, {"error":"<code>"} (no body for HEAD), and Retry-After
when given.  With json == false the status alone goes to nginx, so that the
location's error_page (or nginx's own page) answers.
]]
local function json_error(status, code, retry_after, json)
    if retry_after then
        ngx.header["Retry-After"] = tostring(retry_after)
    end

    if json == false then
        return ngx.exit(status)
    end

    ngx.status = status
    ngx.header["Content-Type"] = "application/json"

    if ngx.req.get_method() == "HEAD" then
        ngx.send_headers()
    else
        ngx.print('{"error":"', code, '"}\n')
    end

    return ngx.exit(ngx.HTTP_OK)
end

_M.json_error = json_error


-- a request that could deliver the file's last byte, and so finish one
local function may_complete()
    if ngx.req.get_method() ~= "GET" then
        return false
    end
    local range = ngx.var.http_range
    return range == nil or not find(range, ",", 1, true)
end


local function lease_id()
    return format("%d:%s:%s", ngx.worker.pid(), ngx.var.connection,
                  ngx.var.connection_requests)
end


--[[
What psd_link does in the access phase, for access_by_lua*:

  local res = links:access()      -- denies with psd_link's status and
                                  -- JSON body, or returns
  -- res = { status = "ok", link = <fields>, downloads_left = n | nil }

opts (all optional): query (default ngx.var.args), path (ngx.var.uri),
client (ngx.var.binary_remote_addr), exit (default true: deny with
ngx.exit; false: return the result and let the caller answer), json
(default true: psd_link's JSON bodies; false: the bare status, for the
location's error_page).  Call links:log() in
log_by_lua* of the same location to settle leases and count completed
downloads.
]]
function _M.access(self, opts)
    opts = opts or {}

    local ctx = ngx.ctx
    local query = opts.query or ngx.var.args or ""
    local path = opts.path or ngx.var.uri
    local client = opts.client
    if client == nil then
        client = cidr.from_binary(ngx.var.binary_remote_addr)
    end

    local status, link = self:verify_link(query, path, client)
    local res = { status = status, link = link }

    local function finish()
        ctx.psd_link = res
        if opts.exit == false or res.status == "ok" then
            return res
        end
        if res.unavailable then
            return json_error(503, "backend_unavailable", 1, opts.json)
        end
        local code, err = _M.status_code(res.status)
        ngx.log(ngx.INFO, "psd_link: denied, ", res.status, ", link \"",
                link and #link.id > 0 and link.id or "-", "\"")
        return json_error(code, err, code == 429 and 30 or nil, opts.json)
    end

    if status ~= "ok" then
        return finish()
    end

    local limit = link.limit
    if limit > 0 then
        res.downloads_left = limit
    end

    if limit == 0 and self.concurrency == 0 and not self.revocation then
        return finish()
    end

    if not self.redis then
        ngx.log(ngx.ERR, "psd_link: link \"", link.id, "\" has a download",
                " limit and no redis is configured")
        return ngx.exit(500)
    end

    scripts = scripts or require "psd.scripts"

    local key1 = "psd:{link:" .. link.id .. "}"
    local key2 = key1 .. ":leases"
    local lease = ""

    if (limit > 0 or self.concurrency > 0) and may_complete() then
        lease = lease_id()
    end

    local expire_at = link.exp + self.skew + 86400
    local cmds = {}

    -- revoking an order revokes every link that names it
    local order_cmd = self.revocation and #link.order > 0
    if order_cmd then
        cmds[1] = { "hget", "psd:{order:" .. link.order .. "}", "revoked" }
    end

    cmds[#cmds + 1] = { "script", scripts.link_check, 2, key1, key2,
                        tostring(limit), tostring(self.concurrency), lease,
                        tostring(self.lease_ttl_ms), format("%.0f", expire_at) }

    local replies, err = self.redis:pipeline(cmds)
    local check = replies and replies[#cmds]

    if type(check) ~= "table" or type(check[1]) ~= "number"
       or type(check[2]) ~= "number"
    then
        local rerr = replies and require("psd.redis").reply_error(check)
        if self.failure_mode == "open" then
            ngx.log(ngx.WARN, "psd_link: redis ", rerr or err or "error",
                    ", link \"", link.id, "\" let through without its",
                    " revocation and limit checks")
            res.fail_open = true
            return finish()
        end
        ngx.log(ngx.ERR, "psd_link: redis ", rerr or err or "error")
        res.status = "error"
        res.unavailable = true
        return finish()
    end

    local code = check[1]

    if order_cmd and type(replies[1]) == "string" then
        -- the script may have taken a lease for a revoked order's link
        if code == 0 and lease ~= "" then
            self.redis:pipeline({ { "script", scripts.link_done, 2, key1,
                                    key2, lease, "0",
                                    format("%.0f", expire_at) } })
        end
        res.status = "revoked"
        return finish()
    end

    if code == 0 then
        if limit > 0 then
            res.downloads_left = limit - check[2]
        end
        res.lease = lease
        res.key1, res.key2, res.expire_at = key1, key2, expire_at
        res.stateful = true
    elseif code == 1 then
        res.status = "revoked"
    elseif code == 2 then
        res.status = "exhausted"
        res.downloads_left = 0
    else
        res.status = "busy"
    end

    return finish()
end


-- "bytes START-END/TOTAL" with END + 1 == TOTAL
local function range_ends_file(v)
    if type(v) ~= "string" then
        return false
    end
    local e, total = v:match("^bytes [^-]*%-(%d+)/(%d+)$")
    return e ~= nil and tonumber(e) + 1 == tonumber(total)
end


local function settle(_, self, key1, key2, lease, completed,
                      expire_at)
    local ok, err = self.redis:pipeline({ { "script", scripts.link_done, 2,
        key1, key2, lease, completed and "1" or "0",
        format("%.0f", expire_at) } })
    if not ok then
        ngx.log(ngx.WARN, "psd_link: redis unavailable, download of link ",
                key1, " not recorded: ", err)
    end
end


--[[
For log_by_lua* of a location that calls links:access(): a response that
delivered the file's last byte and its whole body (a 200, or a 206 whose
range ends the file) spends one use; a lease is given back either way.
Cosockets are not allowed in the log phase: the Redis call runs in a
zero-delay timer.
]]
function _M.log(self)
    local res = ngx.ctx.psd_link
    if not res or res.status ~= "ok" or not res.stateful then
        return
    end

    res.stateful = false

    local completed = false
    local length = tonumber(ngx.var.sent_http_content_length)
    local sent = tonumber(ngx.var.body_bytes_sent) or 0
    local status = ngx.status

    if ngx.req.get_method() == "GET" and length and sent >= length then
        if status == 200 then
            completed = true
        elseif status == 206 then
            completed = range_ends_file(ngx.var.sent_http_content_range)
        end
    end

    if not completed and res.lease == "" then
        return
    end

    local ok, err = ngx.timer.at(0, settle, self, res.key1, res.key2,
                                 res.lease, completed, res.expire_at)
    if not ok then
        ngx.log(ngx.WARN, "psd_link: cannot settle link ", res.key1, ": ",
                err)
    end
end


return _M
