"""Configuration: `gatehouse gateway validate`, start-up refusal, SIGHUP reload (issue #3 items 1-2).

Validation reports every problem with its location, e.g. `paths./hello.get.x-google-backend.deadline`.
"""

import threading
import time

import pytest

import harness as h
import oas
import test_routing
import test_seed

ISSUER = "https://issuer.example.test"  # compared with `iss` only, never fetched


def base_doc():
    """A valid document. Every URL the gateway could contact is a refused loopback port, so a
    gateway that wrongly accepts a bad document still makes no traffic off this machine."""
    return oas.document(
        {"/hello": {"get": oas.op("hello", security=[{"auth0": []}],
                                  backend=oas.backend(f"http://127.0.0.1:{h.dead_port()}"))}},
        security_definitions={"auth0": oas.oauth2(
            ISSUER, f"http://127.0.0.1:{h.dead_port()}/jwks", "aud-1")})


def _hello(doc):
    return doc["paths"]["/hello"]["get"]


def _bad_translation(doc):
    _hello(doc)["x-google-backend"]["path_translation"] = "APPEND_PATH"


def _grpc(doc):
    _hello(doc)["x-google-backend"]["protocol"] = "grpc"


def _aud_and_disable(doc):
    _hello(doc)["x-google-backend"].update(jwt_audience="https://aud", disable_auth=True)


def _query_prefix(doc):
    doc["securityDefinitions"]["auth0"]["x-google-jwt-locations"] = [
        {"header": "Authorization", "value_prefix": "Bearer "},
        {"query": "jwt", "value_prefix": "Bearer "}]


def _undefined_scheme(doc):
    _hello(doc)["security"] = [{"nope": []}]


def _duplicate(doc):
    doc["paths"]["/pets/{id}"] = {"get": oas.op("pets1", parameters=[
        {"name": "id", "in": "path", "required": True, "type": "string"}])}
    doc["paths"]["/pets/{pet_id}"] = {"get": oas.op("pets2", parameters=[
        {"name": "pet_id", "in": "path", "required": True, "type": "string"}])}


def _unknown_location_field(doc):
    doc["securityDefinitions"]["auth0"]["x-google-jwt-locations"] = [
        {"header": "X-Token", "value_prefix": "T ", "cookie_flavour": "chocolate"}]


def _bad_deadline(doc):
    _hello(doc)["x-google-backend"]["deadline"] = "soon"


# (id, mutation, locations that must be named, extra words that must appear)
PROBLEMS = [
    ("path_translation", _bad_translation,
     ["paths./hello.get.x-google-backend.path_translation"], []),
    ("protocol_grpc", _grpc, ["paths./hello.get.x-google-backend.protocol"], []),
    ("jwt_audience_with_disable_auth", _aud_and_disable, ["paths./hello.get.x-google-backend"], []),
    ("query_location_value_prefix", _query_prefix,
     ["securityDefinitions.auth0.x-google-jwt-locations"], []),
    ("undefined_security_definition", _undefined_scheme, ["paths./hello.get.security"], ["nope"]),
    ("duplicate_method_template", _duplicate, [("paths./pets/{id}.get", "paths./pets/{pet_id}.get")],
     []),
    ("unknown_jwt_location_field", _unknown_location_field,
     ["securityDefinitions.auth0.x-google-jwt-locations"], ["cookie_flavour"]),
    ("deadline_not_a_number", _bad_deadline, ["paths./hello.get.x-google-backend.deadline"], []),
]


def _named(output, loc):
    lines = output.splitlines()
    options = loc if isinstance(loc, tuple) else (loc,)
    return any(any(o in line for o in options) for line in lines)


def _write(tmp_path, doc, fmt="yaml", name="openapi"):
    return h.write_config(tmp_path, doc, fmt=fmt, name=name)


# --------------------------------------------------------------------------- validate

def test_validate_accepts_valid_yaml_and_json(gatehouse_bin, tmp_path):
    for fmt in ("yaml", "json", "yaml-json"):
        doc = base_doc() if fmt != "yaml-json" else oas.AsJson(base_doc())
        path = _write(tmp_path, doc, fmt=fmt, name=f"ok-{fmt}")
        rc, out = h.validate(gatehouse_bin, path)
        assert rc == 0, f"{fmt}: valid document rejected:\n{out}"


def test_validate_accepts_handwritten_yaml(gatehouse_bin, tmp_path):
    p = tmp_path / "routing.yaml"
    p.write_text(test_routing.routing_yaml("http://127.0.0.1:9"))
    rc, out = h.validate(gatehouse_bin, p)
    assert rc == 0, out
    p = tmp_path / "seed.yaml"
    p.write_text(test_seed.seed_yaml("sa@proj.iam.gserviceaccount.com",
                                     "http://127.0.0.1:9/jwk", "http://127.0.0.1:8"))
    rc, out = h.validate(gatehouse_bin, p)
    assert rc == 0, out


@pytest.mark.parametrize("name,mutate,locations,words", PROBLEMS, ids=[p[0] for p in PROBLEMS])
def test_validate_reports_problem_with_location(gatehouse_bin, tmp_path, name, mutate, locations,
                                                words):
    doc = base_doc()
    mutate(doc)
    rc, out = h.validate(gatehouse_bin, _write(tmp_path, doc))
    assert rc != 0, f"{name}: accepted an invalid document:\n{out}"
    for loc in locations:
        assert _named(out, loc), f"{name}: no line names {loc!r}:\n{out}"
    for w in words:
        assert w in out, f"{name}: output does not mention {w!r}:\n{out}"


