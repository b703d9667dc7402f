-- accounts:signUp: a fresh e-mail address on every request.
-- BENCH_TAG (set per run by bench.py) keeps addresses unique across runs and targets.
local tag = os.getenv("BENCH_TAG") or tostring(os.time())
local path = "/identitytoolkit.googleapis.com/v1/accounts:signUp?key=fake-api-key"
local headers = { ["Content-Type"] = "application/json" }
local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

local seq = 0
function request()
  seq = seq + 1
  local body = '{"email":"su-' .. tag .. "-" .. tostring(tid or 0) .. "-" .. seq ..
    '@bench.test","password":"secret123","returnSecureToken":true}'
  return wrk.format("POST", path, headers, body)
end
