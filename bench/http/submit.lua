-- wrk script: durable record submissions of ~1 KiB JSON each (POST /v1/records).
-- Patients rotate over 10,000 ids so timelines grow as they would in a hospital.
-- TOKEN comes from the environment (a clinician of h-1).
local token = os.getenv("TOKEN")
local filler = string.rep("x", 760)
local counter = 0
local thread_id = 0

function setup(thread)
  thread:set("thread_id", thread_id)
  thread_id = thread_id + 1
end

function init(args)
  counter = thread_id * 1000000000
end

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. token

function request()
  counter = counter + 1
  local body = string.format(
    '{"patient_id":"p-%07d","hospital_id":"h-1","record_type":"lab_result",' ..
    '"created_at":"2026-11-23T10:00:00Z","metadata":{"title":"Complete blood count",' ..
    '"loinc":"58410-2","seq":%d,"note":"%s"}}', counter % 10000, counter, filler)
  return wrk.format(nil, "/v1/records", nil, body)
end

function done(summary, latency, requests)
  local p = latency:percentile(99) / 1000.0
  io.write(string.format('WRKJSON {"requests":%d,"seconds":%.3f,"rps":%.1f,"p50_ms":%.3f,"p99_ms":%.3f,"p999_ms":%.3f,"max_ms":%.3f,"errors_connect":%d,"errors_read":%d,"errors_write":%d,"errors_status":%d,"errors_timeout":%d}\n',
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000.0, p, latency:percentile(99.9) / 1000.0, latency.max / 1000.0,
    summary.errors.connect, summary.errors.read, summary.errors.write, summary.errors.status,
    summary.errors.timeout))
end
