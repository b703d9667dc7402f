-- POST / (cast a vote): the page's form body, alternately for CATS and DOGS, with the ID token
-- of one signed-up user (BENCH_ID_TOKEN, set by bench.py) as the sample's client sends it.
-- Both requests are formatted once; request() only picks one.
local token = os.getenv("BENCH_ID_TOKEN") or error("BENCH_ID_TOKEN is not set")
local headers = {
  ["Authorization"] = "Bearer " .. token,
  ["Content-Type"] = "application/x-www-form-urlencoded",
}
local reqs = {
  wrk.format("POST", "/", headers, "team=CATS"),
  wrk.format("POST", "/", headers, "team=DOGS"),
}
local i = 0

function request()
  i = 1 - i
  return reqs[i + 1]
end
