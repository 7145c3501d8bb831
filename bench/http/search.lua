-- wrk script: full-text searches (GET /v1/search?q=...&limit=50) cycling over one class
-- of queries. QUERIES is a file of request paths, one a line, their words URL-encoded
-- (bench/search.sh writes one per class); TOKEN is an auditor's. Each thread starts at
-- its own place in the list.
package.path = os.getenv("SCRIPTS") .. "/?.lua;" .. package.path
local common = require("common")
local next_request

function setup(thread)
  common.setup(thread)
end

function init(args)
  local headers = { ["Authorization"] = "Bearer " .. os.getenv("TOKEN") }
  local list = {}
  for i, path in ipairs(common.lines(os.getenv("QUERIES"))) do
    list[i] = wrk.format("GET", path, headers)
  end
  next_request = common.cycle(list)
end

function request()
  return next_request()
end

function done(summary, latency, requests)
  common.done(summary, latency)
end
