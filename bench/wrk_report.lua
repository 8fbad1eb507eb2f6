-- wrk's report for bench/api_bench.py: one JSON line on stdout after the run, with the
-- answers counted by status and wrk's own socket errors and latency percentiles (in µs).
-- The headers (the bearer token) come on wrk's command line (-H), not from this script.

local threads = {}

function setup(thread)
   table.insert(threads, thread)
end

function init(args)
   statuses = {}
end

function response(status, headers, body)
   statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
   local merged, counted = {}, {}
   for _, thread in ipairs(threads) do
      for status, n in pairs(thread:get("statuses")) do
         merged[status] = (merged[status] or 0) + n
      end
   end
   for status, n in pairs(merged) do
      counted[#counted + 1] = string.format('"%d": %d', status, n)
   end
   local e = summary.errors
   io.write(string.format(
      '{"requests": %d, "duration_us": %d, "statuses": {%s}, ' ..
      '"connect": %d, "read": %d, "write": %d, "timeout": %d, ' ..
      '"p50_us": %d, "p99_us": %d}\n',
      summary.requests, summary.duration, table.concat(counted, ", "),
      e.connect, e.read, e.write, e.timeout,
      latency:percentile(50), latency:percentile(99)))
end
