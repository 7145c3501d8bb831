-- wrk script: the peers' mixed run, 80% timeline pages and 20% durable submissions, in a
-- fixed interleaving (4 reads, then 1 write). TOKEN is an admin's; REQUESTS_DIR holds
-- the records and patients. wrk reports one latency distribution for both kinds.
package.path = os.getenv("SCRIPTS") .. "/?.lua;" .. package.path
local common = require("common")
local records, patients, n = nil, nil, 0
setup = common.setup

function init(args)
  records = common.records()
  patients = common.patients()
  n = common.offset(#records * #patients)
end

local auth = "Bearer " .. os.getenv("TOKEN")
local read_headers = { ["Authorization"] = auth }
local write_headers = { ["Authorization"] = auth, ["Content-Type"] = "application/json" }

function request()
  n = n + 1
  if n % 5 == 0 then
    return wrk.format("POST", "/v1/records", write_headers, records[math.floor(n / 5) % #records + 1])
  end
  return wrk.format("GET", "/v1/patients/" .. patients[n % #patients + 1] .. "/records?limit=50", read_headers)
end

-- SOAK_DELAY_MS (bench/soak.sh): each connection pauses this long before each request,
-- for a steady rate below the maximum.
local pause = tonumber(os.getenv("SOAK_DELAY_MS") or "")
if pause then
  function delay() return pause end
end

done = common.done
