-- Uncached verification: every request carries a different valid token, taken round-robin from a
-- list minted before the run (BENCH_TOKENS_FILE, one JWT per line). The list is longer than the
-- gateway's verified-token cache (10,000 entries, cleared when full), so a token is never in the
-- cache when it comes round again. BENCH_TOKEN_START (set by bench.py) continues the sequence
-- where the previous run stopped, so a new run does not replay tokens the gateway just cached.
local file = os.getenv("BENCH_TOKENS_FILE") or error("BENCH_TOKENS_FILE is not set")
local tokens = {}
for line in io.lines(file) do
  if #line > 0 then tokens[#tokens + 1] = "Bearer " .. line end
end
local n = #tokens
if n == 0 then error("no tokens in " .. file) end
local i = (tonumber(os.getenv("BENCH_TOKEN_START") or "0") or 0) % n
local headers = {}

function request()
  i = i % n + 1
  headers["Authorization"] = tokens[i]
  return wrk.format("GET", "/", headers)
end
