-- wrk script: durable record submissions (POST /v1/records), the peers' records in their
-- order, each thread starting at its own offset and cycling. TOKEN is an admin's (the
-- records span every hospital); REQUESTS_DIR holds records.ndjson.
package.path = os.getenv("SCRIPTS") .. "/?.lua;" .. package.path
local common = require("common")
local records, at = nil, 0
local thread_id = 0

function setup(thread)
  thread:set("thread_id", thread_id)
  thread_id = thread_id + 1
end

function init(args)
  records = common.records()
  at = (thread_id * 7919) % #records
end

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("TOKEN")

function request()
  at = at % #records + 1
  return wrk.format(nil, "/v1/records", nil, records[at])
end

done = common.done
