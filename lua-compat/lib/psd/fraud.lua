-- psd.fraud: the fraud velocity rules and block lists of psd_fraud_rule,
-- psd_fraud, psd_fraud_blocklist and psd_fraud_admin, in Lua, on the
-- module's Redis layout (docs/rules.md):
--
--   counters   psd:{fr:<tag>}:<rule name>.<8 hex of SHA-256(canonical rule)>
--              <tag> = base64url(SHA-256(spec "\n<len>:<value>"...)[0..16])
--              spec  = the rule's key variable names joined by ","
--   members    base64url(SHA-256(value)[0..16]) (distinct)
--   lists      psd:{bl:ip} (canonical CIDRs), psd:{bl:fingerprint},
--              psd:{bl:email} (value digests)
--
-- and the same window script (psd.scripts.window), so a request counted by
-- a module node counts on a Lua node and the reverse.
--
--   local fraud = require "psd.fraud"
--   local f = assert(fraud.new{
--       rules = {
--           { "cards_per_ip",
--             "distinct($psd_card_fingerprint) by $remote_addr over 1h > 3",
--             "block" },
--       },
--       blocklists = { { "ip", "remote_addr" } },
--       redis = { port = 6379 },
--   })
--   f:access()                -- access_by_lua*: as "psd_fraud on;"
--   local d = f:evaluate()    -- or decide yourself

local crypto = require "psd.crypto"
local cidr = require "psd.cidr"
local rate = require "psd.rate"
local scripts = require "psd.scripts"
local psd_redis = require "psd.redis"

local type, tostring, ipairs = type, tostring, ipairs
local byte, sub, find, format, lower = string.byte, string.sub, string.find,
                                       string.format, string.lower
local concat = table.concat
local floor = math.floor

local _M = { _VERSION = "0.1.0" }
local mt = { __index = _M }

_M.VAR_MAX = 64
_M.KEYS_MAX = 4
_M.WINDOW_MAX = 30 * 86400
_M.THRESHOLD_MAX = 9007199254740991
_M.DISTINCT_CAP = 1000

local aggs = { count = true, distinct = true, sum = true }
local events = { requests = true, payment_failed = true,
                 payment_succeeded = true }
local cmps = { [">"] = true, [">="] = true, ["<"] = true, ["<="] = true,
               ["=="] = true }
local actions = { allow = 1, review = 2, challenge = 3, block = 4 }
local decisions = { [0] = "pass", "allow", "review", "challenge", "block" }


-- the rule language (psd_rule.c) ---------------------------------------

local function is_space(c)
    return c == 32 or c == 9 or c == 13 or c == 10
end

local function is_word(c)
    return c and ((c >= 97 and c <= 122) or (c >= 65 and c <= 90)
                  or (c >= 48 and c <= 57) or c == 95)
end


