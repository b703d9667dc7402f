"""Operations (issue #3 item 7): /healthz, Prometheus metrics on the admin listener, JSON access
logs without token values, graceful shutdown that drains.
"""

import json
import signal
import threading
import types

import pytest

import harness as h
import oas
from harness import MSG_NOT_DEFINED, assert_local_error


@pytest.fixture(scope="module")
def env(mstack):
    echo = mstack.echo()
    jw = mstack.jwks()
    p = jw.add("rs")
    doc = oas.document({
        "/hello": {"get": oas.op("hello", security=[{"rs": []}])},
        "/open": {"get": oas.op("open", security=[])},
    }, security_definitions={"rs": p.definition()})
    gw = mstack.gateway(doc, backend=echo.url, admin=True)
    return types.SimpleNamespace(gw=gw, echo=echo, p=p)


def test_healthz_200_on_api_listener(env):
    before = len(env.echo.requests)
    r = env.gw.get("/healthz")
    assert r.status == 200, r.describe()
    assert len(env.echo.requests) == before, "/healthz must be answered by the gateway itself"


def test_metrics_by_operation_and_status(env):
    for _ in range(2):
        assert env.gw.get_bearer("/hello", env.p.token()).status == 200
    assert env.gw.get("/hello").status == 401
    assert env.gw.get("/nowhere").status == 404
    r = env.gw.admin_get("/metrics")
    assert r.status == 200, r.describe()
    ctype = r.header("content-type", "")
    assert ctype.startswith("text/plain") or ctype.startswith("application/openmetrics-text"), ctype
    samples = h.parse_prometheus(r.text)
    assert samples, r.text[:2000]

    def matching(status, minimum):
        return {name for name, labels, value in samples
                if value >= minimum
                and any("hello" in v.lower() for v in labels.values())
                and any(v == status for v in labels.values())}

    ok = matching("200", 2)
    unauth = matching("401", 1)
    assert ok & unauth, ("no metric counts requests by operation and status "
                         f"(200 in {sorted(ok)}, 401 in {sorted(unauth)}):\n{r.text[:3000]}")
    reasons = [(n, l) for n, l, v in samples
               if v >= 1 and any("missing" in x.lower() for x in l.values())]
    assert reasons, f"no auth-failure metric labelled with its reason (Jwt is missing):\n{r.text[:3000]}"
    upstream = [n for n, _, _ in samples if "upstream" in n and any(
        w in n for w in ("latency", "duration", "seconds"))]
    assert upstream, f"no upstream latency metric:\n{r.text[:3000]}"


def test_metrics_not_served_on_api_listener(env):
    assert_local_error(env.gw.get("/metrics"), 404, MSG_NOT_DEFINED)


def test_access_logs_are_json_and_contain_no_tokens(env):
    p = env.p
    t_header = p.token()
    t_query = p.token()
    t_iap = p.token()
    t_bad = p.token(key=h.SigningKey("RS256", kid=p.signing.kid))
    first_line = len(env.gw.stdout_lines)
    assert env.gw.get_bearer("/hello?x=1", t_header).status == 200
    assert env.gw.get(f"/hello?access_token={t_query}").status == 200
    assert env.gw.get("/hello", headers={"X-Goog-Iap-Jwt-Assertion": t_iap}).status == 200
    assert env.gw.get_bearer("/hello", t_bad).status == 401
    assert env.gw.get("/open", headers={"Authorization": "Bearer opaque-secret-token-value"}).status == 200
    # Wait for the access log lines of those five requests (not for a fixed time).
    h.wait_until(lambda: _access_lines(env.gw, first_line), 10, message="the access log lines")
    out = env.gw.output()
    for tok in (t_header, t_query, t_iap, t_bad):
        for part in (tok, tok.split(".")[2]):
            assert part not in out, "a token value appears in the gateway's output"
    assert "opaque-secret-token-value" not in out
    lines = [ln for ln in env.gw.stdout_lines if ln.strip()]
    not_json = [ln for ln in lines if not _is_json_object(ln)]
    assert not not_json, f"stdout lines that are not JSON: {not_json[:3]}"
    # one access log line per request, naming the path or the operation (hello / open)
    new = [ln.lower() for ln in env.gw.stdout_lines[first_line:]]
    assert sum("hello" in ln for ln in new) >= 4, (
        f"expected an access log line for each of the 4 /hello requests, got:\n{chr(10).join(new)}")
    assert any("open" in ln for ln in new), "no access log line for /open on stdout"


def _access_lines(gw, first_line):
    """Whether stdout since `first_line` has a line for each /hello request and one for /open."""
    new = [ln.lower() for ln in gw.stdout_lines[first_line:]]
    return sum("hello" in ln for ln in new) >= 4 and any("open" in ln for ln in new)


def _is_json_object(line):
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def test_graceful_shutdown_drains_in_flight_requests(stack, echo):
    doc = oas.document({"/slow": {"get": oas.op("slow", security=[])}})
    gw = stack.gateway(doc, backend=echo.url)
    result = {}

    def call():
        try:
            result["r"] = gw.get("/slow?sleep=1", timeout=10)
        except Exception as exc:
            result["r"] = exc

    t = threading.Thread(target=call)
    t.start()
    h.wait_until(lambda: echo.requests, 5, message="request reached the backend")
    gw.signal(signal.SIGTERM)
    t.join(10)
    r = result.get("r")
    assert isinstance(r, h.Response) and r.status == 200, f"in-flight request lost: {r!r}"
    try:
        gw.proc.wait(10)
    except Exception:
        pytest.fail("gateway did not exit within 10 s of SIGTERM")
