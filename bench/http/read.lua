-- wrk script: patient timeline pages (GET /v1/patients/{id}/records?limit=50) of the
-- patients the peers read (REQUESTS_DIR/patients.txt, drawn from the records' skewed
-- distribution). TOKEN is an admin's.
package.path = os.getenv("SCRIPTS") .. "/?.lua;" .. package.path
local common = require("common")
local next_patient
setup = common.setup

function init(args)
  next_patient = common.cycle(common.patients())
end

wrk.headers["Authorization"] = "Bearer " .. os.getenv("TOKEN")

function request()
  return wrk.format("GET", "/v1/patients/" .. next_patient() .. "/records?limit=50")
end

done = common.done
