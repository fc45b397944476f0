-- wrk script for the response cache benchmark: repeated and unique OIP v2 bodies, mixed.
--
-- WRK_BODY_FILE     the hot set: one JSON body per line, cycled through (the repeated requests)
-- WRK_UNIQUE_FILE   one JSON body holding the markers RUN_VALUE and UNIQUE_VALUE where numbers
--                   go; every unique request gets a value no other request of the run has
-- WRK_UNIQUE_EVERY  every Nth request is unique (10: 10 %); 0 or unset: none
-- WRK_RUN           an integer that sets this run's unique values apart from other runs'
-- WRK_AUTH          API key sent as a bearer token
--
-- done() prints the same "BENCH_RESULT {json}" line as oip_post.lua.

local function read_lines(path)
   local lines = {}
   local file = assert(io.open(path, "r"))
   for line in file:lines() do
      if #line > 0 then
         lines[#lines + 1] = line
      end
   end
   file:close()
   return lines
end

local path = os.getenv("WRK_BODY_FILE")
if path == nil then
   error("set WRK_BODY_FILE to a file holding one JSON request body per line")
end
local hot_bodies = read_lines(path)
assert(#hot_bodies > 0, "WRK_BODY_FILE holds no request body")

local every = tonumber(os.getenv("WRK_UNIQUE_EVERY") or "0")
local run = os.getenv("WRK_RUN") or "0"
local prefix, middle, suffix = nil, nil, nil
if every > 0 then
   local template = read_lines(assert(os.getenv("WRK_UNIQUE_FILE"), "set WRK_UNIQUE_FILE"))[1]
   local a, b = string.find(template, "RUN_VALUE", 1, true)
   local c, d = string.find(template, "UNIQUE_VALUE", 1, true)
   assert(a and c and b < c, "the unique body needs RUN_VALUE before UNIQUE_VALUE")
   prefix = string.sub(template, 1, a - 1)
   middle = string.sub(template, b + 1, c - 1)
   suffix = string.sub(template, d + 1)
end

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local key = os.getenv("WRK_AUTH")
if key ~= nil and #key > 0 then
   wrk.headers["Authorization"] = "Bearer " .. key
end
wrk.body = hot_bodies[1]

local threads = 0
setup = function(thread)
   threads = threads + 1
   thread:set("thread_id", threads)
end

local hot = {}
local n, h, u = 0, 0, 0

init = function(args)
   for i, body in ipairs(hot_bodies) do
      hot[i] = wrk.format(nil, nil, nil, body)
   end
   -- wrk copies globals set in setup() into each thread before init() runs.
   thread_id = thread_id or 1
end

request = function()
   n = n + 1
   if every > 0 and n % every == 0 then
      u = u + 1
      -- Distinct per thread: thread ids are 1..64, and 64 * u stays exact in FP32 below 2^24.
      local value = u * 64 + thread_id
      return wrk.format(nil, nil, nil, prefix .. run .. middle .. value .. suffix)
   end
   h = h % #hot + 1
   return hot[h]
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
