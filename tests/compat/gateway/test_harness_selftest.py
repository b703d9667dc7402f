"""Self-test of the suite's own machinery; needs no gateway binary.

Checks the echo backend, the JWKS/issuer server (JWK set, x509 map, discovery, rotation,
outage), token minting for every alg, the token and metadata endpoints, the h2c backend, the
YAML writer, the Prometheus parser, the assertion helpers, and the process launcher (against a
stand-in script that follows the CLI contract).
"""

import hashlib
import json
import os
import signal
import socket
import sys
import textwrap
import threading
import time
import urllib.parse

import jwt
import pytest
import requests
import yaml

import harness as h
import oas


def _session():
    s = requests.Session()
    s.trust_env = False  # never a proxy, whatever the environment says
    return s


# --------------------------------------------------------------------------- echo backend

def test_echo_describes_request(echo):
    r = h.http_request(echo.addr, "GET", "/a/b%20c/?x=1&y=%3B", headers={"X-Test": "v",
                                                                         "X-Multi": "1"})
    e = r.echo()
    assert e["method"] == "GET"
    assert e["path"] == "/a/b%20c/"
    assert e["query"] == "x=1&y=%3B"
    assert e["RequestURI"] == "/a/b%20c/?x=1&y=%3B"
    assert e["headers"]["x-test"] == "v"
    assert e["headers"]["host"] == echo.addr
    assert ["x-test", "v"] in e["header_list"]
    assert echo.requests[-1]["RequestURI"] == "/a/b%20c/?x=1&y=%3B"


def test_echo_bodies_fixed_and_chunked(echo):
    r = h.http_request(echo.addr, "POST", "/p", body=b"hello")
    assert r.echo()["body"] == "hello"
    r = h.http_request(echo.addr, "PUT", "/p", body=iter([b"ab", b"", b"cd"]))
    e = r.echo()
    assert e["body"] == "abcd" and e["headers"]["transfer-encoding"] == "chunked"
    n = 3 * 1024 * 1024 + 7
    r = h.http_request(echo.addr, "POST", "/p?digest=1", body=h.pattern_chunks(n))
    e = r.echo()
    assert e["body"] is None and e["body_len"] == n and e["body_sha256"] == h.pattern_sha256(n)


def test_echo_sleep_status_and_headers(echo):
    r = h.http_request(echo.addr, "GET", "/x?sleep=0.3")
    assert r.status == 200 and r.elapsed >= 0.3
    r = h.http_request(echo.addr, "GET", "/sleep/0.2/x")
    assert r.status == 200 and r.elapsed >= 0.2
    r = h.http_request(echo.addr, "GET", "/x?status=418")
    assert r.status == 418 and r.json()["path"] == "/x"
    echo.response_headers_by_method["OPTIONS"] = {"Access-Control-Allow-Origin": "https://a.test"}
    r = h.http_request(echo.addr, "OPTIONS", "/x")
    assert r.header("access-control-allow-origin") == "https://a.test"
    r = h.http_request(echo.addr, "GET", "/x")
    assert r.header("access-control-allow-origin") is None
    r = h.http_request(echo.addr, "HEAD", "/x")
    assert r.status == 200 and r.body == b""


def test_echo_bytes_and_drip(echo):
    n = 1_000_003
    r = h.http_request(echo.addr, "GET", f"/dl/bytes/{n}")
    assert r.status == 200 and len(r.body) == n
    assert hashlib.sha256(r.body).hexdigest() == h.pattern_sha256(n)
    s = _session()
    t0 = time.monotonic()
    with s.get(f"{echo.url}/d?drip=3&interval=0.4", stream=True, timeout=10) as resp:
        it = resp.iter_content(chunk_size=None)
        first = next(it)
        t_first = time.monotonic() - t0
        rest = b"".join(it)
    assert first.startswith(b"chunk-0") and t_first < 0.35
    assert (first + rest) == b"chunk-0\nchunk-1\nchunk-2\n"
    assert time.monotonic() - t0 >= 0.8


