-- wrk script for util/bench --soak: cycles through the paths given after
-- "--" on wrk's command line, one per request, and counts responses by
-- status (the Lua hooks make wrk slower; the soak measures stability, not
-- speed).

local reqs = {}
local n = 0
statuses = {}

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

response = function(status, headers, body)
    statuses[status] = (statuses[status] or 0) + 1
end

local threads = {}

setup = function(thread)
    table.insert(threads, thread)
end

done = function(summary, latency, requests)
    local e = summary.errors
    io.write(string.format(
        "PSDBENCH requests=%d duration_us=%d connect=%d read=%d write=%d "
        .. "timeout=%d status=%d p50_us=%d p99_us=%d\n",
        summary.requests, summary.duration, e.connect, e.read, e.write,
        e.timeout, e.status, latency:percentile(50), latency:percentile(99)))
    local all = {}
    for _, t in ipairs(threads) do
        for s, c in pairs(t:get("statuses")) do
            all[s] = (all[s] or 0) + c
        end
    end
    local parts = {}
    for s, c in pairs(all) do
        table.insert(parts, s .. "=" .. c)
    end
    table.sort(parts)
    io.write("PSDBENCH_STATUS " .. table.concat(parts, " ") .. "\n")
end
