"""Routing: templates, precedence, path translation, 404/405 (spec §1.2, §1.6, §6; cases 28-33).

The translation table of spec §6.3 is a hand-written YAML file with comments (routing_yaml);
the other documents are generated.
"""

import types

import pytest

import harness as h
import oas
from harness import MSG_NOT_DEFINED, assert_local_error, msg_405


def routing_yaml(echo):
    """Spec §6.3 rows as an API Gateway user would write them. `echo` = http://127.0.0.1:PORT."""
    text = r'''# Dynamic routing fixture: the rows of the translation table in spec §6.3
# (ESPv2 dynamic_routing_integration_test). __ECHO__ is the echo backend's base URL.
swagger: "2.0"
info:
  title: dynamic routing    # comments after values must be ignored too
  version: 1.0.0
host: gw.example.test
basePath: /
schemes:
  - https
produces:
  - application/json
# Top-level backend: operations without their own x-google-backend use it with the
# top-level default translation, APPEND_PATH_TO_ADDRESS.
x-google-backend:
  address: __ECHO__/top
paths:
  /pet/{pet_id}/num/{number}:
    get:
      operationId: getPetById
      parameters:
        - {name: pet_id, in: path, required: true, type: string}
        - {name: number, in: path, required: true, type: string}
      responses:
        "200": {description: OK}
      x-google-backend:
        address: __ECHO__/dynamicrouting/getpetbyid
        path_translation: CONSTANT_ADDRESS
  /shelves/{SHELF}/books/info/{BOOK}:
    get:
      operationId: getBookInfo
      parameters:
        - {name: SHELF, in: path, required: true, type: string}
        - {name: BOOK, in: path, required: true, type: string}
      responses:
        "200": {description: OK}
      x-google-backend:
        address: __ECHO__/dynamicrouting/bookinfo
        path_translation: CONSTANT_ADDRESS
  /empty_path:
    get:
      operationId: emptyPath
      responses:
        "200": {description: OK}
      x-google-backend:
        address: __ECHO__
        path_translation: CONSTANT_ADDRESS
  /searchpet:
    get:
      operationId: searchPet
      responses:
        "200": {description: OK}
      x-google-backend:
        address: __ECHO__/dynamicrouting/searchpet
        path_translation: APPEND_PATH_TO_ADDRESS
  /searchdog:
    get:
      operationId: searchDog
      responses:
        "200": {description: OK}
      x-google-backend:
        # the trailing slash of the address path is dropped
        address: __ECHO__/dynamicrouting/searchdogs/
        path_translation: APPEND_PATH_TO_ADDRESS
  /pets/{category}/year/{no}:
    get:
      operationId: listPets
      parameters:
        - {name: category, in: path, required: true, type: string}
        - {name: "no", in: path, required: true, type: string}  # quoted: YAML 1.1 reads no as false
      responses:
        "200": {description: OK}
      x-google-backend:
        address: __ECHO__/dynamicrouting/listpet
        path_translation: APPEND_PATH_TO_ADDRESS
  /searchroot:
    get:
      operationId: searchRoot
      responses:
        "200": {description: OK}
      x-google-backend:
        address: __ECHO__
        path_translation: APPEND_PATH_TO_ADDRESS
  /wildcard/a/*/b/{name=*}/c/**:
    get:
      operationId: constWildcard
      parameters:
        - {name: name, in: path, required: true, type: string}
      responses:
        "200": {description: OK}
      x-google-backend:
        address: __ECHO__/dynamicrouting/const_wildcard
        path_translation: CONSTANT_ADDRESS
  /field_path/{s_1=a/*/b/*}/{s_2=x/**}:upload:
    post:
      operationId: fieldPathUpload
      parameters:
        - {name: s_1, in: path, required: true, type: string}
        - {name: s_2, in: path, required: true, type: string}
      responses:
        "200": {description: OK}
      x-google-backend:
        address: __ECHO__/dynamicrouting/field_path
        path_translation: CONSTANT_ADDRESS
  /api/company/{cid}/user/{uid}:
    get:
      operationId: getUser
      parameters:
        - {name: cid, in: path, required: true, type: string}
        - {name: uid, in: path, required: true, type: string}
      responses:
        "200": {description: OK}
      x-google-backend:
        address: __ECHO__/getUser
        path_translation: CONSTANT_ADDRESS
  /default-const/{id}:
    get:
      operationId: defaultConst
      parameters:
        - {name: id, in: path, required: true, type: string}
      responses:
        "200": {description: OK}
      x-google-backend:
        # no path_translation: operation level defaults to CONSTANT_ADDRESS
        address: __ECHO__/defaultconst
  /uses-top/{id}:
    get:
      operationId: usesTop
      parameters:
        - {name: id, in: path, required: true, type: string}
      responses:
        "200": {description: OK}
  /echo/{id}/path:
    get:
      operationId: normalised
      parameters:
        - {name: id, in: path, required: true, type: string}
      responses:
        "200": {description: OK}
      x-google-backend:
        address: __ECHO__/prefix
        path_translation: APPEND_PATH_TO_ADDRESS
  /v1/shelves:
    get:
      operationId: listShelves
      responses:
        "200": {description: OK}
    post:
      operationId: createShelf
      responses:
        "200": {description: OK}
  /v1/shelves/{shelfId}:
    get:
      operationId: getShelf
      parameters:
        - {name: shelfId, in: path, required: true, type: string}
      responses:
        "200": {description: OK}
'''
    return text.replace("__ECHO__", echo)