def test_echo_keepalive_counts_connections(echo):
    s = _session()
    for _ in range(5):
        assert s.get(echo.url + "/k", timeout=5).status_code == 200
    assert echo.connections_total == 1


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_tls_echo_backend_is_untrusted(stack):
    be = stack.echo(tls=True)
    assert be.url.startswith("https://127.0.0.1:")
    with pytest.raises(requests.exceptions.SSLError):
        _session().get(be.url + "/t", timeout=5)
    r = _session().get(be.url + "/t?x=1", timeout=5, verify=False)
    assert r.status_code == 200 and r.json()["RequestURI"] == "/t?x=1"
    assert len(be.requests) == 1


def test_dead_port_refuses():
    port = h.dead_port()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


# --------------------------------------------------------------------------- JWKS / tokens

@pytest.mark.parametrize("alg", ["RS256", "RS384", "RS512", "PS256", "ES256", "ES384"])
def test_tokens_verify_against_published_jwks(jwks, alg):
    p = jwks.add(alg.lower(), alg=alg)
    tok = p.token()
    hdr = jwt.get_unverified_header(tok)
    assert hdr["alg"] == alg and hdr["kid"] == p.signing.kid
    doc = h.http_request(jwks.addr, "GET", p.jwk_path).json()
    assert len(doc["keys"]) == 1 and doc["keys"][0]["alg"] == alg
    key = jwt.PyJWK(doc["keys"][0])
    c = jwt.decode(tok, key.key, algorithms=[alg], audience=p.audience, issuer=p.issuer)
    assert c["sub"] == "user-1" and c["exp"] > time.time() + 500
    assert p.fetches() == 1


def test_x509_map_and_discovery(jwks):
    p = jwks.add_oidc("oidc")
    assert p.issuer == f"{jwks.url}/oidc"
    d = h.http_request(jwks.addr, "GET", "/oidc/.well-known/openid-configuration").json()
    assert d["issuer"] == p.issuer and d["jwks_uri"] == p.jwks_uri
    m = h.http_request(jwks.addr, "GET", p.x509_path).json()
    from cryptography import x509 as cx509
    cert = cx509.load_pem_x509_certificate(m[p.signing.kid].encode())
    c = jwt.decode(p.token(), cert.public_key(), algorithms=["RS256"], audience=p.audience)
    assert c["iss"] == p.issuer
    assert jwks.count(jwks.discovery_path("oidc")) == 1 and p.fetches() == 1


def test_service_account_paths(jwks):
    email = "firebase-adminsdk-x@proj.iam.gserviceaccount.com"
    p = jwks.add_service_account(email)
    assert p.issuer == email and len(p.signing.kid) == 40
    jw = h.http_request(jwks.addr, "GET", f"/service_accounts/v1/jwk/{email}").json()
    assert jw["keys"][0]["kid"] == p.signing.kid
    xm = h.http_request(jwks.addr, "GET", f"/robot/v1/metadata/x509/{email}").json()
    assert list(xm) == [p.signing.kid]


def test_rotation_modes_cache_control(jwks):
    p = jwks.add("rot", cache_control="public, max-age=1")
    old = p.signing.kid
    new = p.rotate()
    doc = h.http_request(jwks.addr, "GET", p.jwk_path)
    assert doc.header("cache-control") == "public, max-age=1"
    assert [k["kid"] for k in doc.json()["keys"]] == [old, new.kid]
    assert jwt.get_unverified_header(p.token())["kid"] == new.kid
    p.rotate(keep_old=False)
    assert len(h.http_request(jwks.addr, "GET", p.jwk_path).json()["keys"]) == 1
    p.mode = "invalid"
    r = h.http_request(jwks.addr, "GET", p.jwk_path)
    assert r.status == 200 and r.body == b"this is not a JWKS"
    p.mode = "error"
    assert h.http_request(jwks.addr, "GET", p.jwk_path).status == 503


