-- psd.limit: the rate limits of psd_limit_zone / psd_limit, in Lua.  The
-- same GCRA script text (psd.scripts.gcra), the same key
-- "psd:{lim:<zone>:<key>}" and the same arguments (interval in µs, burst,
-- cost 1), so a module node and a Lua node that name the same zone with
-- the same rate and burst share one limit exactly.
--
--   local limit = require "psd.limit"
--   local lim = assert(limit.new("login", { rate = "5r/m", burst = 2,
--                                           redis = { port = 6379 } }))
--   -- access_by_lua*: as "psd_limit login nodelay;"
--   lim:access(ngx.var.binary_remote_addr, { nodelay = true })
--
--   -- or decide yourself
--   local res, err = lim:check(key)
--   -- res = { allowed, remaining, retry_after_ms, reset_after_ms, limit }
--
--   -- lua-resty-limit-traffic style
--   local delay, err = lim:incoming(key)   -- nil, "rejected" when limited

local scripts = require "psd.scripts"
local rate = require "psd.rate"
local psd_redis = require "psd.redis"

local type, tostring, ipairs = type, tostring, ipairs
local sub, find, format = string.sub, string.find, string.format
local floor, ceil = math.floor, math.ceil

local _M = { _VERSION = "0.1.0" }
local mt = { __index = _M }

local KEY_MAX = 512


--[[
name: the zone's name, as in psd_limit_zone ([A-Za-z0-9_-], 1 to 64).
opts:
  rate          "<n>r/s", "r/m", "r/h" or "r/d" (required)
  burst         0 to 1000000 (default 0)
  nodes         nginx nodes sharing the zone (default 1): the per-node
                fallback allows rate / nodes
  redis         psd.redis options or object (default 127.0.0.1:6379);
                all zones decided together must use one server
  dict          a lua_shared_dict for the per-node fallback
  failure_mode  "local" (default when dict is set), "open" (default
                otherwise) or "closed": what happens when Redis cannot
                answer
]]
function _M.new(name, opts)
    opts = opts or {}

    if type(name) ~= "string" or #name == 0 or #name > 64
       or find(name, "[^A-Za-z0-9_%-]")
    then
        return nil, "invalid limit zone name \"" .. tostring(name) .. "\""
    end

    local r = rate.parse(opts.rate)
    if not r then
        return nil, "invalid rate \"" .. tostring(opts.rate) .. "\", use"
                    .. " <n>r/s, r/m, r/h or r/d, at most 10000r/s"
    end

    local burst = opts.burst or 0
    if type(burst) ~= "number" or burst < 0 or burst > 1000000
       or burst ~= floor(burst)
    then
        return nil, "invalid burst"
    end

    local nodes = opts.nodes or 1
    if type(nodes) ~= "number" or nodes < 1 or nodes > 1000
       or nodes ~= floor(nodes)
    then
        return nil, "invalid nodes"
    end

    -- the GCRA's arithmetic stays exact below 2^50 µs (35 years)
    if burst + 1 > floor(rate.SPAN_MAX / (r.interval * nodes)) then
        return nil, "burst=" .. burst .. " is too large for rate and nodes"
                    .. " of zone \"" .. name .. "\""
    end

    local dict
    if opts.dict then
        dict = ngx.shared[opts.dict]
        if not dict then
            return nil, "no lua_shared_dict \"" .. opts.dict .. "\""
        end
    end

    local mode = opts.failure_mode or (dict and "local" or "open")
    if mode ~= "open" and mode ~= "closed" and mode ~= "local" then
        return nil, "failure_mode must be \"open\", \"closed\" or \"local\""
    end
    if mode == "local" and not dict then
        return nil, "failure_mode \"local\" needs a dict"
    end

    local red, err = psd_redis.new(opts.redis)
    if not red then
        return nil, err
    end

    return setmetatable({
        name = name,
        rate = r,
        interval = r.interval,
        burst = burst,
        nodes = nodes,
        redis = red,
        dict = dict,
        failure_mode = mode,
        interval_arg = format("%.0f", r.interval),
        burst_arg = format("%.0f", burst),
    }, mt)
end


--- the Redis key of a limit key: psd:{lim:<zone>:<key>} (key cut at 512
--- bytes, as the module does)
function _M.key(self, key)
    if #key > KEY_MAX then
        key = sub(key, 1, KEY_MAX)
    end
    return "psd:{lim:" .. self.name .. ":" .. key .. "}"
end


