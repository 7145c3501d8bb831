-- wrk script: durable record submissions (POST /v1/records), the peers' records in their
-- order, each thread starting at its own offset and cycling. TOKEN is an admin's (the
-- records span every hospital); REQUESTS_DIR holds records.ndjson.
package.path = os.getenv("SCRIPTS") .. "/?.lua;" .. package.path
local common = require("common")
local next_request
setup = common.setup

common.post_json()

function init(args)
  local records = common.records()
  local next_record = common.cycle(records)
  next_request = common.premade(#records, function()
    return wrk.format(nil, "/v1/records", nil, next_record())
  end)
end

function request() return next_request() end

done = common.done