def test_jwks_outage_and_restart_same_port(jwks):
    p = jwks.add("out")
    port = jwks.port
    s = _session()
    assert s.get(p.jwks_uri, timeout=5).status_code == 200  # keep-alive connection open
    jwks.stop()
    with pytest.raises(requests.exceptions.ConnectionError):
        s.get(p.jwks_uri, timeout=2)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    jwks.start()
    assert jwks.port == port
    assert _session().get(p.jwks_uri, timeout=5).status_code == 200


def test_claims_and_malformed_builders():
    now = int(time.time())
    c = h.claims("iss", aud="a", nbf=now + 5, extra={"x": 1})
    assert c["iss"] == "iss" and c["aud"] == "a" and c["nbf"] == now + 5 and c["x"] == 1
    assert abs(c["iat"] - now) <= 1 and abs(c["exp"] - now - 600) <= 1
    assert "exp" not in h.claims("i", exp=None) and "aud" not in h.claims("i")
    t = h.raw_token("not json", {"a": 1})
    assert t.count(".") == 2 and h.b64u_decode(t.split(".")[0]) == b"not json"
    k = h.SigningKey("RS256")
    t = h.hmac_token({"iss": "x"}, k.public_pem().encode(), kid=k.kid)
    assert jwt.get_unverified_header(t) == {"alg": "HS256", "typ": "JWT", "kid": k.kid}
    assert jwt.decode(t, k.public_pem().encode().decode("latin-1"), algorithms=["HS256"],
                      options={"verify_signature": False})["iss"] == "x"
    assert h.jwt_payload(h.SigningKey("ES256").sign({"a": "b"})) == {"a": "b"}


# --------------------------------------------------------------------------- identity endpoints

def _assertion(identity, audience, key=None):
    now = int(time.time())
    return jwt.encode({"iss": identity.email, "sub": identity.email, "aud": identity.token_uri,
                       "iat": now, "exp": now + 3600, "target_audience": audience},
                      (key or identity.sa_key).private, algorithm="RS256",
                      headers={"kid": identity.sa_key.kid})


def test_token_endpoint_jwt_bearer_grant(identity, tmp_path):
    path = identity.write_key_file(tmp_path)
    info = json.load(open(path))
    assert info["type"] == "service_account" and info["token_uri"] == identity.token_uri
    assert info["private_key"].startswith("-----BEGIN PRIVATE KEY-----")
    r = _session().post(identity.token_uri, data={
        "grant_type": identity.GRANT, "assertion": _assertion(identity, "https://be.test/x")},
        timeout=5)
    assert r.status_code == 200, r.text
    tok = r.json()["id_token"]
    c = jwt.decode(tok, identity.google_key.public, algorithms=["RS256"],
                   audience="https://be.test/x")
    assert c["email"] == identity.email and c["iss"] == "https://accounts.google.com"
    assert identity.requests_for("https://be.test/x")[0]["error"] is None
    assert identity.issued["https://be.test/x"] == [tok]
    # a wrongly signed assertion is refused and recorded
    r = _session().post(identity.token_uri, data={
        "grant_type": identity.GRANT,
        "assertion": _assertion(identity, "a", key=h.SigningKey("RS256"))}, timeout=5)
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    assert identity.token_requests[-1]["error"]


def test_metadata_identity_endpoint(identity):
    s = _session()
    url = identity.url + identity.METADATA_PATH
    r = s.get(url, params={"audience": "https://be.test", "format": "full"},
              headers={"Metadata-Flavor": "Google"}, timeout=5)
    assert r.status_code == 200
    assert h.jwt_payload(r.text)["aud"] == "https://be.test"
    assert identity.metadata_requests[-1]["format"] == "full"
    r = s.get(url, params={"audience": "x"}, timeout=5)
    assert r.status_code == 403 and identity.metadata_requests[-1]["error"]


# --------------------------------------------------------------------------- h2c backend

