-- psd.cidr: IPv4/IPv6 addresses and CIDR blocks in the strict canonical
-- text of ngx_psd_module (psd_cidr.c, docs/link-format.md): dotted decimal
-- without leading zeros, RFC 5952 IPv6, no "/32" or "/128", host bits
-- zero, no IPv4-mapped IPv6 text.  A mapped client address counts as the
-- IPv4 address it carries.
--
-- An address is { family = 4 | 6, addr = <4 or 16 bytes> }; a block is
-- { net = <address>, prefix = <bits> }.

local ffi = require "ffi"
local bit = require "bit"

local band, bxor, rshift, lshift = bit.band, bit.bxor, bit.rshift, bit.lshift
local byte, char, sub, find, format = string.byte, string.char, string.sub,
                                      string.find, string.format
local concat = table.concat

local _M = { _VERSION = "0.1.0" }

local MAPPED = "\0\0\0\0\0\0\0\0\0\0\255\255"
local IP_TEXT_MAX = 39

pcall(ffi.cdef, "int inet_pton(int af, const char *src, void *dst);")
local AF_INET, AF_INET6 = 2, ffi.os == "Linux" and 10 or 30
local pton_buf = ffi.new("unsigned char[16]")


local function hexval(c)
    if c >= 48 and c <= 57 then
        return c - 48
    end
    if c >= 97 and c <= 102 then
        return c - 87
    end
    if c >= 65 and c <= 70 then
        return c - 55
    end
    return nil
end


-- decimal, no sign, no leading zero, at most 3 digits and at most max
local function dec(s, max)
    local n = #s
    if n == 0 or n > 3 or (n > 1 and byte(s, 1) == 48) then
        return nil
    end
    if find(s, "[^0-9]") then
        return nil
    end
    local v = tonumber(s)
    return v <= max and v or nil
end