@pytest.fixture(scope="module")
def env(mstack):
    echo = mstack.echo()
    gw = mstack.gateway(routing_yaml(echo.url))
    return types.SimpleNamespace(gw=gw, echo=echo)


def uri(env, target, method="GET"):
    r = env.gw.request(method, target)
    assert r.status == 200, f"{method} {target}: {r.describe()}"
    return r.echo()["RequestURI"]


# --------------------------------------------------------------------------- §6.3 table

@pytest.mark.parametrize("target,expected", [
    ("/pet/123/num/987", "/dynamicrouting/getpetbyid?pet_id=123&number=987"),
    ("/pet/123/num/987/", "/dynamicrouting/getpetbyid?pet_id=123&number=987"),
    ("/pet/a%20b/num/9%3B8?lang=U%20S&zone=us%3Bwest",
     "/dynamicrouting/getpetbyid?lang=U%20S&zone=us%3Bwest&pet_id=a%20b&number=9%3B8"),
    ("/shelves/123/books/info/987", "/dynamicrouting/bookinfo?SHELF=123&BOOK=987"),
    ("/empty_path", "/"),
    ("/empty_path/", "/"),
    ("/searchpet/?timezone=PST&lang=US", "/dynamicrouting/searchpet/searchpet/?timezone=PST&lang=US"),
    ("/searchdog?timezone=UTC", "/dynamicrouting/searchdogs/searchdog?timezone=UTC"),
    ("/pets/c%20t/year/2018%3B2019", "/dynamicrouting/listpet/pets/c%20t/year/2018%3B2019"),
    ("/searchroot?zone=us-central1&lang=en", "/searchroot?zone=us-central1&lang=en"),
    ("/wildcard/a/1/b/2/c/3/4/5?key=value", "/dynamicrouting/const_wildcard?key=value&name=2"),
    ("/wildcard/a/1/b/2/c/", "/dynamicrouting/const_wildcard?name=2"),
    ("/api/company/widgetworks/user/johndoe?timezone=EST",
     "/getUser?timezone=EST&cid=widgetworks&uid=johndoe"),
    ("/default-const/5", "/defaultconst?id=5"),
    ("/uses-top/5?q=1", "/top/uses-top/5?q=1"),
])
def test_case28_translation_table(env, target, expected):
    assert uri(env, target) == expected


def test_field_path_bindings_keep_slashes(env):
    assert uri(env, "/field_path/a/1/b/2/x/9/8/7:upload", "POST") == (
        "/dynamicrouting/field_path?s_1=a/1/b/2&s_2=x/9/8/7")


def test_double_wildcard_needs_its_segment(env):
    r = env.gw.get("/wildcard/a/1/b/2/c")
    assert_local_error(r, 404, MSG_NOT_DEFINED)


@pytest.mark.parametrize("target,expected", [
    ("/echo/%4A/path/", "/prefix/echo/J/path/"),
    ("/echo/123/../123/path/", "/prefix/echo/123/path/"),
    ("/echo/12%2F3/path/", "/prefix/echo/12%2F3/path/"),
])
def test_case31_path_normalisation(env, target, expected):
    assert uri(env, target) == expected


def test_constant_address_path_too_long_400(env):
    r = env.gw.get("/pet/" + "a" * 9000 + "/num/1")
    assert_local_error(r, 400, h.MSG_PATH_TOO_LONG)


# --------------------------------------------------------------------------- 404 / 405

@pytest.mark.parametrize("target", ["/noexistoperation?key=k", "/v1/shelvesx", "/V1/shelves",
                                    "/v1/shelves/1/2", "/"])
