-- Secure Token API: refresh_token grant with one refresh token (already form-encoded by bench.py).
wrk.method = "POST"
wrk.path = "/securetoken.googleapis.com/v1/token?key=fake-api-key"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.body = "grant_type=refresh_token&refresh_token=" .. os.getenv("BENCH_REFRESH_TOKEN_FORM")
