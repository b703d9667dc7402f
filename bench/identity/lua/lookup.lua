-- accounts:lookup with the user's ID token.
wrk.method = "POST"
wrk.path = "/identitytoolkit.googleapis.com/v1/accounts:lookup?key=fake-api-key"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"idToken":"' .. os.getenv("BENCH_ID_TOKEN") .. '"}'