local function result(reply)
    if type(reply) ~= "table" or #reply ~= 4 then
        return nil
    end
    for i = 1, 4 do
        if type(reply[i]) ~= "number" then
            return nil
        end
    end
    return { allowed = reply[1] == 1, remaining = reply[2],
             retry_after_ms = reply[3], reset_after_ms = reply[4] }
end


-- the per-node limiter: rate / nodes, from the shared dict.  Reads and
-- writes are not one atomic step across workers; it only decides while
-- Redis is out of reach.
function _M.check_local(self, key)
    local dict = self.dict
    local now = ngx.now() * 1000000
    now = floor(now)
    local k = self.name .. ":" .. key
    local tat = dict:get(k)

    local res = rate.gcra(tat, now, self.interval * self.nodes, self.burst, 1)
    if not res then
        return nil, "bad arguments"
    end

    if res.allowed then
        local ttl = res.reset_after_ms / 1000
        dict:set(k, res.tat, ttl > 0.001 and ttl or 0.001)
    end

    res["local"] = true
    return res
end


--[[
Decides one request against several zones in one round trip (they must
use one Redis server): list = { { lim, key [, nodelay=, dry_run=] }, ... }.
As psd_limit: an empty key is not limited; a request counts against its
zones only if all of them let it pass (the charges of the others are given
back).  Returns a decision:
  { status = "passed" | "rejected" | "dry_run" | "error",
    limited = <entry that speaks for the headers>, remaining, reset_ms,
    retry_ms, delay_ms, fail = nil | "open" | "closed" | "local" }
]]
function _M.decide(list)
    local cmds, idx = {}, {}
    local red

    for i, e in ipairs(list) do
        local lim, key = e[1], e[2]
        if type(key) == "string" and #key > 0 then
            if #key > KEY_MAX then
                key = sub(key, 1, KEY_MAX)
                e[2] = key
            end
            red = red or lim.redis
            cmds[#cmds + 1] = { "script", scripts.gcra, 1, lim:key(key),
                                lim.interval_arg, lim.burst_arg, "1" }
            idx[i] = #cmds
        end
    end

    local d = { status = "passed", remaining = -1, delay_ms = 0 }

    if #cmds == 0 then
        return d
    end

    local replies, err = red:pipeline(cmds)
    local allowed, failed = {}, nil

    for i, e in ipairs(list) do
        local n = idx[i]
        if n then
            local res = replies and result(replies[n])
            if not res then
                failed = (replies and psd_redis.reply_error(replies[n]))
                         or err or "bad reply"
                break
            end
            d[i] = res

            -- the tightest limit speaks for the headers
            if d.remaining < 0 or res.remaining < d.remaining then
                d.remaining = res.remaining
                d.reset_ms = res.reset_after_ms
                d.limited = e
            end

            if not res.allowed then
                if e.dry_run then
                    if d.status ~= "rejected" then
                        d.status = "dry_run"
                    end
                else
                    d.status = "rejected"
                    d.limited = e
                    d.retry_ms = res.retry_after_ms
                    d.reset_ms = res.reset_after_ms
                    d.remaining = 0
                end

            else
                allowed[#allowed + 1] = e

                -- without nodelay a request inside the burst waits until
                -- the rate admits it, as limit_req does
                if not e.nodelay and not e.dry_run then
                    local delay = res.reset_after_ms
                                  - ceil(e[1].interval / 1000)
                    if delay > d.delay_ms then
                        d.delay_ms = delay
                    end
                end
            end
        end
    end

    if failed then
        local mode = list[1][1].failure_mode
        d.delay_ms = 0
        d.error = failed
        d.fail = mode

        if mode == "local" then
            d.status = "passed"
            d.remaining = -1
            d.limited = nil
            for i, e in ipairs(list) do
                if idx[i] and e[1].dict then
                    local res = e[1]:check_local(e[2])
                    if res then
                        if d.remaining < 0 or res.remaining < d.remaining
                        then
                            d.remaining = res.remaining
                            d.reset_ms = res.reset_after_ms
                            d.limited = e
                        end
                        if not res.allowed and not e.dry_run then
                            d.status = "rejected"
                            d.limited = e
                            d.retry_ms = res.retry_after_ms
                            d.remaining = 0
                        end
                    end
                end
            end
        else
            d.status = "error"
        end

        return d
    end

    if d.status == "rejected" and #allowed > 0 then
        -- the zones stand under different hash tags: give the charges
        -- back with a second script call
        local refunds = {}
        for _, e in ipairs(allowed) do
            refunds[#refunds + 1] = { "script", scripts.gcra_refund, 1,
                                      e[1]:key(e[2]), e[1].interval_arg }
        end
        local ok, rerr = red:pipeline(refunds)
        if not ok then
            d.refund_error = rerr
        end
    end

    return d
end


--- one key against this zone: { allowed, remaining, retry_after_ms,
--- reset_after_ms, limit }, or nil and an error (Redis failed)
function _M.check(self, key)
    if type(key) ~= "string" or #key == 0 then
        return { allowed = true, remaining = self.burst + 1,
                 retry_after_ms = -1, reset_after_ms = 0,
                 limit = self.burst + 1, empty_key = true }
    end

    if #key > KEY_MAX then
        key = sub(key, 1, KEY_MAX)
    end

    local res, err = self.redis:eval(scripts.gcra, 1, self:key(key),
                                     self.interval_arg, self.burst_arg, "1")
    res = res and result(res)
    if not res then
        return nil, err or "bad reply"
    end

    res.limit = self.burst + 1
    return res
end


--[[
lua-resty-limit-req style: returns the delay in seconds the request should
wait (0 with nodelay semantics when the bucket is not full), or nil and
"rejected" (plus the decision), or nil and the Redis error.
]]
function _M.incoming(self, key)
    local res, err = self:check(key)
    if not res then
        return nil, err
    end

    if not res.allowed then
        return nil, "rejected", res
    end

    local delay = res.reset_after_ms - ceil(self.interval / 1000)
    return delay > 0 and delay / 1000 or 0, res
end


--- the RateLimit-Policy and RateLimit header values for a decision
function _M.headers(self, remaining, reset_ms)
    local window = ceil(self.interval * (self.burst + 1) / 1000000)
    return format('"%s";q=%.0f;w=%.0f', self.name, self.burst + 1, window),
           format('"%s";r=%.0f;t=%.0f', self.name, remaining,
                  ceil((reset_ms or 0) / 1000))
end


--[[
What psd_limit does in the preaccess phase, for access_by_lua* (or
rewrite_by_lua*): list as for decide() (or one zone: lim:access(key,
opts)).  opts:
  status   rejection status (default 429: {"error":"rate_limited"})
  headers  true: RateLimit headers on allowed responses too
Rejected: the status with RateLimit-Policy, RateLimit and Retry-After;
Redis failed with failure mode "closed": 503; inside the burst without
nodelay: sleeps.  Sets ngx.ctx.psd_limit_status ("passed", "rejected",
"dry_run", "error") and returns the decision.
]]
function _M.access_many(list, opts)
    opts = opts or {}

    local d = _M.decide(list)
    local status = opts.status or 429

    if d.fail == "open" then
        ngx.log(ngx.WARN, "psd_limit: redis ", d.error, ", request let",
                " through unlimited")
    elseif d.fail == "closed" then
        ngx.log(ngx.ERR, "psd_limit: redis ", d.error)
        ngx.ctx.psd_limit_status = "error"
        ngx.header["Retry-After"] = "1"
        ngx.status = 503
        ngx.header["Content-Type"] = "application/json"
        ngx.print('{"error":"backend_unavailable"}\n')
        return ngx.exit(ngx.HTTP_OK)
    elseif d.fail == "local" then
        ngx.log(ngx.WARN, "psd_limit: redis ", d.error, ", decided on this",
                " node")
    end

    ngx.ctx.psd_limit_status = d.status

    if (d.status == "rejected" or opts.headers) and d.limited then
        local policy, limit = d.limited[1]:headers(d.remaining, d.reset_ms)
        ngx.header["RateLimit-Policy"] = policy
        ngx.header["RateLimit"] = limit
    end

    if d.status == "rejected" then
        ngx.log(ngx.INFO, "psd_limit: rejected by zone \"",
                d.limited[1].name, "\"")
        local retry = d.retry_ms
        ngx.header["Retry-After"] = tostring(
            (retry == nil or retry < 0) and 1 or ceil(retry / 1000))

        if status ~= 429 then
            return ngx.exit(status)
        end

        ngx.status = 429
        ngx.header["Content-Type"] = "application/json"
        if ngx.req.get_method() ~= "HEAD" then
            ngx.print('{"error":"rate_limited"}\n')
        else
            ngx.send_headers()
        end
        return ngx.exit(ngx.HTTP_OK)
    end

    if d.delay_ms > 0 then
        ngx.sleep(d.delay_ms / 1000)
    end

    return d
end


--- psd_limit with this one zone: lim:access(key, { nodelay, dry_run,
--- status, headers })
function _M.access(self, key, opts)
    opts = opts or {}
    return _M.access_many({ { self, key, nodelay = opts.nodelay,
                              dry_run = opts.dry_run } }, opts)
end


return _M