def test_case32_unknown_path_404(env, target):
    before = len(env.echo.requests)
    assert_local_error(env.gw.get(target), 404, MSG_NOT_DEFINED)
    assert len(env.echo.requests) == before


def test_case33_method_not_allowed_405(env):
    r = env.gw.request("DELETE", "/v1/shelves/?key=k")
    assert_local_error(r, 405, msg_405("/v1/shelves"))


def test_405_names_snake_case_template(env):
    r = env.gw.request("PUT", "/v1/shelves/7")
    assert_local_error(r, 405, msg_405("/v1/shelves/{shelf_id}"))


def test_405_for_wildcard_template(env):
    r = env.gw.request("DELETE", "/pet/1/num/2")
    assert_local_error(r, 405, msg_405("/pet/{pet_id}/num/{number}"))


def test_trailing_slash_matches_exact_template(env):
    # /v1/shelves has no x-google-backend and there is a top-level one: APPEND to /top
    assert uri(env, "/v1/shelves") == "/top/v1/shelves"
    assert uri(env, "/v1/shelves/") == "/top/v1/shelves/"
    assert uri(env, "/v1/shelves", "POST") == "/top/v1/shelves"


# --------------------------------------------------------------------------- precedence

def test_case29_precedence_exact_single_double(stack, echo):
    def be(name):
        return oas.backend(f"{echo.url}/{name}", path_translation="CONSTANT_ADDRESS")
    # listed in the "wrong" order on purpose: precedence must not depend on document order
    doc = oas.document({
        "/allow-all/{double_wildcard=**}": {"post": oas.op("double", backend=be("double"))},
        "/allow-all/{single_wildcard=*}": {"post": oas.op("single", backend=be("single"))},
        "/allow-all/exact-match": {"post": oas.op("exact", backend=be("exact"))},
    })
    gw = stack.gateway(doc, fmt="json")
    env = types.SimpleNamespace(gw=gw)
    assert uri(env, "/allow-all/exact-match", "POST") == "/exact"
    assert uri(env, "/allow-all/x", "POST") == "/single?single_wildcard=x"
    assert uri(env, "/allow-all/x/y", "POST") == "/double?double_wildcard=x/y"


def test_literal_beats_variable_at_each_segment(stack, echo):
    def be(name):
        return oas.backend(f"{echo.url}/{name}", path_translation="CONSTANT_ADDRESS")
    doc = oas.document({
        "/a/{x}/c": {"get": oas.op("var", backend=be("var"))},
        "/a/b/{y}": {"get": oas.op("lit", backend=be("lit"))},
        "/a/**": {"get": oas.op("rest", backend=be("rest"))},
    })
    gw = stack.gateway(doc, fmt="yaml-json")
    env = types.SimpleNamespace(gw=gw)
    assert uri(env, "/a/b/c") == "/lit?y=c"
    assert uri(env, "/a/z/c") == "/var?x=z"
    assert uri(env, "/a/z/d") == "/rest"


# --------------------------------------------------------------------------- x-google-allow: all

def test_x_google_allow_all_catch_all(stack, echo, jwks):
    p = jwks.add("rs")
    doc = oas.document({
        "/v1/shelves": {"get": oas.op("listShelves", security=[])},
        "/v1/secure": {"get": oas.op("secure", security=[{"rs": []}])},
    }, security_definitions={"rs": p.definition()}, allow="all",
        backend=oas.backend(echo.url + "/base"))
    gw = stack.gateway(doc)
    env = types.SimpleNamespace(gw=gw)
    assert uri(env, "/v1/shelves") == "/base/v1/shelves"
    r = gw.request("DELETE", "/v1/shelves")  # unlisted method: catch-all, not 405
    assert r.status == 200 and r.echo()["RequestURI"] == "/base/v1/shelves"
    assert r.echo()["method"] == "DELETE"
    assert uri(env, "/not/listed?x=1", "POST") == "/base/not/listed?x=1"
    h.assert_jwt_error(gw.get("/v1/secure"), gw, "/v1/secure", 401, h.MSG_MISSING)
    assert uri(env, "/V1/secure") == "/base/V1/secure"  # case-sensitive: not the secure op


def test_case_sensitive_and_no_allow_all_by_default(stack, echo):
    doc = oas.document({"/Hello": {"get": oas.op("hello", backend=oas.backend(echo.url))}})
    gw = stack.gateway(doc)
    assert gw.get("/Hello").status == 200
    assert_local_error(gw.get("/hello"), 404, MSG_NOT_DEFINED)
    assert_local_error(gw.request("POST", "/Hello"), 405, msg_405("/Hello"))