local function parse_v4(s)
    local out = {}
    local p = 1

    for i = 1, 4 do
        local dot = find(s, ".", p, true)
        if (i < 4) ~= (dot ~= nil) then
            return nil
        end
        local v = dec(sub(s, p, (dot or #s + 1) - 1), 255)
        if not v then
            return nil
        end
        out[i] = v
        p = (dot or #s) + 1
    end

    return char(out[1], out[2], out[3], out[4])
end


-- a superset of the canonical form (any case, leading zeros, "::" for one
-- group); the caller formats the result and compares, as psd_cidr.c does
local function parse_v6(s)
    local groups, n, gap = {}, 0, 8
    local p, e = 1, #s

    if sub(s, 1, 2) == "::" then
        gap = 0
        p = 3
    end

    if not (gap == 0 and p > e) then
        while true do
            if n == 8 then
                return nil
            end

            local v, digits = 0, 0
            while p <= e and digits < 5 do
                local d = hexval(byte(s, p))
                if not d then
                    break
                end
                v = v * 16 + d
                digits = digits + 1
                p = p + 1
            end

            if digits == 0 or digits > 4 then
                return nil
            end

            n = n + 1
            groups[n] = v

            if p > e then
                break
            end

            if byte(s, p) ~= 58 then
                return nil
            end
            p = p + 1
            if p > e then
                return nil
            end

            if byte(s, p) == 58 then
                if gap ~= 8 then
                    return nil
                end
                gap = n
                p = p + 1
                if p > e then
                    break
                end
            end
        end
    end

    if gap == 8 then
        if n ~= 8 then
            return nil
        end
    elseif n > 7 then
        return nil
    end

    local g = { 0, 0, 0, 0, 0, 0, 0, 0 }
    for i = 1, n do
        local k = (i - 1 < gap) and i or 8 - n + i
        g[k] = groups[i]
    end

    local bytes = {}
    for i = 1, 8 do
        bytes[2 * i - 1] = rshift(g[i], 8)
        bytes[2 * i] = band(g[i], 255)
    end

    return char(unpack(bytes))
end


local function format_v6(addr)
    local g = {}
    for i = 1, 8 do
        local hi, lo = byte(addr, 2 * i - 1, 2 * i)
        g[i] = hi * 256 + lo
    end

    -- the longest run of zero groups, the first on a tie, two or more
    local best, best_len = 9, 0
    local i = 1
    while i <= 8 do
        if g[i] ~= 0 then
            i = i + 1
        else
            local start = i
            while i <= 8 and g[i] == 0 do
                i = i + 1
            end
            if i - start > best_len then
                best, best_len = start, i - start
            end
        end
    end

    if best_len < 2 then
        best, best_len = 9, 0
    end

    local out = {}
    i = 1
    while i <= 8 do
        if i == best then
            out[#out + 1] = "::"
            i = i + best_len
        else
            if i ~= 1 and i ~= best + best_len then
                out[#out + 1] = ":"
            end
            out[#out + 1] = format("%x", g[i])
            i = i + 1
        end
    end

    return concat(out)
end


local function parse_addr(s)
    if not find(s, ":", 1, true) then
        local a = parse_v4(s)
        return a and { family = 4, addr = a } or nil
    end

    if #s > IP_TEXT_MAX then
        return nil
    end

    local a = parse_v6(s)
    if not a or format_v6(a) ~= s then
        return nil
    end

    return { family = 6, addr = a }
end


--- canonical address text (no prefix) into an address, or nil
function _M.parse_ip(s)
    if type(s) ~= "string" then
        return nil
    end

    local ip = parse_addr(s)
    if not ip or (ip.family == 6 and sub(ip.addr, 1, 12) == MAPPED) then
        return nil
    end

    return ip
end


local function host_bits_zero(addr, prefix, max)
    for i = prefix, max - 1 do
        local b = byte(addr, rshift(i, 3) + 1)
        if band(b, rshift(0x80, i % 8)) ~= 0 then
            return false
        end
    end
    return true
end


--- canonical address or CIDR text into a block, or nil
function _M.parse_cidr(s)
    if type(s) ~= "string" then
        return nil
    end

    local slash = find(s, "/", 1, true)
    local net = parse_addr(slash and sub(s, 1, slash - 1) or s)
    if not net then
        return nil
    end

    local max = net.family == 4 and 32 or 128
    local prefix = max

    if slash then
        prefix = dec(sub(s, slash + 1), max)
        -- one spelling per block: the bare address is the full length
        if not prefix or prefix == max then
            return nil
        end
    end

    if max == 128 and prefix >= 96 and sub(net.addr, 1, 12) == MAPPED then
        return nil
    end

    if not host_bits_zero(net.addr, prefix, max) then
        return nil
    end

    return { net = net, prefix = prefix }
end


--- an address from its socket form: 4 or 16 bytes (nginx's
--- $binary_remote_addr); an IPv4-mapped IPv6 address becomes IPv4
function _M.from_binary(b)
    if type(b) ~= "string" then
        return nil
    end

    if #b == 4 then
        return { family = 4, addr = b }
    end

    if #b ~= 16 then
        return nil
    end

    if sub(b, 1, 12) == MAPPED then
        return { family = 4, addr = sub(b, 13) }
    end

    return { family = 6, addr = b }
end


--- an address from any text inet_pton() reads ($remote_addr, which may be
--- "::ffff:192.0.2.7" on a dual-stack listener), or nil
function _M.from_text(s)
    if type(s) ~= "string" or #s == 0 or #s > 45 or find(s, "%z") then
        return nil
    end

    if not find(s, ":", 1, true) then
        if ffi.C.inet_pton(AF_INET, s, pton_buf) ~= 1 then
            return nil
        end
        return { family = 4, addr = ffi.string(pton_buf, 4) }
    end

    if ffi.C.inet_pton(AF_INET6, s, pton_buf) ~= 1 then
        return nil
    end

    return _M.from_binary(ffi.string(pton_buf, 16))
end


--- true if the address is inside the block (a different family never is)
function _M.match(cidr, ip)
    if not cidr or not ip then
        return false
    end

    local family, a = ip.family, ip.addr

    if family == 6 and sub(a, 1, 12) == MAPPED then
        family, a = 4, sub(a, 13)
    end

    if family ~= cidr.net.family then
        return false
    end

    local max = family == 4 and 32 or 128
    local bits = cidr.prefix < max and cidr.prefix or max
    local bytes = rshift(bits, 3)
    bits = bits % 8

    if bytes > 0 and sub(a, 1, bytes) ~= sub(cidr.net.addr, 1, bytes) then
        return false
    end

    if bits > 0 then
        local mask = band(rshift(0xff00, bits), 0xff)
        if band(bxor(byte(a, bytes + 1), byte(cidr.net.addr, bytes + 1)),
                mask) ~= 0
        then
            return false
        end
    end

    return true
end


--- canonical text of an address
function _M.format_ip(ip)
    if ip.family == 6 then
        return format_v6(ip.addr)
    end
    return format("%d.%d.%d.%d", byte(ip.addr, 1, 4))
end


--- canonical text of a block
function _M.format_cidr(cidr)
    local s = _M.format_ip(cidr.net)
    local max = cidr.net.family == 4 and 32 or 128
    if cidr.prefix < max then
        s = s .. "/" .. cidr.prefix
    end
    return s
end


--- the block of the first n bits of an address
function _M.prefix_of(ip, n)
    local max = ip.family == 4 and 32 or 128
    local bytes = { byte(ip.addr, 1, max / 8) }

    for i = 1, max / 8 do
        local lo = (i - 1) * 8
        if lo >= n then
            bytes[i] = 0
        elseif lo + 8 > n then
            bytes[i] = band(bytes[i], band(lshift(0xff, 8 - (n - lo)), 0xff))
        end
    end

    return { net = { family = ip.family, addr = char(unpack(bytes)) },
             prefix = n }
end


return _M
