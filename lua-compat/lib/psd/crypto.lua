-- psd.crypto: HMAC-SHA256, SHA-256, SHA-1, constant-time comparison and
-- random bytes from OpenSSL's libcrypto through LuaJIT's FFI, and the
-- strict base64 / base64url codecs of ngx_psd_module (psd_b64.c): no
-- padding for base64url, zero spare bits, one spelling per value.
--
-- nginx links libcrypto, so inside nginx the symbols come from ffi.C;
-- elsewhere (plain LuaJIT) the shared library is loaded by name.  Nothing
-- here blocks or yields.

local ffi = require "ffi"
local bit = require "bit"

local band, bor, lshift, rshift = bit.band, bit.bor, bit.lshift, bit.rshift
local byte, char, sub, format = string.byte, string.char, string.sub,
                                string.format
local concat = table.concat
local ffi_string, ffi_new = ffi.string, ffi.new

local _M = { _VERSION = "0.1.0" }

-- each declaration on its own: another library may have declared some
local decls = {
    "typedef struct evp_md_st EVP_MD;",
    "const EVP_MD *EVP_sha256(void);",
    "unsigned char *HMAC(const EVP_MD *evp_md, const void *key, int key_len,"
        .. " const unsigned char *d, size_t n, unsigned char *md,"
        .. " unsigned int *md_len);",
    "unsigned char *SHA256(const unsigned char *d, size_t n,"
        .. " unsigned char *md);",
    "unsigned char *SHA1(const unsigned char *d, size_t n,"
        .. " unsigned char *md);",
    "int CRYPTO_memcmp(const void *a, const void *b, size_t len);",
    "int RAND_bytes(unsigned char *buf, int num);",
}

for i = 1, #decls do
    pcall(ffi.cdef, decls[i])
end


local function has_symbols(lib)
    return pcall(function()
        return lib.HMAC and lib.SHA256 and lib.SHA1 and lib.CRYPTO_memcmp
               and lib.RAND_bytes and lib.EVP_sha256
    end)
end


local crypto
do
    if has_symbols(ffi.C) then
        crypto = ffi.C
    else
        for _, name in ipairs({ "libcrypto.so.3", "crypto",
                                "libcrypto.so.1.1" })
        do
            local ok, lib = pcall(ffi.load, name)
            if ok and has_symbols(lib) then
                crypto = lib
                break
            end
        end
    end

    if not crypto then
        error("psd.crypto: libcrypto (OpenSSL) not found")
    end
end

local md_buf = ffi_new("unsigned char[64]")
local md_len = ffi_new("unsigned int[1]")
local sha256_md


