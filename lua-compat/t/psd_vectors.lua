-- The shared vectors of t/vectors/*.json through lua-compat: every case
-- gives one line "ok - <name>" or "not ok - <name> # <why>", which
-- t/060-lua-compat.t turns into TAP assertions.
--
--   require("psd_vectors").run("/path/to/t/vectors", function(line) ... end)

local cjson = require "cjson.safe"
local link = require "psd.link"
local cidr = require "psd.cidr"
local crypto = require "psd.crypto"
local webhook = require "psd.webhook"
local card = require "psd.card"
local fraud = require "psd.fraud"
local rate = require "psd.rate"

local null = cjson.null
local format = string.format

local _M = {}


local function load(dir, name)
    local f = assert(io.open(dir .. "/" .. name, "rb"))
    local text = f:read("*a")
    f:close()
    return assert(cjson.decode(text), name .. ": bad JSON")
end


local function opt(v)
    if v == null then
        return nil
    end
    return v
end


local function unhex(h)
    return (h:gsub("..", function(x) return string.char(tonumber(x, 16)) end))
end


local function show(v)
    if type(v) == "string" then
        return format("%q", v):gsub("\n", "n")
    end
    return tostring(v)
end


function _M.run(dir, say)
    local function is(got, want, name)
        if got == want then
            say("ok - " .. name)
        else
            say("not ok - " .. name .. " # got " .. show(got) .. ", want "
                .. show(want))
        end
    end

    -- links.json ---------------------------------------------------------

    local lv = load(dir, "links.json")
    local keys = {}
    for _, k in ipairs(lv.keys) do
        keys[#keys + 1] = { kid = k.kid, key = unhex(k.key_hex) }
    end
    local set = assert(link.key_set(keys))
    local by_kid = set.by_kid

    for _, s in ipairs(lv.sign) do
        local n = "links sign: " .. s.name
        local fields = {
            kid = s.kid, exp = s.exp, id = s.id, order = opt(s.order) or "",
            scope = s.prefix and s.path or "", ip = opt(s.ip) or "",
            limit = opt(s.limit) or 0,
        }
        is(link.canonical(fields, s.path), s.canonical, n .. " - canonical")

        local q, err = link.sign{
            kid = s.kid, key = by_kid[s.kid], path = s.path,
            prefix = s.prefix, exp = s.exp, id = s.id, order = opt(s.order),
            ip = opt(s.ip), limit = opt(s.limit),
        }
        is(q or err, s.query, n .. " - query")
        is(q and q:match("psd_sig=([^&]+)$"), s.sig, n .. " - sig")
        is(link.encode_path(s.path), s.url_path, n .. " - url_path")

        for i, c in ipairs(s.checks or {}) do
            local st = link.verify(s.query, c.path, opt(c.client), {
                keys = set, now = c.now, skew = c.skew, max_ttl = c.max_ttl,
            })
            is(st, c.status, format("%s - check %d (%s)", n, i,
                                    c.note or c.path))
        end
    end

    for _, v in ipairs(lv.verify) do
        local st = link.verify(v.query, v.path, opt(v.client), {
            keys = set, now = v.now, skew = v.skew, max_ttl = v.max_ttl,
        })
        is(st, v.status, "links verify: " .. v.name)
    end

    for _, c in ipairs(lv.cidr) do
        local b = cidr.parse_cidr(c.text)
        is(b ~= nil, c.valid, "links cidr: " .. show(c.text))
        if b then
            is(cidr.format_cidr(b), c.text, "links cidr: " .. show(c.text)
                                            .. " formats back")
        end
    end

    for _, c in ipairs(lv.cidr_match) do
        local b, ip = cidr.parse_cidr(c.cidr), cidr.parse_ip(c.ip)
        is(b ~= nil and ip ~= nil and cidr.match(b, ip), c.match,
           "links cidr_match: " .. c.cidr .. " " .. c.ip)
    end

    -- webhooks.json ------------------------------------------------------

    local wv = load(dir, "webhooks.json")

    for _, v in ipairs(wv.stripe) do
        local _, st = webhook.stripe_verify(opt(v.header), v.body, v.secrets,
                                            { now = v.now })
        is(st, v.expect, "webhooks stripe: " .. v.name)
        if v.signers then
            is(webhook.stripe_header(v.signers, v.timestamp, v.body),
               v.header, "webhooks stripe: " .. v.name .. " - signed")
        end
    end

    for _, v in ipairs(wv.standard) do
        local _, st = webhook.standard_verify(opt(v.id), opt(v.timestamp),
                                              opt(v.signature), v.body,
                                              v.secrets,
                                              { now = v.now, secrets = true })
        is(st, v.expect, "webhooks standard: " .. v.name)
        if v.signers then
            local ks = {}
            for i, s in ipairs(v.signers) do
                ks[i] = webhook.standard_key(s)
            end
            is(webhook.standard_header(ks, v.id, tonumber(v.timestamp),
                                       v.body),
               v.signature, "webhooks standard: " .. v.name .. " - signed")
        end
    end

    -- cards.json ---------------------------------------------------------

    local cv = load(dir, "cards.json")

    for _, c in ipairs(cv.cases) do
        local n = "cards: " .. (c.note or c.input)
        local got, status, info = card.parse(c.input)
        is(got and "ok" or status, c.status, n .. " - status")
        is(got and got.brand or info.brand, c.brand, n .. " - brand")
        if got then
            is(got.digits, c.digits, n .. " - digits")
            is(got.first6, c.first6, n .. " - first6")
            is(got.last4, c.last4, n .. " - last4")
        end
    end

    -- rules (docs/rules.md) ----------------------------------------------

    local rules = {
        { "count() by $a, $b over 7d >= 1",
          "count(requests) by $a, $b over 1w >= 1" },
        { "count()by $a over 1h>3", "count(requests) by $a over 1h > 3" },
        { "sum($arg_amount) by $http_x_email over 5400 >= 0100000",
          "sum($arg_amount) by $http_x_email over 1h30m >= 100000" },
        { " distinct( $psd_card_fingerprint ) by\t$remote_addr over 1h > 3 ",
          "distinct($psd_card_fingerprint) by $remote_addr over 1h > 3" },
        { "count(payment_failed) by $psd_card_fingerprint over 1d > 3",
          "count(payment_failed) by $psd_card_fingerprint over 1d > 3" },
    }
    for _, r in ipairs(rules) do
        local rule, err = fraud.parse_rule(r[1])
        is(rule and fraud.format_rule(rule) or err, r[2],
           "rules: format " .. show(r[1]))
    end

    local errors = {
        { "avg($x) by $a over 1h > 1",
          "expected \"count\", \"distinct\" or \"sum\" at column 1" },
        { "count by $a over 1h > 1", "expected \"(\" at column 7" },
        { "count(-) by $a over 1h > 1",
          "expected an event, a $variable or \")\" at column 7" },
        { "count(refunds) by $a over 1h > 1",
          "unknown event \"refunds\" at column 7" },
        { "sum() by $a over 1h > 1", "\"sum\" needs a $variable at column 5" },
        { "sum($) by $a over 1h > 1",
          "expected a variable name after \"$\" at column 6" },
        { "sum($x by $a over 1h > 1", "expected \")\" at column 8" },
        { "sum($x) $a over 1h > 1", "expected \"by\" at column 9" },
        { "sum($x) by a over 1h > 1", "expected a $variable at column 12" },
        { "sum($x) by $a, $A over 1h > 1",
          "duplicate key \"$a\" at column 16" },
        { "sum($x) by $a $b over 1h > 1", "expected \"over\" at column 15" },
        { "sum($x) by $a over", "expected a duration like 1h at column 19" },
        { "sum($x) by $a over 30m1h > 1",
          "invalid duration \"30m1h\" at column 20" },
        { "sum($x) by $a over 1500ms > 1",
          "window must be whole seconds at column 20" },
        { "sum($x) by $a over 5w > 1",
          "window must be from 1s to 30d at column 20" },
        { "sum($x) by $a over 1h = 1",
          "expected >, >=, <, <= or == at column 23" },
        { "sum($x) by $a over 1h > -1", "expected a number at column 25" },
        { "sum($x) by $a over 1h > 9007199254740992",
          "number larger than 9007199254740991 at column 25" },
        { "distinct($x) by $a over 1h >= 1000",
          "distinct threshold must be below 1000 at column 31" },
        { "sum($x) by $a over 1h > 3 block",
          "unexpected text after the number at column 27" },
        { "count() by $a, $b, $c, $d, $e over 1h > 1",
          "more than 4 keys at column 28" },
        { "count() by $a over 1h >> 1", "expected a number at column 24" },
    }
    for _, e in ipairs(errors) do
        local rule, err = fraud.parse_rule(e[1])
        is(rule and "parsed" or err, e[2], "rules: error " .. show(e[1]))
    end

    -- rates and durations ------------------------------------------------

    local rates = { { "3r/s", 333333 }, { "1r/m", 60000000 },
                    { "10000r/s", 100 }, { "10001r/s", nil },
                    { "0r/s", nil }, { "2r/h", 1800000000 },
                    { "1r/d", 86400000000 }, { "1 r/s", nil },
                    { "001r/s", 1000000 } }
    for _, r in ipairs(rates) do
        local p = rate.parse(r[1])
        is(p and p.interval, r[2], "rate " .. r[1])
    end

    local durations = { { "1h30m", 5400000 }, { "30", 30000 },
                        { "1s500ms", 1500 }, { "30m1h", nil },
                        { "1h30", nil }, { "", nil }, { "7d", 604800000 },
                        { "1w", 604800000 } }
    for _, d in ipairs(durations) do
        is(rate.parse_duration(d[1]), d[2], "duration " .. show(d[1]))
    end

    -- crypto --------------------------------------------------------------

    is(crypto.hex(crypto.sha256("abc")),
       "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
       "sha256")
    is(crypto.b64url_decode("AB"), nil, "b64url: nonzero spare bits refused")
    is(crypto.b64url_decode("AA"), "\0", "b64url: one byte")
    is(crypto.b64_decode("AA=="), "\0", "b64: padded")
    is(crypto.b64_decode("AA"), nil, "b64: unpadded refused")
    is(#crypto.random_base62(22), 22, "random base62 id")
end


return _M
