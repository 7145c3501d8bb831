-- wrk script: record submissions with and without a payload (bench/payload-http.sh).
-- KIND is `meta` (a ~1 KiB record, no payload), `inline` (the same record plus a ~100-byte
-- inline FHIR payload), `multipart` (the same record plus a PAYLOAD_BYTES file part) or
-- `batch` (BATCH metadata-only records per POST /v1/records/batch; bench/cluster.sh).
-- Ids are the server's; the bodies cycle over 64 patients. TOKEN is an admin's.
package.path = os.getenv("SCRIPTS") .. "/?.lua;" .. package.path
local common = require("common")
local next_request
setup = common.setup

local kind = os.getenv("KIND") or "meta"
local payload_bytes = tonumber(os.getenv("PAYLOAD_BYTES") or "65536")
local boundary = "medledgerbenchboundary7f3a"

wrk.method = "POST"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("TOKEN")
if kind == "multipart" then
  wrk.headers["Content-Type"] = "multipart/form-data; boundary=" .. boundary
else
  wrk.headers["Content-Type"] = "application/json"
end

local function record(patient)
  return string.format(
    '{"patient_id":"bench-p-%d","hospital_id":"h-1","record_type":"lab_result","metadata":{"note":"%s"}%s}',
    patient, string.rep("n", 900),
    kind == "inline"
      and ',"payload":{"content_type":"application/fhir+json","data":{"resourceType":"Observation","status":"final","code":{"text":"glucose"},"valueQuantity":{"value":5.4,"unit":"mmol/L"}}}'
      or "")
end

local per = tonumber(os.getenv("BATCH") or "50")

local function body(patient)
  if kind == "batch" then
    local items = {}
    for i = 1, per do items[i] = record((patient + i) % 64 + 1) end
    return '{"records":[' .. table.concat(items, ",") .. "]}"
  end
  if kind ~= "multipart" then return record(patient) end
  return "--" .. boundary .. "\r\n"
    .. 'Content-Disposition: form-data; name="record"\r\nContent-Type: application/json\r\n\r\n'
    .. record(patient) .. "\r\n--" .. boundary .. "\r\n"
    .. 'Content-Disposition: form-data; name="file"; filename="scan.bin"\r\nContent-Type: application/octet-stream\r\n\r\n'
    .. string.rep(string.char(patient % 251), payload_bytes) .. "\r\n--" .. boundary .. "--\r\n"
end

function init(args)
  local count = kind == "multipart" and 8 or 64
  local patient = common.offset(64)
  next_request = common.premade(count, function()
    patient = patient % 64 + 1
    local path = kind == "batch" and "/v1/records/batch" or "/v1/records"
    return wrk.format(nil, path, nil, body(patient))
  end)
end

function request() return next_request() end

function done(summary, latency, requests)
  common.done(summary, latency, string.format('"kind":"%s","payload_bytes":%d,"records_per_request":%d', kind,
    kind == "inline" and 100 or (kind == "multipart" and payload_bytes or 0),
    kind == "batch" and per or 1))
end
