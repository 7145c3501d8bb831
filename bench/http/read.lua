-- wrk script: patient timeline pages (GET /v1/patients/{id}/records?limit=50) of the
-- patients the peers read (REQUESTS_DIR/patients.txt, drawn from the records' skewed
-- distribution). TOKEN is an admin's.
package.path = os.getenv("SCRIPTS") .. "/?.lua;" .. package.path
local common = require("common")
local patients, at = nil, 0
setup = common.setup

function init(args)
  patients = common.patients()
  at = common.offset(#patients)
end

wrk.headers["Authorization"] = "Bearer " .. os.getenv("TOKEN")

function request()
  at = at % #patients + 1
  return wrk.format("GET", "/v1/patients/" .. patients[at] .. "/records?limit=50")
end

done = common.done
