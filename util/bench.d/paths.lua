-- wrk script for util/bench: cycles through the paths given after "--" on
-- wrk's command line, one per request (the cluster scenarios: keys whose
-- hash slots lie on different nodes).
--   wrk ... -s paths.lua URL -- PATH [PATH ...]
-- The requests are built once in init(); the request() hook only hands
-- the next one out, and there is no response() hook, so wrk stays close to
-- its fast path (every configuration of a scenario uses the same script).
-- done() is report.lua's, from the same directory.

local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "report.lua")

local reqs = {}
local n = 0

init = function(args)
    for i, p in ipairs(args) do
        reqs[i] = wrk.format("GET", p)
    end
    if #reqs == 0 then
        reqs[1] = wrk.format("GET", wrk.path)
    end
end

request = function()
    n = n % #reqs + 1
    return reqs[n]
end