--[[
Parses a rule as psd_rule_parse() does.  Returns
{ agg, event ("" for a variable), var, keys = {...}, window (seconds),
  cmp, threshold }
or nil, the message ("... at column N") and N.
]]
function _M.parse_rule(text)
    if type(text) ~= "string" then
        return nil, "rule must be a string at column 1", 1
    end

    local len = #text
    local p = 1
    local rule = { event = "", var = "", keys = {} }

    local function fail(at, msg)
        return nil, msg .. " at column " .. at, at
    end

    local function skip_space()
        while p <= len and is_space(byte(text, p)) do
            p = p + 1
        end
    end

    local function word()
        local s = p
        while p <= len and is_word(byte(text, p)) do
            p = p + 1
        end
        return sub(text, s, p - 1)
    end

    local function quote(w)
        return #w > 32 and sub(w, 1, 32) or w
    end

    local function variable()
        if p > len or byte(text, p) ~= 36 then
            return fail(p, "expected a $variable")
        end
        p = p + 1
        local at = p
        local name = word()
        if #name == 0 then
            return fail(at, "expected a variable name after \"$\"")
        end
        if #name > _M.VAR_MAX then
            return fail(at, "variable name longer than 64 characters")
        end
        return name
    end

    local function punct(c)
        skip_space()
        if p > len or sub(text, p, p) ~= c then
            return fail(p, "expected \"" .. c .. "\"")
        end
        p = p + 1
        return true
    end

    local function keyword(kw)
        skip_space()
        local at = p
        if word() ~= kw then
            return fail(at, "expected \"" .. kw .. "\"")
        end
        return true
    end

    local ok, err, col

    skip_space()
    local at = p
    local agg = word()
    if not aggs[agg] then
        return fail(at, "expected \"count\", \"distinct\" or \"sum\"")
    end
    rule.agg = agg

    ok, err, col = punct("(")
    if not ok then
        return nil, err, col
    end

    -- the operand
    skip_space()
    at = p
    if at <= len and byte(text, at) == 36 then
        local name
        name, err, col = variable()
        if not name then
            return nil, err, col
        end
        rule.var = name

    elseif agg ~= "count" then
        return fail(at, "\"" .. agg .. "\" needs a $variable")

    elseif at <= len and byte(text, at) == 41 then
        rule.event = "requests"

    else
        local w = word()
        if #w == 0 then
            return fail(at, "expected an event, a $variable or \")\"")
        end
        if not events[w] then
            return fail(at, "unknown event \"" .. quote(w) .. "\"")
        end
        rule.event = w
    end

    ok, err, col = punct(")")
    if not ok then
        return nil, err, col
    end

    ok, err, col = keyword("by")
    if not ok then
        return nil, err, col
    end

    -- the keys
    while true do
        skip_space()
        at = p

        if #rule.keys == _M.KEYS_MAX then
            return fail(at, "more than 4 keys")
        end

        local name
        name, err, col = variable()
        if not name then
            return nil, err, col
        end

        -- nginx variable names ignore case
        for _, k in ipairs(rule.keys) do
            if lower(k) == lower(name) then
                return fail(at, "duplicate key \"$" .. k .. "\"")
            end
        end

        rule.keys[#rule.keys + 1] = name

        skip_space()
        if p > len or byte(text, p) ~= 44 then
            break
        end
        p = p + 1
    end

    ok, err, col = keyword("over")
    if not ok then
        return nil, err, col
    end

    -- the window
    skip_space()
    at = p
    local w = word()
    if #w == 0 then
        return fail(at, "expected a duration like 1h")
    end

    local ms = rate.parse_duration(w)
    if not ms then
        return fail(at, "invalid duration \"" .. quote(w) .. "\"")
    end
    if ms % 1000 ~= 0 then
        return fail(at, "window must be whole seconds")
    end
    if ms < 1000 or ms > _M.WINDOW_MAX * 1000 then
        return fail(at, "window must be from 1s to 30d")
    end
    rule.window = ms / 1000

    -- the comparison
    skip_space()
    at = p
    local n = 0
    while p <= len and n < 2 do
        local c = byte(text, p)
        if c ~= 60 and c ~= 62 and c ~= 61 then
            break
        end
        p = p + 1
        n = n + 1
    end

    local cmp = sub(text, at, at + n - 1)
    if not cmps[cmp] and n == 2 then
        -- ">>" is ">" then a bad number, not a bad comparison
        p = p - 1
        cmp = sub(text, at, at)
    end
    if not cmps[cmp] then
        return fail(at, "expected >, >=, <, <= or ==")
    end
    rule.cmp = cmp

    -- the threshold
    skip_space()
    at = p
    local c = byte(text, p)
    if not c or c < 48 or c > 57 then
        return fail(at, "expected a number")
    end

    local v = 0
    while p <= len do
        c = byte(text, p)
        if c < 48 or c > 57 then
            break
        end
        if v > floor((_M.THRESHOLD_MAX - (c - 48)) / 10) then
            return fail(at, "number larger than 9007199254740991")
        end
        v = v * 10 + (c - 48)
        p = p + 1
    end

    if agg == "distinct" and v >= _M.DISTINCT_CAP then
        return fail(at, "distinct threshold must be below 1000")
    end
    rule.threshold = v

    skip_space()
    if p <= len then
        return fail(p, "unexpected text after the number")
    end

    return rule
end


--- the canonical text of a rule (psd_rule_format)
function _M.format_rule(rule)
    local keys = {}
    for i, k in ipairs(rule.keys) do
        keys[i] = "$" .. k
    end

    local operand = rule.event ~= "" and rule.event or "$" .. rule.var

    return format("%s(%s) by %s over %s %s %.0f", rule.agg, operand,
                  concat(keys, ", "),
                  rate.format_duration(rule.window * 1000), rule.cmp,
                  rule.threshold)
end


--- 1 if a counter at value makes the rule fire (psd_rule_matches)
function _M.matches(rule, value)
    local c, t = rule.cmp, rule.threshold
    if c == ">" then
        return value > t
    elseif c == ">=" then
        return value >= t
    elseif c == "<" then
        return value < t
    elseif c == "<=" then
        return value <= t
    end
    return value == t
end


-- the key layout ------------------------------------------------------

--- 16 bytes of SHA-256, base64url: 22 characters
local function digest(s)
    return crypto.b64url_encode(sub(crypto.sha256(s), 1, 16))
end

_M.digest = digest


--- "<name>.<first 8 hex of SHA-256 of the canonical rule>"
function _M.suffix(name, rule)
    return name .. "." .. sub(crypto.hex(crypto.sha256(_M.format_rule(rule))),
                              1, 8)
end


--- the group spec of a rule: its key names joined by ","
function _M.spec(rule)
    return concat(rule.keys, ",")
end


--- the hash tag of a group for these key values (in key order)
function _M.tag(spec, values)
    local parts = { spec }
    for i, v in ipairs(values) do
        parts[i + 1] = "\n" .. #v .. ":" .. v
    end
    return digest(concat(parts))
end


--- the counter key of a rule for a tag
function _M.counter_key(tag, suffix)
    return "psd:{fr:" .. tag .. "}:" .. suffix
end


-- objects ---------------------------------------------------------------

local lists = { ip = true, fingerprint = true, email = true }


--[[
opts:
  rules          { { name, rule, action [, failure_mode] }, ... } or
                 { { name =, rule =, action =, failure_mode = }, ... }
                 (action: block, review, challenge, allow)
  blocklists     { { list, variable }, ... }: list "ip", "fingerprint" or
                 "email", the variable's name (without "$") or a function
                 returning the value
  failure_mode   "open" (default) or "closed"
  block_status   402 or 403 (default)
  redis          psd.redis options or object
]]
function _M.new(opts)
    opts = opts or {}

    local self = {
        rules = {},
        groups = {},
        blocklists = {},
        failure_mode = opts.failure_mode or "open",
        block_status = opts.block_status or 403,
    }

    if self.failure_mode ~= "open" and self.failure_mode ~= "closed" then
        return nil, "failure_mode must be \"open\" or \"closed\""
    end

    if self.block_status ~= 402 and self.block_status ~= 403 then
        return nil, "block_status must be 402 or 403"
    end

    local names = {}

    for _, r in ipairs(opts.rules or {}) do
        local name = r.name or r[1]
        local text = r.rule or r[2]
        local action = r.action or r[3]
        local fmode = r.failure_mode or r[4]

        if type(name) ~= "string" or #name == 0 or #name > 64
           or find(name, "[^A-Za-z0-9_%-]")
        then
            return nil, "invalid fraud rule name \"" .. tostring(name)
                        .. "\", use up to 64 letters, digits, \"_\" or \"-\""
        end

        if names[name] then
            return nil, "duplicate fraud rule \"" .. name .. "\""
        end
        names[name] = true

        local rule, err = _M.parse_rule(text)
        if not rule then
            return nil, "invalid fraud rule \"" .. name .. "\": " .. err
        end

        if not actions[action] then
            return nil, "invalid action \"" .. tostring(action)
                        .. "\" in fraud rule \"" .. name .. "\", it must be"
                        .. " \"block\", \"review\", \"challenge\" or"
                        .. " \"allow\""
        end

        if fmode ~= nil and fmode ~= "open" and fmode ~= "closed" then
            return nil, "invalid failure_mode in fraud rule \"" .. name .. "\""
        end

        rule.name = name
        rule.action = action
        rule.failure_mode = fmode
        rule.suffix = _M.suffix(name, rule)
        rule.kind = rule.agg == "distinct" and "d"
                    or rule.agg == "sum" and "s" or "c"
        rule.window_arg = format("%.0f", rule.window)

        -- rules keyed by the same variables share a hash tag and a call
        local spec = _M.spec(rule)
        local group
        for gi, g in ipairs(self.groups) do
            if g.spec == spec then
                group = gi
                break
            end
        end
        if not group then
            if #self.groups == 16 then
                return nil, "fraud rules use more than 16 different keys"
            end
            self.groups[#self.groups + 1] = { spec = spec, keys = rule.keys,
                                              rules = {} }
            group = #self.groups
        end

        rule.group = group
        local g = self.groups[group]
        g.rules[#g.rules + 1] = rule
        self.rules[#self.rules + 1] = rule
    end

    for _, b in ipairs(opts.blocklists or {}) do
        local list = b.list or b[1]
        local value = b.value or b[2]
        if not lists[list] then
            return nil, "invalid block list \"" .. tostring(list)
                        .. "\", it must be \"ip\", \"fingerprint\" or"
                        .. " \"email\""
        end
        if type(value) == "string" then
            value = value:gsub("^%$", "")
        elseif type(value) ~= "function" then
            return nil, "a block list needs a variable name or a function"
        end
        self.blocklists[#self.blocklists + 1] = { list = list,
                                                  value = value }
    end

    local err
    self.redis, err = psd_redis.new(opts.redis)
    if not self.redis then
        return nil, err
    end

    return setmetatable(self, mt)
end


local function lookup(vars, name)
    local v
    if vars == nil then
        v = ngx.var[name]
    elseif type(vars) == "function" then
        v = vars(name)
    else
        v = vars[name]
        if v == nil then
            v = vars[lower(name)]
        end
    end
    if v == nil then
        return ""
    end
    return tostring(v)
end


-- every prefix of an address as canonical CIDR text: one SMISMEMBER
local function ip_prefixes(value)
    local ip = cidr.parse_ip(value)
    if not ip then
        return nil
    end

    local bits = ip.family == 4 and 32 or 128
    local out = {}
    for n = bits, 0, -1 do
        out[#out + 1] = cidr.format_cidr(cidr.prefix_of(ip, n))
    end
    return out
end


--[[
Counts the request and decides, as psd_fraud does (one round trip): vars
is nil (nginx variables through ngx.var), a table name -> value, or a
function(name) -> value.  Returns
  { decision = "pass" | "allow" | "review" | "challenge" | "block" |
               "error", rule = <name or "blocklist_<list>">,
    values = { [rule name] = counter value }, failed = <error or nil> }
]]
function _M.evaluate(self, vars)
    local cmds, calls = {}, {}
    local cap = format("%d", _M.DISTINCT_CAP)

    for gi, g in ipairs(self.groups) do
        local values, skip = {}, false
        for k, name in ipairs(g.keys) do
            local v = lookup(vars, name)
            if v == "" then
                -- an empty key is not counted, as with limit_req
                skip = true
                break
            end
            values[k] = v
        end

        if not skip then
            local tag = _M.tag(g.spec, values)
            local keys, args = {}, { "", cap }

            for _, rule in ipairs(g.rules) do
                keys[#keys + 1] = _M.counter_key(tag, rule.suffix)

                local val = rule.var ~= "" and lookup(vars, rule.var) or ""
                local arg

                if rule.kind == "d" then
                    arg = #val > 0 and digest(val) or ""

                elseif rule.kind == "s" then
                    -- amounts in minor units; anything else adds nothing
                    if #val == 0 or #val > 15 or find(val, "[^0-9]") then
                        arg = "0"
                    else
                        arg = val
                    end

                else
                    -- requests count here; count($v) where $v is not
                    -- empty; payment events come from record()
                    arg = (rule.event == "requests"
                           or (rule.event == "" and #val > 0)) and "1" or "0"
                end

                args[#args + 1] = rule.kind
                args[#args + 1] = rule.window_arg
                args[#args + 1] = arg
            end

            local cmd = { "script", scripts.window, #keys }
            for _, k in ipairs(keys) do
                cmd[#cmd + 1] = k
            end
            for _, a in ipairs(args) do
                cmd[#cmd + 1] = a
            end

            cmds[#cmds + 1] = cmd
            calls[gi] = #cmds
        end
    end

    local bl_calls = {}

    for i, b in ipairs(self.blocklists) do
        local v = type(b.value) == "function" and b.value() or lookup(vars,
                                                                    b.value)
        v = v and tostring(v) or ""

        if #v > 0 then
            if b.list == "ip" then
                local prefixes = ip_prefixes(v)
                if prefixes then
                    local cmd = { "smismember", "psd:{bl:ip}" }
                    for _, p in ipairs(prefixes) do
                        cmd[#cmd + 1] = p
                    end
                    cmds[#cmds + 1] = cmd
                    bl_calls[i] = #cmds
                end
            else
                cmds[#cmds + 1] = { "sismember", "psd:{bl:" .. b.list .. "}",
                                    digest(v) }
                bl_calls[i] = #cmds
            end
        end
    end

    local res = { decision = "pass", values = {} }

    if #cmds == 0 then
        return res
    end

    local replies, err = self.redis:pipeline(cmds)
    local failed, closed = false, false
    local level = 0

    local function decide(action, name)
        -- allow wins over everything; otherwise the most severe action
        if res.decision == "allow" then
            return
        end
        if action == 1 or action > level then
            level = action
            res.decision = decisions[action]
            res.rule = name
        end
    end

    for gi, g in ipairs(self.groups) do
        local n = calls[gi]
        if n then
            local reply = replies and replies[n]
            local rerr = replies and psd_redis.reply_error(reply)
            if rerr then
                ngx.log(ngx.ERR, "psd_fraud: redis answered \"",
                        sub(rerr, 1, 200), "\"")
            end

            for k, rule in ipairs(g.rules) do
                local v = (type(reply) == "table" and not rerr) and reply[k]
                if type(v) ~= "number" then
                    failed = true
                    if (rule.failure_mode or self.failure_mode) == "closed"
                    then
                        closed = true
                    end
                else
                    res.values[rule.name] = v
                    if _M.matches(rule, v) then
                        decide(actions[rule.action], rule.name)
                    end
                end
            end
        end
    end

    for i, b in ipairs(self.blocklists) do
        local n = bl_calls[i]
        if n then
            local reply = replies and replies[n]
            if reply == nil or psd_redis.reply_error(reply) then
                failed = true
                closed = closed or self.failure_mode == "closed"
            else
                local hit = reply == 1
                if type(reply) == "table" then
                    for _, x in ipairs(reply) do
                        if x == 1 then
                            hit = true
                            break
                        end
                    end
                end
                if hit then
                    decide(actions.block, "blocklist_" .. b.list)
                end
            end
        end
    end

    if failed then
        res.failed = err or "redis error"
        if res.decision ~= "allow" and res.decision ~= "block" then
            if closed then
                res.decision = "error"
                res.closed = true
            else
                ngx.log(ngx.WARN, "psd_fraud: redis ", res.failed,
                        ", rules not evaluated let the request through")
            end
        end
    end

    return res
end


--[[
What psd_fraud does in the access phase, for access_by_lua*: evaluates,
then blocks with block_status and {"error":"payment_blocked"} (the rule
only in the log), or passes a review/challenge decision to the
application as the request header X-PSD-Fraud: "<decision>; rule=<name>"
(an X-PSD-Fraud the client sent is renamed X-Client-X-PSD-Fraud).  Sets
ngx.ctx.psd_fraud_decision and ngx.ctx.psd_fraud_rule; returns the result.
]]
function _M.access(self, vars)
    local sent = ngx.req.get_headers()["X-PSD-Fraud"]
    if sent then
        ngx.req.clear_header("X-PSD-Fraud")
        ngx.req.set_header("X-Client-X-PSD-Fraud", sent)
    end

    local res = self:evaluate(vars)
    ngx.ctx.psd_fraud_decision = res.decision
    ngx.ctx.psd_fraud_rule = res.rule

    local function send(status, code, retry)
        ngx.status = status
        ngx.header["Content-Type"] = "application/json"
        if retry then
            ngx.header["Retry-After"] = retry
        end
        if ngx.req.get_method() == "HEAD" then
            ngx.send_headers()
        else
            ngx.print('{"error":"', code, '"}\n')
        end
        return ngx.exit(ngx.HTTP_OK)
    end

    if res.closed then
        return send(503, "backend_unavailable", "1")
    end

    if res.decision == "block" then
        -- the client learns no rule name: that would teach an attacker
        ngx.log(ngx.INFO, "psd_fraud: blocked by rule \"", res.rule, "\"")
        return send(self.block_status, "payment_blocked")
    end

    if res.decision == "review" or res.decision == "challenge" then
        ngx.req.set_header("X-PSD-Fraud", res.decision .. "; rule=" .. res.rule)
    end

    return res
end


--[[
Records a payment outcome as psd_fraud_admin does: event
"payment_failed" or "payment_succeeded", keys = { variable name ->
value } (names as the rules write them, without "$").  Returns the number
of counters recorded, or nil and an error.
]]
function _M.record(self, event, keys)
    if event ~= "payment_failed" and event ~= "payment_succeeded" then
        return nil, "invalid event"
    end
    if type(keys) ~= "table" then
        return nil, "keys must be a table"
    end

    local cmds = {}
    local cap = format("%d", _M.DISTINCT_CAP)

    for _, rule in ipairs(self.rules) do
        if rule.event == event then
            local values, ok = {}, true
            for k, name in ipairs(rule.keys) do
                local v = keys[name]
                if type(v) ~= "string" or #v == 0 then
                    ok = false
                    break
                end
                values[k] = v
            end

            if ok then
                local key = _M.counter_key(_M.tag(_M.spec(rule), values),
                                           rule.suffix)
                cmds[#cmds + 1] = { "script", scripts.window, 1, key, "", cap,
                                    "c", rule.window_arg, "1" }
            end
        end
    end

    if #cmds == 0 then
        return 0
    end

    local replies, err = self.redis:pipeline(cmds)
    if not replies then
        return nil, err
    end

    for i = 1, #cmds do
        local rerr = psd_redis.reply_error(replies[i])
        if rerr then
            return nil, rerr
        end
    end

    return #cmds
end


-- the member of a block list value, as psd_fraud_admin stores it
local function list_member(list, value)
    if type(value) ~= "string" or #value == 0 or #value > 512 then
        return nil
    end

    if list == "ip" then
        -- a bare address is its own /32 or /128
        local block = cidr.parse_cidr(value)
        if not block then
            local ip = cidr.parse_ip(value)
            if not ip then
                return nil
            end
            block = { net = ip, prefix = ip.family == 4 and 32 or 128 }
        end
        return cidr.format_cidr(block)
    end

    return digest(value)
end

_M.list_member = list_member


local function list_change(self, cmd, list, value)
    if not lists[list] then
        return nil, "invalid block list"
    end

    local member = list_member(list, value)
    if not member then
        return nil, "invalid value"
    end

    local res, err = self.redis:command(cmd, "psd:{bl:" .. list .. "}",
                                        member)
    if res == nil and err then
        return nil, err
    end

    return true
end


--- adds a value (an address or canonical CIDR for "ip") to a block list
function _M.blocklist_add(self, list, value)
    return list_change(self, "sadd", list, value)
end


--- removes a value from a block list
function _M.blocklist_remove(self, list, value)
    return list_change(self, "srem", list, value)
end


return _M
