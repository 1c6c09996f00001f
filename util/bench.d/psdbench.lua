-- The Lua peers of util/bench: what a site without ngx_psd_module would
-- write with Debian's lua-nginx-module (libnginx-mod-http-lua) and
-- lua-resty-redis (package lua-nginx-redis, whose module is "nginx.redis",
-- not "resty.redis").  Written for the benchmark, the way a careful user
-- would: Redis connections kept alive in a pool of 100, commands pipelined
-- where the handler allows it, HMAC-SHA256 through LuaJIT's FFI straight
-- into OpenSSL's HMAC() (nginx already links libcrypto, so ffi.C finds it).
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


function _M.init(keyfile, port)
    local f = assert(io.open(keyfile, "rb"))
    key = f:read("*a")
    f:close()
    redis_port = port or redis_port
end


local function hmac_sha256(msg)
    if sha256 == nil then
        sha256 = crypto.EVP_sha256()
    end

    if crypto.HMAC(sha256, key, #key, msg, #msg, md, md_len) == nil then
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


return _M
