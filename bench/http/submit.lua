-- wrk script: durable record submissions (POST /v1/records), the peers' records in their
-- order, each thread starting at its own offset and cycling. TOKEN is an admin's (the
-- records span every hospital); REQUESTS_DIR holds records.ndjson.
package.path = os.getenv("SCRIPTS") .. "/?.lua;" .. package.path
local common = require("common")
local next_record
setup = common.setup

function init(args)
  next_record = common.cycle(common.records())
end

common.post_json()

function request()
  return wrk.format(nil, "/v1/records", nil, next_record())
end

done = common.done
