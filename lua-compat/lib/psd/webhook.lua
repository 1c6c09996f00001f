-- psd.webhook: payment gateway webhook signatures as psd_webhook checks
-- them (psd_webhook.c): Stripe ("Stripe-Signature: t=...,v1=<hex>", HMAC-
-- SHA256 of "t.body" under the whole "whsec_..." secret) and Standard
-- Webhooks ("webhook-id", "webhook-timestamp", "webhook-signature: v1,<b64>
-- ...", HMAC-SHA256 of "id.timestamp.body" under the base64 key of a
-- "whsec_<base64>" secret).  Syntax first, then the timestamp (at most
-- tolerance seconds either way), then every v1 against every secret,
-- compared in constant time.
--
-- Statuses: "ok", "missing_header", "malformed_header", "stale_timestamp",
-- "bad_signature", "error" (bad arguments).
--
--   local webhook = require "psd.webhook"
--   local ok, status = webhook.stripe_verify(header, body, { secret })
--   local v = webhook.new{ kind = "stripe", secrets = { secret } }
--   local ok, status = v:verify_request()     -- in nginx: headers + body

local crypto = require "psd.crypto"

local type, ipairs = type, ipairs
local sub, find, format = string.sub, string.find, string.format
local concat = table.concat

local _M = { _VERSION = "0.1.0" }
local mt = { __index = _M }

_M.TOLERANCE = 300
_M.KEY_MIN = 24
_M.KEY_MAX = 64

local TIMESTAMP_DIGITS = 18


local function parse_timestamp(s)
    if #s == 0 or #s > TIMESTAMP_DIGITS or find(s, "[^0-9]") then
        return nil
    end
    return tonumber(s)
end


local function stale(t, now, tolerance)
    local d = t > now and t - now or now - t
    return d > tolerance
end


