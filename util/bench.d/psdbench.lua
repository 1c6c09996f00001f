-- The Lua peers of util/bench: what a site without ngx_psd_module would
-- write with Debian's lua-nginx-module (libnginx-mod-http-lua) and
-- lua-resty-redis (package lua-nginx-redis, whose module is "nginx.redis",
-- not "resty.redis").  Written for the benchmark, the way a careful user
-- would: Redis connections kept alive in a pool of 100, commands pipelined
-- where the handler allows it, HMAC-SHA256 through LuaJIT's FFI straight
-- into OpenSSL's HMAC() (nginx already links libcrypto, so ffi.C finds it).
--
-- The peers of the Pay scenarios (limit, tokenize, webhook) are further
-- down, each with what it does and leaves out next to the module.
--
-- Link formats (the bench signs them in Perl, with Digest::SHA):
--   stateless: PATH?exp=UNIX&sig=B64URL(HMAC(key, PATH "\n" exp))
--   limited:   PATH?id=ID&exp=UNIX&limit=N
--                  &sig=B64URL(HMAC(key, PATH "\n" exp "\n" id "\n" N))
-- The key is the same file psd_link_key reads.

local ffi = require "ffi"
local redis = require "nginx.redis"
local b64 = require "ngx.base64"

ffi.cdef [[
typedef struct evp_md_st EVP_MD;
const EVP_MD *EVP_sha256(void);
unsigned char *HMAC(const EVP_MD *evp_md, const void *key, int key_len,
                    const unsigned char *d, size_t n, unsigned char *md,
                    unsigned int *md_len);

typedef struct evp_cipher_st EVP_CIPHER;
typedef struct evp_cipher_ctx_st EVP_CIPHER_CTX;
const EVP_CIPHER *EVP_aes_256_gcm(void);
EVP_CIPHER_CTX *EVP_CIPHER_CTX_new(void);
int EVP_EncryptInit_ex(EVP_CIPHER_CTX *ctx, const EVP_CIPHER *type,
                       void *impl, const unsigned char *key,
                       const unsigned char *iv);
int EVP_EncryptUpdate(EVP_CIPHER_CTX *ctx, unsigned char *out, int *outl,
                      const unsigned char *in, int inl);
int EVP_EncryptFinal_ex(EVP_CIPHER_CTX *ctx, unsigned char *out, int *outl);
int EVP_CIPHER_CTX_ctrl(EVP_CIPHER_CTX *ctx, int type, int arg, void *ptr);
int RAND_bytes(unsigned char *buf, int num);
]]

-- ffi.C when nginx's own libcrypto is in the global namespace; otherwise
-- the shared library by name
local crypto = ffi.C
if not pcall(function() return crypto.HMAC end) then
    crypto = ffi.load("libcrypto.so.3")
end

local md = ffi.new("unsigned char[32]")
local md_len = ffi.new("unsigned int[1]")
local sha256

local _M = {}

local key
local redis_host, redis_port = "127.0.0.1", 6379
local POOL_IDLE_MS, POOL_SIZE = 10000, 100


local function read_file(path)
    local f = assert(io.open(path, "rb"))
    local data = f:read("*a")
    f:close()
    return data
end


-- files: the Pay scenarios' secrets (vault, fingerprint, webhook); the link
-- scenarios pass none
function _M.init(keyfile, port, files)
    key = read_file(keyfile)
    redis_port = port or redis_port
    files = files or {}
    if files.vault then
        _M.init_vault(read_file(files.vault), read_file(files.fingerprint))
    end
    if files.whsec then
        _M.whsec = read_file(files.whsec)
    end
end


