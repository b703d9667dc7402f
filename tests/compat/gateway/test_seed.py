"""The seed's configuration (shared/seeds/003_*.txt), verbatim but for addresses.

The seed is a blog post whose text extraction lost the YAML indentation, the top-level keys
(`info:`, `schemes:`, `produces:`, `securityDefinitions:`, `firebase:`, `paths:`, `/hello:`,
`get:`, `security:`, `responses:`, `'200':`, `x-google-backend:`) and every URL. It is rebuilt
below line for line; the lost URLs are filled in as the post's setup implies:

* x-google-issuer:   the Firebase Admin service account's e-mail (as in the seed);
* x-google-jwks_uri: that account's public keys. The seed line shows only the e-mail (its
  URL prefix was stripped); here it is the account's JWK URL
  (/service_accounts/v1/jwk/<email>) on the test's key server, and the x509 form
  (/robot/v1/metadata/x509/<email>) is tested too;
* x-google-audiences: the seed shows "" (a stripped URL). The post's tokens are Firebase custom
  tokens made by `auth.create_custom_token`, whose `aud` is the Identity Toolkit audience
  below, so that is the audience that lets them through;
* address: the Cloud Run URL becomes the local echo backend.
"""

import time
import types

import pytest

import harness as h
from harness import MSG_AUDIENCE, MSG_MISSING, MSG_VERIFICATION_FAILS, assert_jwt_error

CUSTOM_TOKEN_AUDIENCE = (
    "https://identitytoolkit.googleapis.com/google.identity.identitytoolkit.v1.IdentityToolkit")
FIREBASE_ADMIN_SA = "firebase-adminsdk-abcde@seed-project.iam.gserviceaccount.com"

SEED_YAML = '''swagger: '2.0'
info:
  title: Example Gateway
  description: API Gateway with firebase auth
  version: 1.0.0
schemes:
  - https
produces:
  - application/json
securityDefinitions:
  firebase:
    authorizationUrl: ''
    flow: implicit
    type: oauth2
    x-google-issuer: "<firebase_admin_serviceaccount_email>"
    x-google-jwks_uri: "<firebase_admin_serviceaccount_jwks_uri>"
    x-google-audiences: "<custom_token_audience>"
paths:
  /hello:
    get:
      security:
        - firebase: []
      description: Hello
      operationId: hello
      responses:
        '200':
          description: Success
      x-google-backend:
        address: '<cloudrun_url>'
'''


def seed_yaml(email, jwks_uri, cloudrun_url, audience=CUSTOM_TOKEN_AUDIENCE):
    return (SEED_YAML.replace("<firebase_admin_serviceaccount_email>", email)
            .replace("<firebase_admin_serviceaccount_jwks_uri>", jwks_uri)
            .replace("<custom_token_audience>", audience)
            .replace("<cloudrun_url>", cloudrun_url))


def custom_token(sa, uid="user-42", claims=None, aud=CUSTOM_TOKEN_AUDIENCE, key=None):
    """Shaped like firebase_admin.auth.create_custom_token with a service-account credential:
    RS256, kid = private_key_id, iss = sub = the account, developer claims under "claims"."""
    now = int(time.time())
    payload = {"iss": sa.issuer, "sub": sa.issuer, "aud": aud, "uid": uid,
               "iat": now, "exp": now + 3600}
    if claims:
        payload["claims"] = claims
    return (key or sa.signing).sign(payload)


@pytest.fixture(scope="module", params=["jwk", "x509"])
def env(request, mstack):
    backend = mstack.echo()
    jw = mstack.jwks()
    sa = jw.add_service_account(FIREBASE_ADMIN_SA)
    uri = sa.jwks_uri if request.param == "jwk" else sa.x509_uri
    gw = mstack.gateway(seed_yaml(FIREBASE_ADMIN_SA, uri, backend.url))
    return types.SimpleNamespace(gw=gw, backend=backend, sa=sa)


def test_custom_token_accepted(env):
    tok = custom_token(env.sa, claims={"profile": "a-user-profile"})
    e = env.gw.get_bearer("/hello", tok).echo()
    assert e["RequestURI"] == "/"  # operation-level backend: CONSTANT_ADDRESS, empty path
    info = h.jwt_payload("x." + e["headers"]["x-apigateway-api-userinfo"] + ".y")
    assert info["uid"] == "user-42" and info["claims"] == {"profile": "a-user-profile"}
    assert e["headers"]["authorization"] == f"Bearer {tok}"  # no service-account key given


def test_missing_token_401(env):
    before = len(env.backend.requests)
    assert_jwt_error(env.gw.get("/hello"), env.gw, "/hello", 401, MSG_MISSING)
    assert len(env.backend.requests) == before


def test_token_for_other_audience_403(env):
    tok = custom_token(env.sa, aud="https://example.test/other")
    assert_jwt_error(env.gw.get_bearer("/hello", tok), env.gw, "/hello", 403, MSG_AUDIENCE)


def test_token_not_signed_by_the_account_401(env):
    forged = custom_token(env.sa, key=h.SigningKey("RS256", kid=env.sa.signing.kid))
    assert_jwt_error(env.gw.get_bearer("/hello", forged), env.gw, "/hello", 401,
                     MSG_VERIFICATION_FAILS)


def test_seed_architecture_with_gateway_service_account(stack, echo, jwks, identity):
    """The post's whole path: Firebase custom token checked at the gateway, the backend
    ("only callable by the gateway's service account") called with the gateway's ID token."""
    sa = jwks.add_service_account(FIREBASE_ADMIN_SA)
    gw = stack.gateway(seed_yaml(FIREBASE_ADMIN_SA, sa.jwks_uri, echo.url),
                       sa_key=identity.write_key_file(stack.workdir))
    tok = custom_token(sa)
    e = gw.get_bearer("/hello", tok).echo()
    id_token = e["headers"]["authorization"][len("Bearer "):]
    claims = h.jwt_payload(id_token)
    assert claims["aud"] == echo.url and claims["email"] == identity.email
    assert e["headers"]["x-forwarded-authorization"] == f"Bearer {tok}"
    assert e["headers"]["x-apigateway-api-userinfo"] == h.payload_segment(tok)
    assert_jwt_error(gw.get("/hello"), gw, "/hello", 401, MSG_MISSING)