def test_validate_reports_every_problem_at_once(gatehouse_bin, tmp_path):
    doc = base_doc()
    doc["paths"]["/other"] = {"get": oas.op(
        "other", backend=oas.backend(f"http://127.0.0.1:{h.dead_port()}"))}
    _bad_translation(doc)
    doc["paths"]["/other"]["get"]["x-google-backend"]["protocol"] = "grpc"
    _query_prefix(doc)
    _duplicate(doc)
    rc, out = h.validate(gatehouse_bin, _write(tmp_path, doc))
    assert rc != 0
    for loc in ["paths./hello.get.x-google-backend.path_translation",
                "paths./other.get.x-google-backend.protocol",
                "securityDefinitions.auth0.x-google-jwt-locations",
                ("paths./pets/{id}.get", "paths./pets/{pet_id}.get")]:
        assert _named(out, loc), f"no line names {loc!r}:\n{out}"


def test_validate_rejects_unparsable_file(gatehouse_bin, tmp_path):
    p = tmp_path / "broken.yaml"
    p.write_text("swagger: '2.0'\npaths: [unclosed\n")
    rc, out = h.validate(gatehouse_bin, p)
    assert rc != 0 and out.strip()


@pytest.mark.parametrize("name,mutate,locations,words", PROBLEMS, ids=[p[0] for p in PROBLEMS])
def test_gateway_refuses_to_start_with_invalid_config(stack, name, mutate, locations, words):
    doc = base_doc()
    mutate(doc)
    rc, out = stack.gateway_process(doc).expect_start_failure()
    for loc in locations:
        assert _named(out, loc), f"{name}: start-up error does not name {loc!r}:\n{out}"


# --------------------------------------------------------------------------- reload

def _versioned(echo, version, security=None, defs=None):
    return oas.document({"/hello": {"get": oas.op("hello", security=security or [],
                                                  backend=oas.backend(f"{echo.url}/{version}"))}},
                        security_definitions=defs)


def _version(gw):
    r = gw.get("/hello")
    return r.echo()["RequestURI"] if r.status == 200 else r.status


def test_sighup_reload_applies_new_config(stack, echo, jwks):
    p = jwks.add("rs")
    gw = stack.gateway(_versioned(echo, "v1"))
    assert _version(gw) == "/v1"
    gw.reload(_versioned(echo, "v2", security=[{"rs": []}], defs={"rs": p.definition()}))
    h.wait_until(lambda: gw.get("/hello").status == 401, 10, message="new config served")
    h.assert_jwt_error(gw.get("/hello"), gw, "/hello", 401, h.MSG_MISSING)
    assert gw.get_bearer("/hello", p.token()).echo()["RequestURI"] == "/v2"


def _is_refusal(rec):
    """A log record saying a new config was refused (the old one is kept)."""
    return "refused" in str(h.log_field(rec, "message") or "")


def test_sighup_with_invalid_config_keeps_serving_old(stack, echo):
    gw = stack.gateway(_versioned(echo, "v1"))
    bad = _versioned(echo, "v2")
    bad["paths"]["/hello"]["get"]["x-google-backend"]["path_translation"] = "BOGUS"
    refused = gw.count_logs(_is_refusal)
    gw.reload(bad)
    h.wait_until(lambda: gw.count_logs(_is_refusal) > refused or not gw.alive(), 10,
                 message="the invalid config refused")
    assert gw.alive(), f"gateway died on an invalid reload\n{gw.describe()}"
    assert _version(gw) == "/v1"
    refused = gw.count_logs(_is_refusal)
    gw.reload("swagger: '2.0'\npaths: [unclosed\n")
    h.wait_until(lambda: gw.count_logs(_is_refusal) > refused or not gw.alive(), 10,
                 message="the unparsable config refused")
    assert gw.alive() and _version(gw) == "/v1"
    gw.reload(_versioned(echo, "v3"))  # a later good config still applies
    h.wait_until(lambda: _version(gw) == "/v3", 10, message="good config after a bad one")


def test_reload_under_load_has_zero_failed_requests(stack, echo):
    gw = stack.gateway(_versioned(echo, "v1"))
    assert _version(gw) == "/v1"
    results, errors = [], []
    stop_at = time.monotonic() + 2.0

    def worker():
        while time.monotonic() < stop_at:
            try:
                r = gw.get("/hello", timeout=5)
                if r.status != 200:
                    errors.append(r.describe())
                else:
                    results.append(r.json()["RequestURI"])
            except Exception as exc:
                errors.append(repr(exc))

    slow = {}

    def in_flight():
        slow["r"] = gw.get("/hello?sleep=1", timeout=10)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    threads.append(threading.Thread(target=in_flight))
    for t in threads:
        t.start()
    version = 1
    while time.monotonic() < stop_at - 0.2:
        time.sleep(0.25)
        version = 2 if version == 1 else 1
        gw.reload(_versioned(echo, f"v{version}"))
    for t in threads:
        t.join()
    assert not errors, f"{len(errors)} failed requests during reloads: {errors[:3]}"
    assert len(results) > 10
    assert set(results) <= {"/v1", "/v2"} and "/v2" in results, set(results)
    assert slow["r"].status == 200, f"in-flight request failed: {slow['r'].describe()}"
    h.wait_until(lambda: _version(gw) == f"/v{version}", 10, message="last config served")
