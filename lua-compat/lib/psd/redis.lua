-- psd.redis: the Redis side of lua-compat, on cosockets through
-- lua-resty-redis.  Debian's package lua-nginx-redis installs that client
-- as "nginx.redis"; OpenResty and LuaRocks install it as "resty.redis".
-- Both are tried.
--
-- A server is described once (host/port or a UNIX socket, timeout,
-- password, db, keepalive pool) and every call takes a pooled connection,
-- runs, and puts it back.  Scripts are called with EVALSHA by the SHA-1 of
-- their text; on NOSCRIPT they are loaded and the call is made again.
-- Module nodes load the very same texts (psd.scripts), so either side's
-- SCRIPT LOAD serves the other.

local crypto = require "psd.crypto"

local type, tostring, ipairs, select = type, tostring, ipairs, select
local sub = string.sub
local null = ngx and ngx.null

local _M = { _VERSION = "0.1.0" }
local mt = { __index = _M }


local function load_client()
    for _, name in ipairs({ "resty.redis", "nginx.redis" }) do
        local ok, mod = pcall(require, name)
        if ok and type(mod) == "table" and mod.new then
            return mod, name
        end
    end
    return nil
end


--- the lua-resty-redis module and the name it was found under, or nil
function _M.client()
    return load_client()
end


local scripts_sha = setmetatable({}, { __mode = "k" })

--- the SHA-1 (hex) of a script text, as Redis computes it
function _M.sha1(text)
    local sha = scripts_sha[text]
    if not sha then
        sha = crypto.hex(crypto.sha1(text))
        scripts_sha[text] = sha
    end
    return sha
end


--[[
opts:
  host (default "127.0.0.1"), port (6379), or socket ("unix:/path")
  timeout          ms for connect, send and read (default 1000)
  password, user   AUTH on every new connection
  db               SELECT on every new connection
  pool             keepalive pool name (default host:port:db)
  pool_size        connections kept per worker (default 64)
  keepalive        ms an idle connection is kept (default 60000)
  connect          function() -> red, err: bring your own connection
                   (TLS, Sentinel, ...); release(red) then puts it back
  release          function(red)
]]
function _M.new(opts)
    opts = opts or {}

    if type(opts) ~= "table" then
        return nil, "redis options must be a table"
    end

    -- an object of ours passes through
    if getmetatable(opts) == mt then
        return opts
    end

    local client, name = load_client()
    if not client and not opts.connect then
        return nil, "lua-resty-redis not found (Debian: apt-get install"
                    .. " lua-nginx-redis; module \"nginx.redis\")"
    end

    local self = {
        client = client,
        client_name = name,
        host = opts.host or "127.0.0.1",
        port = opts.port or 6379,
        socket = opts.socket,
        timeout = opts.timeout or 1000,
        password = opts.password,
        user = opts.user,
        db = opts.db,
        pool_size = opts.pool_size or 64,
        keepalive = opts.keepalive or 60000,
        connect_fn = opts.connect,
        release_fn = opts.release,
    }

    self.pool = opts.pool
                or ((self.socket or (self.host .. ":" .. self.port))
                    .. ":" .. tostring(self.db or 0))

    return setmetatable(self, mt)
end


--- a connected client, or nil and an error
function _M.connect(self)
    if self.connect_fn then
        return self.connect_fn()
    end

    local red, err = self.client:new()
    if not red then
        return nil, err
    end

    red:set_timeout(self.timeout)

    local ok
    local copts = { pool = self.pool, pool_size = self.pool_size }

    if self.socket then
        ok, err = red:connect(self.socket, copts)
    else
        ok, err = red:connect(self.host, self.port, copts)
    end

    if not ok then
        return nil, "connect: " .. tostring(err)
    end

    local reused = red:get_reused_times()

    if reused == 0 then
        if self.password then
            if self.user then
                ok, err = red:auth(self.user, self.password)
            else
                ok, err = red:auth(self.password)
            end
            if not ok then
                red:close()
                return nil, "auth: " .. tostring(err)
            end
        end

        if self.db and self.db ~= 0 then
            ok, err = red:select(self.db)
            if not ok then
                red:close()
                return nil, "select: " .. tostring(err)
            end
        end
    end

    return red
end


--- puts a connection back into the pool (or closes it)
function _M.release(self, red)
    if self.release_fn then
        return self.release_fn(red)
    end

    local ok = red:set_keepalive(self.keepalive, self.pool_size)
    if not ok then
        red:close()
    end
end


local function is_noscript(err)
    return type(err) == "string" and sub(err, 1, 8) == "NOSCRIPT"
end


-- a reply that is a Redis error: lua-resty-redis gives false, err for a
-- single command and {false, err} inside a pipeline
local function reply_error(res)
    if type(res) == "table" and res[1] == false then
        return res[2] or "error"
    end
    return nil
end

_M.reply_error = reply_error


--- runs one script: EVALSHA, and on NOSCRIPT EVAL (which caches it)
function _M.eval(self, text, nkeys, ...)
    local red, err = self:connect()
    if not red then
        return nil, err
    end

    local res
    res, err = red:evalsha(_M.sha1(text), nkeys, ...)

    if not res and is_noscript(err) then
        res, err = red:eval(text, nkeys, ...)
    end

    if res == nil then
        -- a network error or timeout: the client closed the connection
        return nil, err
    end

    self:release(red)

    if res == false then
        return nil, err
    end

    return res
end


--[[
Runs a list of commands in one write and one round trip:
  cmds = { { "evalsha", <script text>, nkeys, args... }, { "hget", k, f }, ... }
A command named "script" is run as EVALSHA of its text.  Replies come
back in order; an error reply is { false, "<message>" }.  If a script is
not cached, it is loaded and the whole pipeline runs again once (a
NOSCRIPT reply means that script did not run).
]]
function _M.pipeline(self, cmds)
    local red, err = self:connect()
    if not red then
        return nil, err
    end

    for attempt = 1, 2 do
        red:init_pipeline(#cmds)

        for i = 1, #cmds do
            local c = cmds[i]
            if c[1] == "script" then
                red:evalsha(_M.sha1(c[2]), select(3, unpack(c)))
            else
                red[c[1]](red, select(2, unpack(c)))
            end
        end

        local res
        res, err = red:commit_pipeline()
        if not res then
            return nil, err
        end

        local missing = {}
        for i = 1, #cmds do
            if cmds[i][1] == "script" and is_noscript(reply_error(res[i])) then
                missing[#missing + 1] = cmds[i][2]
            end
        end

        if #missing == 0 or attempt == 2 then
            self:release(red)
            return res
        end

        for _, text in ipairs(missing) do
            local ok
            ok, err = red:script("load", text)
            if not ok then
                if ok == nil then
                    return nil, err
                end
                self:release(red)
                return nil, err
            end
        end
    end
end


--- a plain command: self:command("hget", key, field)
function _M.command(self, name, ...)
    local red, err = self:connect()
    if not red then
        return nil, err
    end

    local res
    res, err = red[name](red, ...)

    if res == nil then
        return nil, err
    end

    self:release(red)

    if res == false then
        return nil, err
    end

    if res == null then
        return nil
    end

    return res
end


return _M