-- HMAC-SHA256 of msg under k (the link key by default)
local function hmac_sha256(msg, k)
    if sha256 == nil then
        sha256 = crypto.EVP_sha256()
    end

    k = k or key

    if crypto.HMAC(sha256, k, #k, msg, #msg, md, md_len) == nil then
        return nil
    end

    return ffi.string(md, md_len[0])
end

_M.hmac_sha256 = hmac_sha256


local function fail(status)
    return ngx.exit(status)
end


local function redis_connect()
    local red = redis:new()
    red:set_timeout(1000)

    local ok, err = red:connect(redis_host, redis_port)
    if not ok then
        ngx.log(ngx.ERR, "redis connect: ", err)
        return nil
    end

    return red
end


-- access_by_lua: a stateless signed link (expiry and signature only)

function _M.link()
    local exp_s, sig = ngx.var.arg_exp, ngx.var.arg_sig
    local exp = tonumber(exp_s)

    if exp == nil or sig == nil then
        return fail(ngx.HTTP_FORBIDDEN)
    end

    if exp < ngx.time() then
        return fail(410)
    end

    local mac = hmac_sha256(ngx.var.uri .. "\n" .. exp_s)
    if mac == nil or b64.encode_base64url(mac) ~= sig then
        return fail(ngx.HTTP_FORBIDDEN)
    end
end


-- access_by_lua: a signed link with a download limit and revocation, in
-- one Redis round trip (HGET revoked + HINCRBY used, pipelined).  It counts
-- a use when the request starts, not when the download completes, and
-- keeps no leases: less than psd_link does, which is the point of keeping
-- it as the simple thing a site would write.

function _M.limited_link()
    local exp_s, sig = ngx.var.arg_exp, ngx.var.arg_sig
    local id, limit_s = ngx.var.arg_id, ngx.var.arg_limit
    local exp, limit = tonumber(exp_s), tonumber(limit_s)

    if exp == nil or sig == nil or id == nil or limit == nil then
        return fail(ngx.HTTP_FORBIDDEN)
    end

    if exp < ngx.time() then
        return fail(410)
    end

    local mac = hmac_sha256(ngx.var.uri .. "\n" .. exp_s .. "\n" .. id
                            .. "\n" .. limit_s)
    if mac == nil or b64.encode_base64url(mac) ~= sig then
        return fail(ngx.HTTP_FORBIDDEN)
    end

    local red = redis_connect()
    if red == nil then
        return fail(503)
    end

    local k = "lua:link:" .. id
    red:init_pipeline(2)
    red:hget(k, "revoked")
    red:hincrby(k, "used", 1)
    local res, err = red:commit_pipeline()

    if not res or type(res[2]) ~= "number" then
        ngx.log(ngx.ERR, "redis: ", err or "bad reply")
        return fail(503)
    end

    red:set_keepalive(POOL_IDLE_MS, POOL_SIZE)

    if res[1] ~= ngx.null or res[2] > limit then
        return fail(410)
    end
end


-- content_by_lua: INCR + EXPIRE, answering {"count":N} like psd_counter.
-- pipelined: both commands in one round trip; otherwise one after the
-- other, as most examples of lua-resty-redis show it.

function _M.counter(pipelined)
    local red = redis_connect()
    if red == nil then
        return fail(503)
    end

    local k = "lua:cnt:" .. ngx.var.uri
    local n, err

    if pipelined then
        red:init_pipeline(2)
        red:incr(k)
        red:expire(k, 3600)
        local res
        res, err = red:commit_pipeline()
        n = res and res[1]
    else
        n, err = red:incr(k)
        if n then
            local ok
            ok, err = red:expire(k, 3600)
            if not ok then
                n = nil
            end
        end
    end

    if type(n) ~= "number" then
        ngx.log(ngx.ERR, "redis: ", err or "bad reply")
        return fail(503)
    end

    red:set_keepalive(POOL_IDLE_MS, POOL_SIZE)

    ngx.header["Content-Type"] = "application/json"
    ngx.print('{"count":', n, '}\n')
end


-- JSON answers like the module's: {"error":"<code>"}
local function json_error(status, code)
    ngx.status = status
    ngx.header["Content-Type"] = "application/json"
    ngx.print('{"error":"', code, '"}\n')
    return ngx.exit(status)
end


-- access_by_lua: a rate limit in Redis, GCRA as psd_limit computes it (the
-- algorithm of redis-cell's CL.THROTTLE, on Redis's clock), one EVALSHA
-- per request through the keepalive pool; NOSCRIPT loads it with EVAL.
-- A rejected request gets 429 and Retry-After; no RateLimit headers and no
-- local fallback when Redis is down (fails closed with 503).

local GCRA = [[
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - interval * (burst + 1)
if allow_at > now then
  return {0, math.ceil((allow_at - now) / 1000)}
end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX',
           string.format('%.0f', math.ceil((new_tat - now) / 1000)))
return {1, 0}
]]
local gcra_sha

local function to_hex(s)
    return (s:gsub(".", function(c)
        return string.format("%02x", c:byte())
    end))
end