--[[
The items of a list "<key><sep><value><delim>...": keys [a-z0-9]+, values
of visible ASCII, no empty item, no trailing delimiter.  Returns the list
of { key, value }, or nil when the list is malformed.
]]
local function items(s, delim, sep)
    local out = {}
    local p, len = 1, #s

    while p <= len do
        local e = find(s, delim, p, true)
        local stop = e or len + 1

        -- a delimiter must be followed by another item
        if e and e == len then
            return nil
        end

        local item = sub(s, p, stop - 1)
        local key, value = item:match("^([a-z0-9]+)" .. sep .. "(.+)$")
        if not key or find(value, "[^\33-\126]") then
            return nil
        end

        out[#out + 1] = { key, value }
        p = stop + 1
    end

    return out
end


local function check_args(secrets, now, tolerance)
    if type(secrets) ~= "table" or #secrets == 0 or now < 0
       or tolerance < 0
    then
        return false
    end
    for _, s in ipairs(secrets) do
        if type(s) ~= "string" or #s == 0 then
            return false
        end
    end
    return true
end


local function now_of(opts)
    return opts and opts.now or (ngx and ngx.time() or os.time())
end


--- one Stripe v1 signature: 64 lower-case hex digits
function _M.stripe_sign(secret, t, body)
    local mac = crypto.hmac_sha256(secret, format("%.0f", t) .. "." .. body)
    return mac and crypto.hex(mac)
end


--- a whole Stripe-Signature header: "t=<t>,v1=<sig>,v1=..." (one per
--- secret)
function _M.stripe_header(secrets, t, body)
    local out = { "t=" .. format("%.0f", t) }
    for _, s in ipairs(secrets) do
        out[#out + 1] = "v1=" .. _M.stripe_sign(s, t, body)
    end
    return concat(out, ",")
end


--[[
Verifies a Stripe-Signature header (nil: absent) over the raw body with
any of the secrets ("whsec_..." strings, as the dashboard shows them).
opts: now, tolerance (default 300).  Returns true, "ok" or false and the
status.
]]
function _M.stripe_verify(header, body, secrets, opts)
    local now = now_of(opts)
    local tolerance = opts and opts.tolerance or _M.TOLERANCE

    if not check_args(secrets, now, tolerance) then
        return false, "error"
    end

    if header == nil then
        return false, "missing_header"
    end

    if #header == 0 then
        return false, "malformed_header"
    end

    local list = items(header, ",", "=")
    if not list then
        return false, "malformed_header"
    end

    local t, ts
    local sigs = {}

    for _, it in ipairs(list) do
        if it[1] == "t" then
            if t then
                return false, "malformed_header"
            end
            t = parse_timestamp(it[2])
            if not t then
                return false, "malformed_header"
            end
            ts = it[2]

        elseif it[1] == "v1" then
            if #it[2] ~= 64 or find(it[2], "[^0-9a-f]") then
                return false, "malformed_header"
            end
            sigs[#sigs + 1] = it[2]
        end
    end

    if not t then
        return false, "malformed_header"
    end

    -- cheap first: a replayed request costs no HMAC
    if stale(t, now, tolerance) then
        return false, "stale_timestamp"
    end

    if #sigs == 0 then
        return false, "bad_signature"
    end

    body = body or ""

    for _, secret in ipairs(secrets) do
        local mac = crypto.hmac_sha256(secret, ts .. "." .. body)
        if not mac then
            return false, "error"
        end
        local expected = crypto.hex(mac)
        for _, sig in ipairs(sigs) do
            if crypto.equal(sig, expected) then
                return true, "ok"
            end
        end
    end

    return false, "bad_signature"
end


--- a Standard Webhooks secret ("whsec_<base64>" or the bare base64) into
--- its key: strict padded base64 of 24 to 64 bytes, or nil
function _M.standard_key(secret)
    if type(secret) ~= "string" then
        return nil
    end

    if sub(secret, 1, 6) == "whsec_" then
        secret = sub(secret, 7)
    end

    if #secret == 0 or #secret > 4 * math.floor((_M.KEY_MAX + 2) / 3) then
        return nil
    end

    local key = crypto.b64_decode(secret)
    if not key or #key < _M.KEY_MIN or #key > _M.KEY_MAX then
        return nil
    end

    return key
end


-- visible ASCII without '.': a '.' would let two (id, timestamp) pairs
-- sign the same content
local function valid_id(id)
    return #id > 0 and not find(id, "[^\33-\126]") and not find(id, ".", 1,
                                                                  true)
end


--- one Standard Webhooks signature (44 characters of base64) under a key
--- (raw bytes, see standard_key())
function _M.standard_sign(key, id, t, body)
    if not valid_id(id) then
        return nil
    end
    local mac = crypto.hmac_sha256(key, id .. "." .. format("%.0f", t) .. "."
                                        .. body)
    return mac and crypto.b64_encode(mac)
end


--- a whole webhook-signature header: "v1,<sig> v1,<sig>" (one per key)
function _M.standard_header(keys, id, t, body)
    local out = {}
    for _, k in ipairs(keys) do
        local sig = _M.standard_sign(k, id, t, body)
        if not sig then
            return nil
        end
        out[#out + 1] = "v1," .. sig
    end
    return concat(out, " ")
end


--[[
Verifies Standard Webhooks headers (nil: absent) over the raw body with
any of the keys.  keys: raw keys, or secrets when opts.secrets is true
(then decoded with standard_key(); an undecodable one is "error").
Returns true, "ok" or false and the status.
]]
function _M.standard_verify(id, timestamp, signature, body, keys, opts)
    local now = now_of(opts)
    local tolerance = opts and opts.tolerance or _M.TOLERANCE

    if opts and opts.secrets and type(keys) == "table" then
        local decoded = {}
        for i, s in ipairs(keys) do
            decoded[i] = _M.standard_key(s)
            if not decoded[i] then
                return false, "error"
            end
        end
        keys = decoded
    end

    if not check_args(keys, now, tolerance) then
        return false, "error"
    end

    if id == nil or timestamp == nil or signature == nil then
        return false, "missing_header"
    end

    local t = parse_timestamp(timestamp)
    if not valid_id(id) or not t or #signature == 0 then
        return false, "malformed_header"
    end

    local list = items(signature, " ", ",")
    if not list then
        return false, "malformed_header"
    end

    local sigs = {}
    for _, it in ipairs(list) do
        if it[1] == "v1" then
            -- strict decoding: the one canonical spelling, so strings
            -- compare
            local raw = #it[2] == 44 and crypto.b64_decode(it[2])
            if not raw or #raw ~= 32 then
                return false, "malformed_header"
            end
            sigs[#sigs + 1] = it[2]
        end
    end

    if stale(t, now, tolerance) then
        return false, "stale_timestamp"
    end

    if #sigs == 0 then
        return false, "bad_signature"
    end

    body = body or ""

    for _, key in ipairs(keys) do
        local mac = crypto.hmac_sha256(key, id .. "." .. timestamp .. "."
                                            .. body)
        if not mac then
            return false, "error"
        end
        local expected = crypto.b64_encode(mac)
        for _, sig in ipairs(sigs) do
            if crypto.equal(sig, expected) then
                return true, "ok"
            end
        end
    end

    return false, "bad_signature"
end


-- objects ---------------------------------------------------------------

--[[
opts: kind ("stripe" or "standard"), secrets (the gateway's secret
strings; several while one is rotated), tolerance (default 300 s).
]]
function _M.new(opts)
    opts = opts or {}

    local kind = opts.kind
    if kind ~= "stripe" and kind ~= "standard" then
        return nil, "kind must be \"stripe\" or \"standard\""
    end

    local secrets = opts.secrets
    if type(secrets) == "string" then
        secrets = { secrets }
    end
    if type(secrets) ~= "table" or #secrets == 0 then
        return nil, "no secrets"
    end

    local keys = {}
    for i, s in ipairs(secrets) do
        if type(s) ~= "string" or #s == 0 then
            return nil, "empty secret"
        end
        if kind == "standard" then
            keys[i] = _M.standard_key(s)
            if not keys[i] then
                return nil, "secret " .. i .. " is not whsec_ and 24 to 64"
                            .. " bytes of padded base64"
            end
        else
            keys[i] = s
        end
    end

    return setmetatable({ kind = kind, keys = keys,
                          tolerance = opts.tolerance or _M.TOLERANCE }, mt)
end


--- verifies headers and a body: h = { signature } (stripe) or
--- { id, timestamp, signature } (standard)
function _M.verify(self, h, body, now)
    local o = { now = now, tolerance = self.tolerance }
    if self.kind == "stripe" then
        return _M.stripe_verify(h.signature, body, self.keys, o)
    end
    return _M.standard_verify(h.id, h.timestamp, h.signature, body,
                              self.keys, o)
end


--[[
In nginx (access_by_lua* or content_by_lua*): reads the raw body (in
memory: set client_body_buffer_size as large as client_max_body_size) and
the headers, and verifies them (now: the clock, for tests).  Returns
true, "ok", body or false and the status.
]]
function _M.verify_request(self, now)
    ngx.req.read_body()
    local body = ngx.req.get_body_data()

    if body == nil then
        local file = ngx.req.get_body_file()
        if file then
            -- a body spooled to disk is read back (blocking): prefer a
            -- buffer as large as the largest webhook
            local f = io.open(file, "rb")
            if not f then
                return false, "error"
            end
            body = f:read("*a")
            f:close()
        else
            body = ""
        end
    end

    local h
    if self.kind == "stripe" then
        h = { signature = ngx.var.http_stripe_signature }
    else
        h = { id = ngx.var.http_webhook_id,
              timestamp = ngx.var.http_webhook_timestamp,
              signature = ngx.var.http_webhook_signature }
    end

    local ok, status = self:verify(h, body, now)
    return ok, status, body
end


return _M
