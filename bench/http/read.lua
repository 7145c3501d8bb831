-- wrk script: patient timeline pages (GET /v1/patients/{id}/records?limit=50) of the
-- patients the peers read (REQUESTS_DIR/patients.txt, drawn from the records' skewed
-- distribution). TOKEN is an admin's. With ROUTE=summary, the patients' summaries
-- (GET /v1/patients/{id}/summary) instead.
--
-- With ETAGS (a file of "patient<TAB>etag" lines, the validators of those pages), every
-- request carries its page's `If-None-Match`: repeated reads of unchanged timelines. The
-- WRKJSON line then counts the answers that were 304.
package.path = os.getenv("SCRIPTS") .. "/?.lua;" .. package.path
local common = require("common")
local next_request
local threads = {}
local etags_path = os.getenv("ETAGS")
local route = os.getenv("ROUTE") or "records?limit=50"

function setup(thread)
  common.setup(thread)
  threads[#threads + 1] = thread
end

function init(args)
  local etags = {}
  if etags_path then
    for _, line in ipairs(common.lines(etags_path)) do
      local p, tag = line:match("^([^\t]+)\t(.+)$")
      etags[p] = tag
    end
  end
  local list = {}
  for i, p in ipairs(common.patients()) do
    local headers = { ["Authorization"] = "Bearer " .. os.getenv("TOKEN") }
    if etags_path then headers["If-None-Match"] = assert(etags[p], "no etag for " .. p) end
    list[i] = wrk.format("GET", "/v1/patients/" .. p .. "/" .. route, headers)
  end
  next_request = common.cycle(list)
  not_modified = 0
end

function request()
  return next_request()
end

if etags_path then
  function response(status, headers, body)
    if status == 304 then not_modified = not_modified + 1 end
  end
end

function done(summary, latency, requests)
  local n = 0
  for _, t in ipairs(threads) do n = n + (t:get("not_modified") or 0) end
  common.done(summary, latency, string.format('"not_modified":%d', n))
end
