-- wrk script for util/bench: prints one line the bench parses when the run
-- ends.  No request() or response() hook, so wrk keeps its fast path and
-- the load generator costs the same for every scenario.  "status" is what
-- wrk counts as a status error: responses >= 400.

done = function(summary, latency, requests)
    local e = summary.errors
    io.write(string.format(
        "PSDBENCH requests=%d duration_us=%d connect=%d read=%d write=%d "
        .. "timeout=%d status=%d p50_us=%d p99_us=%d\n",
        summary.requests, summary.duration, e.connect, e.read, e.write,
        e.timeout, e.status, latency:percentile(50), latency:percentile(99)))
end