-- interval in µs, burst in requests: the zone's rate=, burst=
function _M.limit(interval, burst)
    if gcra_sha == nil then
        gcra_sha = to_hex(ngx.sha1_bin(GCRA))
    end

    local red = redis_connect()
    if red == nil then
        return fail(503)
    end

    local k = "lua:lim:" .. ngx.var.binary_remote_addr
    local res, err = red:evalsha(gcra_sha, 1, k, interval, burst)
    if not res and err and err:find("NOSCRIPT", 1, true) then
        res, err = red:eval(GCRA, 1, k, interval, burst)
    end

    if type(res) ~= "table" then
        ngx.log(ngx.ERR, "redis: ", err or "bad reply")
        return fail(503)
    end

    red:set_keepalive(POOL_IDLE_MS, POOL_SIZE)

    if res[1] ~= 1 then
        ngx.header["Retry-After"] = math.ceil(res[2] / 1000)
        return json_error(429, "rate_limited")
    end
end


-- Cards: what psd_tokenize checks, the plain way.  Luhn, 12 to 19 digits
-- after removing spaces and dashes, a brand from the first digits (the
-- common ranges only; the module also checks each brand's lengths), a
-- 3 or 4 digit CVV.

local BYTE_0 = string.byte("0")

local function luhn(digits)
    local sum, n = 0, #digits
    for i = n, 1, -1 do
        local d = digits:byte(i) - BYTE_0
        if (n - i) % 2 == 1 then
            d = d * 2
            if d > 9 then
                d = d - 9
            end
        end
        sum = sum + d
    end
    return sum % 10 == 0
end

local function brand_of(d)
    local c1, c2, c4 = d:sub(1, 1), tonumber(d:sub(1, 2)),
                       tonumber(d:sub(1, 4))
    if c1 == "4" then return "visa" end
    if (c2 >= 51 and c2 <= 55) or (c4 >= 2221 and c4 <= 2720) then
        return "mastercard"
    end
    if c2 == 34 or c2 == 37 then return "amex" end
    if d:sub(1, 4) == "6011" or c2 == 65 then return "discover" end
    return "unknown"
end

-- random tokens: "tok_" and 24 base62 characters from RAND_bytes, bytes
-- of 248 and more dropped so that every character is equally likely
local B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
local rnd = ffi.new("unsigned char[64]")

local function random_token()
    local out, n = {}, 0
    while n < 24 do
        if crypto.RAND_bytes(rnd, 64) ~= 1 then
            return nil
        end
        for i = 0, 63 do
            local b = rnd[i]
            if b < 248 and n < 24 then
                n = n + 1
                local j = b % 62 + 1
                out[n] = B62:sub(j, j)
            end
        end
    end
    return "tok_" .. table.concat(out)
end

-- the vault: the module's envelope (version 1, kid, 12-byte nonce,
-- AES-256-GCM ciphertext, tag; the header and the token as associated
-- data), base64url; one EVP_CIPHER_CTX per worker, keyed once
local vault_key, fp_key, gcm, gcm_ctx
local KID = "a"
local HEAD = string.char(1, #KID) .. KID
local nonce = ffi.new("unsigned char[12]")
local ct = ffi.new("unsigned char[2048]")
local tag = ffi.new("unsigned char[16]")
local outl = ffi.new("int[1]")
local EVP_CTRL_GCM_GET_TAG = 0x10

function _M.init_vault(vault, fingerprint)
    -- the module's file format: 32 raw bytes or 64 hex digits
    if #vault == 64 then
        vault = vault:gsub("%x%x", function(h)
            return string.char(tonumber(h, 16))
        end)
    end
    assert(#vault == 32, "vault key: 32 bytes")
    vault_key, fp_key = vault, fingerprint
end

local function seal(token, plain)
    if gcm_ctx == nil then
        gcm = crypto.EVP_aes_256_gcm()
        gcm_ctx = crypto.EVP_CIPHER_CTX_new()
        if crypto.EVP_EncryptInit_ex(gcm_ctx, gcm, nil, vault_key, nil) ~= 1
        then
            gcm_ctx = nil
            return nil
        end
    end

    if crypto.RAND_bytes(nonce, 12) ~= 1
        or crypto.EVP_EncryptInit_ex(gcm_ctx, nil, nil, nil, nonce) ~= 1
    then
        return nil
    end

    local aad = HEAD .. token
    if crypto.EVP_EncryptUpdate(gcm_ctx, nil, outl, aad, #aad) ~= 1
        or crypto.EVP_EncryptUpdate(gcm_ctx, ct, outl, plain, #plain) ~= 1
    then
        return nil
    end
    local n = outl[0]
    if crypto.EVP_EncryptFinal_ex(gcm_ctx, ct + n, outl) ~= 1
        or crypto.EVP_CIPHER_CTX_ctrl(gcm_ctx, EVP_CTRL_GCM_GET_TAG, 16,
                                      tag) ~= 1
    then
        return nil
    end
    n = n + outl[0]

    return b64.encode_base64url(HEAD .. ffi.string(nonce, 12)
                                .. ffi.string(ct, n) .. ffi.string(tag, 16))
end


-- access_by_lua: tokenize a JSON checkout body as psd_tokenize does for
-- card.number (pan) and card.cvc (cvv): decode with lua-cjson, check the
-- card, fingerprint it (HMAC-SHA256 under the fingerprint key), make two
-- random tokens, seal the number and the CVV (AES-256-GCM through LuaJIT's
-- FFI into libcrypto's EVP), SET NX both with their TTLs in one pipelined
-- round trip, encode the body again and hand it on with X-PSD-Card-*
-- headers.  Left out next to the module: the strict JSON checks (duplicate
-- keys, depth, UTF-8), the safety-net scan of the rest of the body, forms,
-- wiping buffers; cjson also re-encodes the whole body (key order and
-- number spelling may change) where the module edits the two values in
-- place.

local cjson_safe

function _M.tokenize()
    if cjson_safe == nil then
        cjson_safe = require "cjson.safe"
    end

    ngx.req.read_body()
    local body = ngx.req.get_body_data()
    if body == nil then
        return json_error(413, "body_too_large")
    end

    local doc = cjson_safe.decode(body)
    if type(doc) ~= "table" then
        return json_error(400, "invalid_json")
    end

    local card = doc.card
    if type(card) ~= "table" or type(card.number) ~= "string"
        or type(card.cvc) ~= "string"
    then
        return json_error(422, "invalid_card_number")
    end

    local digits = card.number:gsub("[ -]", "")
    if #digits < 12 or #digits > 19 or digits:find("%D") then
        return json_error(422, "invalid_card_number")
    end
    if not luhn(digits) then
        return json_error(422, "luhn_failed")
    end
    local cvc = card.cvc
    if not cvc:find("^%d%d%d%d?$") then
        return json_error(422, "invalid_cvv")
    end

    local brand = brand_of(digits)
    local fp = "fp_" .. b64.encode_base64url(hmac_sha256(digits, fp_key))
    local tok, ctok = random_token(), random_token()
    local env, cenv = tok and seal(tok, digits), ctok and seal(ctok, cvc)
    if env == nil or cenv == nil then
        return fail(500)
    end

    local red = redis_connect()
    if red == nil then
        return json_error(503, "vault_unavailable")
    end
    red:init_pipeline(2)
    red:set("lua:tok:" .. tok, env, "EX", 3600, "NX")
    red:set("lua:cvv:" .. ctok, cenv, "EX", 600, "NX")
    local res, err = red:commit_pipeline()
    if not res or res[1] ~= "OK" or res[2] ~= "OK" then
        ngx.log(ngx.ERR, "redis: ", err or "bad reply")
        return json_error(503, "vault_unavailable")
    end
    red:set_keepalive(POOL_IDLE_MS, POOL_SIZE)

    card.number, card.cvc = tok, ctok
    ngx.req.set_body_data(cjson_safe.encode(doc))
    ngx.req.set_header("X-PSD-Card-Brand", brand)
    ngx.req.set_header("X-PSD-Card-Last4", digits:sub(-4))
    ngx.req.set_header("X-PSD-Card-Fingerprint", fp)
end


-- content_by_lua: a Stripe webhook.  Stripe-Signature "t=...,v1=..." is
-- HMAC-SHA256 (hex) of "t.body" under the endpoint secret; the timestamp
-- within the tolerance; then the event id from the body (lua-cjson) and
-- SET NX EX 7d of a dedupe key: a duplicate answers 200 and changes
-- nothing, a new event sets the order paid (HSET).  Left out next to
-- psd_webhook: constant-time comparison, several secrets, the event-type
-- mapping and the forward-only order record (one script there).

local HEX = {}
for i = 0, 255 do
    HEX[i] = string.format("%02x", i)
end
local hexbuf = {}

local function hex32(bin)
    for i = 1, 32 do
        hexbuf[i] = HEX[bin:byte(i)]
    end
    return table.concat(hexbuf, "", 1, 32)
end

function _M.webhook(tolerance)
    if cjson_safe == nil then
        cjson_safe = require "cjson.safe"
    end

    local h = ngx.var.http_stripe_signature
    if h == nil then
        return json_error(400, "missing_header")
    end
    local t = h:match("t=(%d+)")
    if t == nil then
        return json_error(400, "malformed_header")
    end
    if math.abs(ngx.time() - tonumber(t)) > tolerance then
        return json_error(401, "stale_timestamp")
    end

    ngx.req.read_body()
    local body = ngx.req.get_body_data()
    if body == nil then
        return json_error(413, "body_too_large")
    end

    local expected = hex32(hmac_sha256(t .. "." .. body, _M.whsec))
    local ok = false
    for v1 in h:gmatch("v1=(%x+)") do
        if v1 == expected then
            ok = true
        end
    end
    if not ok then
        return json_error(401, "bad_signature")
    end

    local ev = cjson_safe.decode(body)
    local obj = type(ev) == "table" and type(ev.data) == "table"
                and ev.data.object
    local order = type(obj) == "table" and type(obj.metadata) == "table"
                  and obj.metadata.order_id
    if type(order) ~= "string" or type(ev.id) ~= "string" then
        return json_error(400, "missing_order")
    end

    local red = redis_connect()
    if red == nil then
        return json_error(503, "unavailable")
    end
    local res, err = red:set("lua:evt:" .. ev.id, "1", "NX", "EX", 604800)
    if res == "OK" then
        res, err = red:hset("lua:order:" .. order, "state", "paid")
    end
    if not res then
        ngx.log(ngx.ERR, "redis: ", err)
        return json_error(503, "unavailable")
    end
    red:set_keepalive(POOL_IDLE_MS, POOL_SIZE)

    ngx.header["Content-Type"] = "application/json"
    ngx.print('{"received":true}\n')
end



-- content_by_lua: the carrier scenario's peer.  HMAC-SHA256 (hex) of the
-- body under the secret, after the "hmac-sha256-hex=" prefix; the order,
-- status and event id from the body (lua-cjson); SET NX EX 7d of a dedupe
-- key: a duplicate answers 200 and changes nothing, a new event sets the
-- delivery state (HSET).  Left out next to psd_webhook carrier:
-- constant-time comparison, several secrets, strict JSON (duplicate keys),
-- the time parser, the status map and the rank that orders events (one
-- script there).

function _M.carrier()
    if cjson_safe == nil then
        cjson_safe = require "cjson.safe"
    end

    local h = ngx.var.http_x_hmac_signature
    if h == nil then
        return json_error(400, "missing_header")
    end
    local sig = h:match("^hmac%-sha256%-hex=(%x+)$")
    if sig == nil or #sig ~= 64 then
        return json_error(400, "malformed_header")
    end

    ngx.req.read_body()
    local body = ngx.req.get_body_data()
    if body == nil then
        return json_error(413, "body_too_large")
    end

    if sig:lower() ~= hex32(hmac_sha256(body, _M.whsec)) then
        return json_error(401, "bad_signature")
    end

    local ev = cjson_safe.decode(body)
    local res = type(ev) == "table" and ev.result
    local order = type(res) == "table" and res.reference
    if type(order) ~= "string" or type(ev.id) ~= "string"
       or type(res.status) ~= "string"
    then
        return json_error(400, "missing_order")
    end

    local red = redis_connect()
    if red == nil then
        return json_error(503, "unavailable")
    end
    local ok, err = red:set("lua:dlv:" .. ev.id, "1", "NX", "EX", 604800)
    if ok == "OK" then
        ok, err = red:hset("lua:order:" .. order, "delivery_state",
                           res.status)
    end
    if not ok then
        ngx.log(ngx.ERR, "redis: ", err)
        return json_error(503, "unavailable")
    end
    red:set_keepalive(POOL_IDLE_MS, POOL_SIZE)

    ngx.header["Content-Type"] = "application/json"
    ngx.print('{"received":true}\n')
end


return _M
