-- wrk script for the inference benchmark: POST OIP v2 JSON bodies and report the results.
--
-- The bodies are read from the file named by the WRK_BODY_FILE environment variable, one JSON
-- body per line. With one line the request is static (wrk builds it once); with several the
-- script cycles through them, one per request.
--
-- done() prints one line that starts with "BENCH_RESULT " followed by a JSON object: requests,
-- duration_us, bytes, socket errors, non_2xx (wrk's errors.status: responses with status > 399)
-- and latency mean/stdev/max and percentiles p50/p90/p99/p99.9, all in microseconds.

local path = os.getenv("WRK_BODY_FILE")
if path == nil then
   error("set WRK_BODY_FILE to a file holding one JSON request body per line")
end

local bodies = {}
local file = assert(io.open(path, "r"))
for line in file:lines() do
   if #line > 0 then
      bodies[#bodies + 1] = line
   end
end
file:close()
assert(#bodies > 0, "WRK_BODY_FILE holds no request body")

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local key = os.getenv("WRK_AUTH")
if key ~= nil and #key > 0 then
   wrk.headers["Authorization"] = "Bearer " .. key
end
wrk.body = bodies[1]

if #bodies > 1 then
   local requests = {}
   for i, body in ipairs(bodies) do
      requests[i] = wrk.format("POST", nil, nil, body)
   end
   local n = 0
   request = function()
      n = n % #requests + 1
      return requests[n]
   end
end

done = function(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'BENCH_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,'
         .. '"connect_errors":%d,"read_errors":%d,"write_errors":%d,"timeouts":%d,'
         .. '"non_2xx":%d,"latency_mean_us":%.1f,"latency_stdev_us":%.1f,"latency_max_us":%d,'
         .. '"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d}\n',
      summary.requests, summary.duration, summary.bytes,
      e.connect, e.read, e.write, e.timeout, e.status,
      latency.mean, latency.stdev, latency.max,
      latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency:percentile(99.9)))
end
