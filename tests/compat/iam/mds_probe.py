"""Runs google-auth's metadata-server code paths and prints the results as one JSON line.

Started by the tests in a child process whose environment has GCE_METADATA_HOST and
GCE_METADATA_IP pointing at Gatehouse's metadata server (google-auth reads them at import
time) and no GOOGLE_APPLICATION_CREDENTIALS. Argument: JSON {"audiences": [...]}.
Each step's failure is reported as {"error": ..., "message": ...} so one failing step does not
hide the others.
"""

import json
import sys
import traceback


def step(fn):
    try:
        return {"ok": fn()}
    except Exception as exc:  # noqa: BLE001 - reported to the test, which asserts
        return {
            "error": f"{type(exc).__module__}.{type(exc).__qualname__}",
            "message": str(exc),
            "traceback": traceback.format_exc(limit=6),
        }


def main():
    args = json.loads(sys.argv[1])

    import google.auth
    import google.auth.transport.requests
    import google.oauth2.id_token

    request = google.auth.transport.requests.Request()
    out = {}
    state = {}

    def default():
        creds, project = google.auth.default()
        state["creds"] = creds
        return {
            "class": f"{type(creds).__module__}.{type(creds).__qualname__}",
            "project_id": project,
        }

    out["default"] = step(default)

    def refresh():
        creds = state["creds"]
        creds.refresh(request)
        return {
            "token": creds.token,
            "valid": creds.valid,
            "expiry": creds.expiry.isoformat() if creds.expiry else None,
            "service_account_email": creds.service_account_email,
        }

    out["refresh"] = step(refresh) if "creds" in state else {"error": "skipped", "message": "no credentials"}

    out["id_tokens"] = {
        aud: step(lambda aud=aud: google.oauth2.id_token.fetch_id_token(request, aud))
        for aud in args.get("audiences", [])
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
