-- wrk script: durable batch submissions (POST /v1/records/batch), BATCH records per
-- request (default 50, the peers' batch size), the peers' records in their order, each
-- thread starting at its own offset and cycling. TOKEN is an admin's; REQUESTS_DIR holds
-- records.ndjson. A batch answers 200 with a per-record outcome, so every response is
-- checked for `"failed":0` and the batches with a failed record are reported.
package.path = os.getenv("SCRIPTS") .. "/?.lua;" .. package.path
local common = require("common")
local next_request
local per = tonumber(os.getenv("BATCH") or "50")
local threads = {}

function setup(thread)
  common.setup(thread)
  threads[#threads + 1] = thread
end

common.post_json()

function init(args)
  local records = common.records()
  local next_record = common.cycle(records)
  next_request = common.premade(math.max(1, math.floor(#records / per)), function()
    local items = {}
    for i = 1, per do items[i] = next_record() end
    return wrk.format(nil, "/v1/records/batch", nil, '{"records":[' .. table.concat(items, ",") .. "]}")
  end)
  failed_batches = 0
end

function request() return next_request() end

function response(status, headers, body)
  if status == 200 and not string.find(body, '"failed":0,', 1, true) then
    failed_batches = failed_batches + 1
  end
end

function done(summary, latency)
  local failed = 0
  for _, t in ipairs(threads) do failed = failed + t:get("failed_batches") end
  common.done(summary, latency, string.format('"records_per_request":%d,"batches_with_failed_records":%d', per, failed))
end