def test_h2_echo_backend(stack):
    import h2.config
    import h2.connection
    import h2.events
    srv = stack.h2_echo()
    c = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
    conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    conn.send_headers(1, [(":method", "POST"), (":path", "/h2/x?q=1"), (":scheme", "http"),
                          (":authority", "be.test"), ("x-a", "b")])
    conn.send_data(1, b"payload", end_stream=True)
    c.sendall(conn.data_to_send())
    body, status, done = b"", None, False
    while not done:
        data = c.recv(65536)
        assert data, "h2 server closed the connection"
        for ev in conn.receive_data(data):
            if isinstance(ev, h2.events.ResponseReceived):
                status = dict(ev.headers)[b":status"]
            elif isinstance(ev, h2.events.DataReceived):
                body += ev.data
                conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded):
                done = True
        c.sendall(conn.data_to_send())
    c.close()
    e = json.loads(body)
    assert status == b"200" and e["http_version"] == "2" and e["method"] == "POST"
    assert e["RequestURI"] == "/h2/x?q=1" and e["body"] == "payload"
    assert e["headers"]["x-a"] == "b" and e["headers"][":authority"] == "be.test"
    # an HTTP/1.1 client is refused (connection closed without an HTTP/1 answer)
    r = None
    try:
        r = h.http_request(f"127.0.0.1:{srv.port}", "GET", "/", timeout=3)
    except Exception:
        pass
    assert r is None or r.status != 200


# --------------------------------------------------------------------------- YAML, OpenAPI

def test_yaml_writer_round_trips():
    doc = oas.document(
        {"/a/{x}/b/{y=c/**}": {"get": oas.op("a", backend=oas.backend(
            "http://127.0.0.1:1/p", path_translation="CONSTANT_ADDRESS", deadline=1.5,
            disable_auth=True), security=[{"p": []}, {"q": [], "k": []}])},
         "/open": {"post": oas.op("open", security=[])}},
        security_definitions={
            "p": oas.oauth2("https://iss", "http://127.0.0.1:1/jwks", "a, b",
                            [{"header": "X-T", "value_prefix": "T "}, {"query": "t"}]),
            "q": oas.oauth2("it's \"quoted\" : # not a comment", None, None),
            "k": oas.api_key()},
        allow_cors=True, allow="all", backend=oas.backend("http://x"))
    text = oas.to_yaml(doc, comment="c")
    assert text.startswith("# c\n")
    assert yaml.safe_load(text) == doc
    assert doc["paths"]["/a/{x}/b/{y=c/**}"]["get"]["parameters"][1]["name"] == "y"
    assert doc["x-google-endpoints"] == [{"name": oas.HOST, "allowCors": True}]
    assert yaml.safe_load(oas.to_yaml([[1, [2]], {}, [], None, True, 0.5, "s"])) == [
        [1, [2]], {}, [], None, True, 0.5, "s"]


def test_written_config_files(tmp_path):
    doc = oas.document({"/a": {"get": oas.op("a")}})
    y = h.write_config(tmp_path, doc)
    j = h.write_config(tmp_path, doc, fmt="json", name="j")
    yj = h.write_config(tmp_path, oas.AsJson(doc), name="yj")
    assert y.endswith(".yaml") and j.endswith(".json") and yj.endswith(".yaml")
    assert open(y).read().startswith("#")
    for p in (y, j, yj):
        assert yaml.safe_load(open(p)) == doc
    assert json.load(open(j)) == doc and json.load(open(yj)) == doc


def test_handwritten_yaml_fixtures_parse():
    import test_routing
    import test_seed
    seed = yaml.safe_load(test_seed.seed_yaml("sa@p.iam.gserviceaccount.com",
                                              "http://127.0.0.1:1/jwk", "http://127.0.0.1:2"))
    fb = seed["securityDefinitions"]["firebase"]
    assert fb["x-google-issuer"] == "sa@p.iam.gserviceaccount.com"
    assert fb["x-google-audiences"] == test_seed.CUSTOM_TOKEN_AUDIENCE
    assert seed["paths"]["/hello"]["get"]["security"] == [{"firebase": []}]
    assert seed["paths"]["/hello"]["get"]["x-google-backend"] == {"address": "http://127.0.0.1:2"}
    assert seed["info"]["version"] == "1.0.0"
    routing = yaml.safe_load(test_routing.routing_yaml("http://127.0.0.1:9"))
    ops = [o["operationId"] for p in routing["paths"].values() for o in p.values()]
    assert len(ops) == len(set(ops))
    for tmpl, methods in routing["paths"].items():
        for o in methods.values():
            assert sorted(p["name"] for p in o.get("parameters", [])) == sorted(
                oas.path_params(tmpl)), tmpl


