-- psd.rate: the values of ngx_psd_module's rate and duration directives
-- (psd_rate.c, docs/rules.md) and the GCRA arithmetic, for the per-node
-- fallback of psd.limit.  Rates: "<n>r/s|m|h|d", the interval rounded to
-- the nearest microsecond, at most 10000r/s.  Durations: "1h30m", "500ms",
-- a bare number is seconds.  All numbers stay below 2^53, so Lua's
-- doubles are exact.

local sub, format = string.sub, string.format
local floor = math.floor

local _M = { _VERSION = "0.1.0" }

local US_S = 1000000
_M.INTERVAL_MIN = 100                     -- µs: 10000r/s
_M.SPAN_MAX = 1125899906842624            -- 2^50 µs
_M.TIME_MAX = 4503599627370496            -- 2^52
_M.DURATION_MAX = 9007199254740992        -- 2^53 ms

local periods = { s = US_S, m = 60 * US_S, h = 3600 * US_S,
                  d = 86400 * US_S }


--- "10r/s" into { n = 10, period = <µs>, interval = <µs> }, or nil
function _M.parse(s)
    if type(s) ~= "string" then
        return nil
    end

    local digits, unit = s:match("^(%d+)r/([smhd])$")
    if not digits then
        return nil
    end

    local n = tonumber(digits)
    local period = periods[unit]

    if n == 0 or n > 86400 * US_S or n > floor(period / _M.INTERVAL_MIN) then
        return nil
    end

    return { n = n, period = period,
             interval = floor((period + floor(n / 2)) / n) }
end


-- in the only order a combination may use them; "ms" before "m"
local units = {
    { "w", 7 * 86400000 }, { "d", 86400000 }, { "h", 3600000 },
    { "m", 60000 }, { "s", 1000 }, { "ms", 1 },
}


--- "1h30m" into milliseconds, or nil (psd_rate_parse_duration)
function _M.parse_duration(s)
    if type(s) ~= "string" or #s == 0 then
        return nil
    end

    local total, next_unit, p = 0, 1, 1
    local len = #s

    while p <= len do
        local d = s:match("^%d+", p)
        if not d then
            return nil
        end

        p = p + #d

        -- at most 2^53, compared as text where doubles would round
        local v = d:gsub("^0+(%d)", "%1")
        if #v > 16 or (#v == 16 and v > "9007199254740992") then
            return nil
        end

        local n = tonumber(v)

        local ui, k
        if p > len then
            -- a bare number means seconds, but only alone
            if p - #d ~= 1 then
                return nil
            end
            ui = 5

        else
            for i = #units, 1, -1 do
                local name = units[i][1]
                if sub(s, p, p + #name - 1) == name then
                    ui, k = i, #name
                    break
                end
            end

            if not ui or ui < next_unit then
                return nil
            end
            p = p + k
        end

        local ms = units[ui][2]
        if n > floor((_M.DURATION_MAX - total) / ms) then
            return nil
        end

        total = total + n * ms
        next_unit = ui + 1
    end

    return total
end


--- milliseconds in the largest units: 5400000 -> "1h30m"
function _M.format_duration(ms)
    if ms <= 0 then
        return "0s"
    end

    local out = {}
    for i = 1, #units do
        local n = floor(ms / units[i][2])
        if n > 0 then
            ms = ms - n * units[i][2]
            out[#out + 1] = format("%.0f", n) .. units[i][1]
        end
    end

    return table.concat(out)
end


local function ceil_ms(us)
    local r = us % 1000
    if r == 0 then
        return us / 1000
    end
    return (us - r) / 1000 + 1
end


--[[
GCRA as psd_rate_gcra() (and so as the Redis script): tat (µs, nil for
none), now (µs), interval (µs), burst, cost.  Returns a table
{ allowed, tat, remaining, retry_after_ms, reset_after_ms, limit }, or
nil for arguments out of range.
]]
function _M.gcra(tat, now, interval, burst, cost)
    if interval < 1 or burst < 0 or cost < 0 or now < 0
       or now > _M.TIME_MAX or (tat and tat > _M.TIME_MAX)
       or burst >= floor(_M.SPAN_MAX / interval)
       or cost > floor(_M.SPAN_MAX / interval)
    then
        return nil
    end

    local dvt = interval * (burst + 1)
    local inc = interval * cost

    if tat == nil or tat < now then
        tat = now
    end

    local new_tat = tat + inc
    local allow_at = new_tat - dvt
    local res = { limit = burst + 1 }
    local ttl

    if allow_at > now then
        res.allowed = false
        res.tat = tat
        res.retry_after_ms = inc <= dvt and ceil_ms(allow_at - now) or -1
        ttl = tat - now

    else
        res.allowed = true
        res.tat = new_tat
        res.retry_after_ms = -1
        ttl = new_tat - now
    end

    local rest = dvt - ttl
    res.remaining = rest > 0 and floor(rest / interval) or 0
    res.reset_after_ms = ceil_ms(ttl)

    return res
end


return _M
