-- wrk script: durable record submissions (POST /v1/records), the peers' records in their
-- order, each thread starting at its own offset and cycling. TOKEN is an admin's (the
-- records span every hospital); REQUESTS_DIR holds records.ndjson.
package.path = os.getenv("SCRIPTS") .. "/?.lua;" .. package.path
local common = require("common")
local records, at = nil, 0
setup = common.setup

function init(args)
  records = common.records()
  at = common.offset(#records)
end

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("TOKEN")

function request()
  at = at % #records + 1
  return wrk.format(nil, "/v1/records", nil, records[at])
end

done = common.done
