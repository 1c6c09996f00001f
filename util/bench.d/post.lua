-- wrk script for util/bench: the same POST on every request.
--   wrk ... -s post.lua URL -- BODY_FILE ["Header: value" ...]
-- The request is built once in init(), so wrk keeps its fast path (no
-- request() hook: every connection sends the same bytes).  done() is
-- report.lua's, from the same directory.

local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "report.lua")

init = function(args)
    local f = assert(io.open(args[1], "rb"))
    wrk.body = f:read("*a")
    f:close()
    wrk.method = "POST"
    for i = 2, #args do
        local name, value = args[i]:match("^([^:]+):%s*(.*)$")
        if name then
            wrk.headers[name] = value
        end
    end
end