# --------------------------------------------------------------------------- helpers

def test_prometheus_parser():
    text = textwrap.dedent('''\
        # HELP gw_requests_total Requests.
        # TYPE gw_requests_total counter
        gw_requests_total{operation="1.gw.Hello",status="200"} 3
        gw_requests_total{operation="x\\"y",status="401"} 1 1700000000
        up 1
        ''')
    s = h.parse_prometheus(text)
    assert ("gw_requests_total", {"operation": "1.gw.Hello", "status": "200"}, 3.0) in s
    assert ("gw_requests_total", {"operation": 'x"y', "status": "401"}, 1.0) in s
    assert ("up", {}, 1.0) in s


class _FakeGw:
    addr = "127.0.0.1:1234"


def test_assertion_helpers():
    ok = h.Response(401, "", [("Content-Type", "application/json"), (
        "WWW-Authenticate", 'Bearer realm="http://127.0.0.1:1234/x?y=1"')],
        b'{"message":"Jwt is missing","code":401}', 0)
    h.assert_jwt_error(ok, _FakeGw(), "/x?y=1", 401, h.MSG_MISSING)
    bad = h.Response(401, "", [("Content-Type", "application/json"), (
        "WWW-Authenticate", 'Bearer realm="http://127.0.0.1:1234/x"')],
        b'{"code":401,"message":"Jwt is expired"}', 0)
    with pytest.raises(AssertionError):  # error="invalid_token" is required here
        h.assert_jwt_error(bad, _FakeGw(), "/x", 401, h.MSG_EXPIRED)
    with pytest.raises(AssertionError):  # local errors carry no WWW-Authenticate
        h.assert_local_error(ok, 401, h.MSG_MISSING)
    long_target = "/p?" + "a" * 300
    assert h.realm("h:1", long_target) == f'Bearer realm="http://h:1{long_target[:256]}"'
    e503 = h.Response(503, "", [("content-type", "application/json")], json.dumps(
        {"code": 503, "message": h.MSG_CONNECT_PREFIX + ". reset reason: x"}).encode(), 0)
    h.assert_local_error(e503, 503, h.MSG_CONNECT_PREFIX, prefix=True)
    assert h.msg_405("/v1/shelves") == ('The current request is matched to the defined url '
                                        'template "/v1/shelves" but its http method is not allowed')


def test_missing_binary_fails_instead_of_skipping(monkeypatch, tmp_path):
    monkeypatch.delenv("GATEHOUSE_BIN", raising=False)
    with pytest.raises(pytest.fail.Exception, match="GATEHOUSE_BIN is not set"):
        h.gatehouse_bin()
    monkeypatch.setenv("GATEHOUSE_BIN", str(tmp_path / "nope"))
    with pytest.raises(pytest.fail.Exception, match="not an executable"):
        h.gatehouse_bin()


# --------------------------------------------------------------------------- launcher