--- HMAC-SHA256(key, msg): 32 raw bytes, or nil and an error.
function _M.hmac_sha256(key, msg)
    if sha256_md == nil then
        sha256_md = crypto.EVP_sha256()
    end

    if crypto.HMAC(sha256_md, key, #key, msg, #msg, md_buf, md_len) == nil
    then
        return nil, "HMAC-SHA256 failed"
    end

    return ffi_string(md_buf, md_len[0])
end


--- SHA-256(msg): 32 raw bytes.
function _M.sha256(msg)
    crypto.SHA256(msg, #msg, md_buf)
    return ffi_string(md_buf, 32)
end


--- SHA-1(msg): 20 raw bytes (Redis script ids).
function _M.sha1(msg)
    crypto.SHA1(msg, #msg, md_buf)
    return ffi_string(md_buf, 20)
end


--- true if a and b are equal strings; the time depends on their length
--- only (lengths are public: MACs have fixed sizes).
function _M.equal(a, b)
    if type(a) ~= "string" or type(b) ~= "string" or #a ~= #b then
        return false
    end

    if #a == 0 then
        return true
    end

    return crypto.CRYPTO_memcmp(a, b, #a) == 0
end


--- n random bytes from OpenSSL's CSPRNG, or nil and an error.
function _M.random_bytes(n)
    local buf = ffi_new("unsigned char[?]", n)

    if crypto.RAND_bytes(buf, n) ~= 1 then
        return nil, "RAND_bytes failed"
    end

    return ffi_string(buf, n)
end


local base62 =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

--- n characters of [A-Za-z0-9], uniformly random (the link ids of
--- psd_link_issue), or nil and an error.
function _M.random_base62(n)
    local out, k = {}, 0

    while k < n do
        local rnd, err = _M.random_bytes(64)
        if not rnd then
            return nil, err
        end

        -- 248 = 4 * 62: refusing 248..255 keeps every character equally
        -- likely
        for i = 1, 64 do
            local b = byte(rnd, i)
            if b < 248 and k < n then
                k = k + 1
                local c = b % 62 + 1
                out[k] = sub(base62, c, c)
            end
        end
    end

    return concat(out)
end


--- lower-case hex of a byte string
function _M.hex(s)
    return (s:gsub(".", function(c) return format("%02x", byte(c)) end))
end


-- base64 ----------------------------------------------------------------

local ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
local B64URL = ALNUM .. "-_"
local B64 = ALNUM .. "+/"

local enc_url, enc_std, dec_url, dec_std = {}, {}, {}, {}

for i = 1, 64 do
    enc_url[i - 1] = sub(B64URL, i, i)
    enc_std[i - 1] = sub(B64, i, i)
    dec_url[byte(B64URL, i)] = i - 1
    dec_std[byte(B64, i)] = i - 1
end


local function encode(s, alphabet, pad)
    local out, n, len = {}, 0, #s
    local i = 1

    while i + 2 <= len do
        local a, b, c = byte(s, i, i + 2)
        out[n + 1] = alphabet[rshift(a, 2)]
        out[n + 2] = alphabet[bor(lshift(band(a, 3), 4), rshift(b, 4))]
        out[n + 3] = alphabet[bor(lshift(band(b, 15), 2), rshift(c, 6))]
        out[n + 4] = alphabet[band(c, 63)]
        n = n + 4
        i = i + 3
    end

    local rest = len - i + 1

    if rest == 1 then
        local a = byte(s, i)
        out[n + 1] = alphabet[rshift(a, 2)]
        out[n + 2] = alphabet[lshift(band(a, 3), 4)]
        if pad then
            out[n + 3] = "=="
        end

    elseif rest == 2 then
        local a, b = byte(s, i, i + 1)
        out[n + 1] = alphabet[rshift(a, 2)]
        out[n + 2] = alphabet[bor(lshift(band(a, 3), 4), rshift(b, 4))]
        out[n + 3] = alphabet[lshift(band(b, 15), 2)]
        if pad then
            out[n + 4] = "="
        end
    end

    return concat(out)
end


-- psd_b64.c's b64_decode(): the spare bits of a short last group must be
-- zero, so every value has exactly one spelling
local function decode(s, values)
    local len = #s

    if len % 4 == 1 then
        return nil
    end

    local out, n = {}, 0

    for i = 1, len, 4 do
        local rest = len - i + 1
        if rest > 4 then
            rest = 4
        end

        local v = { byte(s, i, i + rest - 1) }

        for k = 1, rest do
            v[k] = values[v[k]]
            if v[k] == nil then
                return nil
            end
        end

        n = n + 1
        out[n] = bor(lshift(v[1], 2), rshift(v[2], 4))

        if rest == 2 then
            if band(v[2], 15) ~= 0 then
                return nil
            end
            break
        end

        n = n + 1
        out[n] = band(bor(lshift(v[2], 4), rshift(v[3], 2)), 255)

        if rest == 3 then
            if band(v[3], 3) ~= 0 then
                return nil
            end
            break
        end

        n = n + 1
        out[n] = band(bor(lshift(v[3], 6), v[4]), 255)
    end

    -- char() takes a bounded number of arguments: convert in slices
    local parts = {}
    for i = 1, n, 4096 do
        parts[#parts + 1] = char(unpack(out, i, math.min(i + 4095, n)))
    end

    return concat(parts)
end


--- base64url without padding (psd_b64url_encode)
function _M.b64url_encode(s)
    return encode(s, enc_url, false)
end

--- strict base64url without padding, or nil (psd_b64url_decode)
function _M.b64url_decode(s)
    return decode(s, dec_url)
end

--- padded standard base64 (psd_b64_encode)
function _M.b64_encode(s)
    return encode(s, enc_std, true)
end

--- strict padded standard base64, or nil (psd_b64_decode)
function _M.b64_decode(s)
    local len = #s

    if len % 4 ~= 0 then
        return nil
    end

    local pad = 0
    while pad < 2 and len > pad and byte(s, len - pad) == 61 do
        pad = pad + 1
    end

    return decode(sub(s, 1, len - pad), dec_std)
end


return _M
