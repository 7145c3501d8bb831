-- Shared by the wrk scripts: the run's records and patients (written by
-- `peers-bench --requests-out DIR`, the same stream the peers are loaded with), and the
-- WRKJSON line bench/http.sh parses.
local M = {}

function M.lines(path)
  local out = {}
  local f = assert(io.open(path, "r"), "cannot open " .. path)
  for line in f:lines() do
    if #line > 0 then out[#out + 1] = line end
  end
  f:close()
  assert(#out > 0, path .. " is empty")
  return out
end

-- wrk's setup(): numbers the threads, so each can start at its own place in the lists.
local next_thread = 0
function M.setup(thread)
  thread:set("thread_id", next_thread)
  next_thread = next_thread + 1
end

-- Where this thread starts in a list of n (after M.setup gave it thread_id).
function M.offset(n) return (thread_id * 7919) % n end

-- A function that returns this thread's next item of `list`: it starts at the thread's
-- own offset and cycles. Call it from init().
function M.cycle(list)
  local at = M.offset(#list)
  return function()
    at = at % #list + 1
    return list[at]
  end
end

-- A function that cycles through `n` requests, made once here by calling `make` n times
-- (from init()). Formatting each request anew, ~1 KiB records concatenated into a string
-- per call, took wrk's CPU away from the server it shares the cores with.
function M.premade(n, make)
  local list = {}
  for i = 1, n do list[i] = make() end
  local at = 0
  return function()
    at = at % n + 1
    return list[at]
  end
end

-- wrk's requests become JSON POSTs with TOKEN (an admin's).
function M.post_json()
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Bearer " .. os.getenv("TOKEN")
end

function M.records() return M.lines(os.getenv("REQUESTS_DIR") .. "/records.ndjson") end
function M.patients() return M.lines(os.getenv("REQUESTS_DIR") .. "/patients.txt") end

-- `extra`, if given, is more JSON members for the line (without braces). (wrk itself
-- calls done with a third argument, its per-request statistics: not a string.)
function M.done(summary, latency, extra)
  if type(extra) ~= "string" then extra = nil end
  io.write(string.format('WRKJSON {%s"requests":%d,"seconds":%.3f,"rps":%.1f,"p50_ms":%.3f,"p99_ms":%.3f,"p999_ms":%.3f,"max_ms":%.3f,"errors_connect":%d,"errors_read":%d,"errors_write":%d,"errors_status":%d,"errors_timeout":%d}\n',
    extra and (extra .. ",") or "", summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000.0, latency:percentile(99) / 1000.0,
    latency:percentile(99.9) / 1000.0, latency.max / 1000.0,
    summary.errors.connect, summary.errors.read, summary.errors.write, summary.errors.status,
    summary.errors.timeout))
end

return M