FAKE_GATEWAY = r'''#!__PY__
"""Stand-in for `gatehouse gateway` (CLI contract only): JSON log lines, /healthz, SIGHUP."""
import json, os, signal, subprocess, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
args = sys.argv[1:]
if args[:1] != ["gateway"]:
    sys.exit(64)
if args[1:2] == ["validate"]:
    print("paths./hello.get.x-google-backend.deadline: not a number", file=sys.stderr)
    sys.exit(1)
opts = dict(zip(args[1::2], args[2::2]))
cfg = opts["--config"]
if "BROKEN" in open(cfg).read():
    print("error: bad config", file=sys.stderr)
    sys.exit(2)
state = {"reloads": 0}
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_GET(self):
        body = json.dumps({"path": self.path, "reloads": state["reloads"],
                           "backend": opts.get("--backend"), "argv": args,
                           "metadata": os.environ.get("GCE_METADATA_HOST")}).encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body)))
        self.end_headers(); self.wfile.write(body)
def serve(addr):
    h, p = addr.rsplit(":", 1)
    s = ThreadingHTTPServer((h, int(p)), H)
    threading.Thread(target=s.serve_forever, daemon=True).start()
    return "%s:%d" % s.server_address
def hup(*_):
    state["reloads"] += 1
    print(json.dumps({"level": "INFO", "message": "config reloaded"}), flush=True)
signal.signal(signal.SIGHUP, hup)
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
open(os.path.join(os.path.dirname(cfg), "child.pid"), "w").write(str(child.pid))
print("starting up (not json)", flush=True)
print(json.dumps({"level": "INFO", "fields": {"message": "listening", "addr": serve(opts["--listen"])}}), flush=True)
if "--admin-listen" in opts:
    print(json.dumps({"level": "INFO", "message": "admin listening", "addr": serve(opts["--admin-listen"])}), flush=True)
while True:  # not signal.pause(): SIGHUP may land on a server thread
    time.sleep(0.05)
'''


@pytest.fixture
def fake_bin(tmp_path, monkeypatch):
    p = tmp_path / "fake-gatehouse"
    p.write_text(FAKE_GATEWAY.replace("__PY__", sys.executable))
    p.chmod(0o755)
    monkeypatch.setenv("GATEHOUSE_BIN", str(p))
    return str(p)


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is as good as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_launcher_start_reload_stop(fake_bin, stack, echo, identity):
    doc = oas.document({"/hello": {"get": oas.op("hello")}})
    key = identity.write_key_file(stack.workdir)
    gw = stack.gateway(doc, backend=echo.url, admin=True, sa_key=key, api_keys=["k1", "k2"],
                       metadata_host=identity.addr)
    assert gw.addr.startswith("127.0.0.1:") and gw.admin_addr.startswith("127.0.0.1:")
    e = gw.get("/healthz").json()
    assert e["backend"] == echo.url and e["metadata"] == identity.addr
    argv = e["argv"]
    assert argv[argv.index("--listen") + 1] == "127.0.0.1:0"
    assert argv[argv.index("--service-account-key") + 1] == key
    keys_file = argv[argv.index("--api-keys") + 1]
    assert open(keys_file).read() == "k1\nk2\n"
    assert gw.admin_get("/metrics").status == 200
    gw.reload(oas.document({"/other": {"get": oas.op("other")}}))
    h.wait_until(lambda: gw.get("/x").json()["reloads"] == 1, 5, message="SIGHUP handled")
    assert yaml.safe_load(open(gw.config_path))["paths"] == {"/other": {"get": oas.op("other")}}
    child = int(open(os.path.join(os.path.dirname(gw.config_path), "child.pid")).read())
    assert _pid_alive(child)
    gw.stop()
    assert not gw.alive()
    h.wait_until(lambda: not _pid_alive(child), 5, message="process group killed")


def test_launcher_reports_start_failure(fake_bin, stack):
    gw = stack.gateway_process("BROKEN: true\n")
    rc, out = gw.expect_start_failure(10)
    assert rc == 2 and "bad config" in out
    with pytest.raises(h.GatewayStartError, match="exited with status 2"):
        stack.gateway("BROKEN: again\n")
    t0 = time.monotonic()
    with pytest.raises(AssertionError, match="it is listening"):
        stack.gateway_process(oas.document({"/a": {"get": oas.op("a")}})).expect_start_failure(20)
    assert time.monotonic() - t0 < 5, "a gateway that listens must be reported at once"
    rc, out = h.validate(fake_bin, gw.config_path)
    assert rc == 1 and "paths./hello.get.x-google-backend.deadline" in out
