-- wrk script: patient timeline pages (GET /v1/patients/{id}/records?limit=50) over the
-- patients submit.lua wrote. TOKEN is an auditor's (reads every patient).
local token = os.getenv("TOKEN")
local counter = 0
wrk.headers["Authorization"] = "Bearer " .. token

function request()
  counter = counter + 7919
  return wrk.format("GET", string.format("/v1/patients/p-%07d/records?limit=50", counter % 10000))
end

function done(summary, latency, requests)
  io.write(string.format('WRKJSON {"requests":%d,"seconds":%.3f,"rps":%.1f,"p50_ms":%.3f,"p99_ms":%.3f,"p999_ms":%.3f,"max_ms":%.3f,"errors_connect":%d,"errors_read":%d,"errors_write":%d,"errors_status":%d,"errors_timeout":%d}\n',
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000.0, latency:percentile(99) / 1000.0,
    latency:percentile(99.9) / 1000.0, latency.max / 1000.0,
    summary.errors.connect, summary.errors.read, summary.errors.write, summary.errors.status,
    summary.errors.timeout))
end
