// Third-party verification of ID tokens with jose, against the public keys the
// server publishes (JWKS and the x509 certificate map), as for production
// securetoken@system.gserviceaccount.com keys.
//
// NOTE: the Firebase Auth emulator issues unsigned (alg:none) tokens and serves
// neither key URL, so these tests are expected to fail against it.
import test from 'node:test';
import assert from 'node:assert/strict';
import { createUserWithEmailAndPassword } from 'firebase/auth';
import {
  createRemoteJWKSet,
  decodeProtectedHeader,
  importX509,
  jwtVerify,
} from 'jose';
import {
  GATEHOUSE_URL,
  PROJECT,
  ISSUER,
  TEST_OPTS,
  newAuth,
  randomEmail,
  randomPassword,
  getJson,
  b64urlJson,
  jwtPayload,
} from './env.mjs';

const JWKS_PATH = '/service_accounts/v1/jwk/securetoken@system.gserviceaccount.com';
const X509_PATH = '/robot/v1/metadata/x509/securetoken@system.gserviceaccount.com';
const VERIFY_OPTS = { issuer: ISSUER, audience: PROJECT, algorithms: ['RS256'] };

async function freshIdToken(t) {
  const auth = newAuth(t);
  const email = randomEmail();
  const { user } = await createUserWithEmailAndPassword(auth, email, randomPassword());
  return { token: await user.getIdToken(), uid: user.uid, email };
}

test('12a. ID token verifies against the JWKS endpoint', TEST_OPTS, async (t) => {
  const { token, uid, email } = await freshIdToken(t);

  const header = decodeProtectedHeader(token);
  assert.equal(header.alg, 'RS256');
  assert.equal(typeof header.kid, 'string');
  assert.ok(header.kid.length > 0, 'kid must be non-empty');

  const { body } = await getJson(JWKS_PATH);
  assert.ok(Array.isArray(body.keys) && body.keys.length > 0, 'JWKS has a non-empty keys array');
  const jwk = body.keys.find((k) => k.kid === header.kid);
  assert.ok(jwk, `JWKS contains the token's kid ${header.kid}`);
  assert.equal(jwk.kty, 'RSA');
  assert.equal(jwk.alg, 'RS256');
  assert.equal(jwk.use, 'sig');
  assert.equal(typeof jwk.n, 'string');
  assert.equal(typeof jwk.e, 'string');

  const jwks = createRemoteJWKSet(new URL(GATEHOUSE_URL + JWKS_PATH));
  const { payload, protectedHeader } = await jwtVerify(token, jwks, VERIFY_OPTS);
  assert.equal(protectedHeader.kid, header.kid);
  assert.equal(payload.sub, uid);
  assert.equal(payload.user_id, uid);
  assert.equal(payload.email, email);
  assert.equal(payload.aud, PROJECT);
  assert.equal(payload.iss, ISSUER);
  assert.equal(payload.firebase?.sign_in_provider, 'password');
  const now = Math.floor(Date.now() / 1000);
  assert.ok(payload.exp > now, 'exp in the future');
  assert.ok(payload.iat <= now + 60, 'iat not in the future');
  assert.ok(payload.auth_time <= now + 60, 'auth_time not in the future');
});

test('12b. ID token verifies against the x509 certificate map', TEST_OPTS, async (t) => {
  const { token, uid } = await freshIdToken(t);
  const { kid } = decodeProtectedHeader(token);

  const { res, body } = await getJson(X509_PATH);
  const cacheControl = res.headers.get('cache-control') ?? '';
  assert.match(cacheControl, /max-age=\d+/, `cache-control with max-age expected, got ${JSON.stringify(cacheControl)}`);
  assert.equal(typeof body, 'object');
  assert.ok(!Array.isArray(body) && body !== null, 'x509 map is a JSON object');
  for (const [k, pem] of Object.entries(body)) {
    assert.equal(typeof pem, 'string', `certificate for ${k} is a string`);
    assert.match(pem, /^-----BEGIN CERTIFICATE-----\n[\s\S]+\n-----END CERTIFICATE-----\n?$/, `PEM for ${k}`);
  }
  assert.ok(typeof body[kid] === 'string', `x509 map contains the token's kid ${kid}`);

  const key = await importX509(body[kid], 'RS256');
  const { payload } = await jwtVerify(token, key, VERIFY_OPTS);
  assert.equal(payload.sub, uid);
});

test('13. tampered tokens are rejected by jwtVerify', TEST_OPTS, async (t) => {
  const { token } = await freshIdToken(t);
  const [h, p, s] = token.split('.');
  const jwks = createRemoteJWKSet(new URL(GATEHOUSE_URL + JWKS_PATH));

  // Sanity: the untouched token verifies, so failures below are due to tampering.
  await jwtVerify(token, jwks, VERIFY_OPTS);

  // (a) one character of the encoded payload changed (not the last one,
  //     whose low bits may be padding).
  const i = Math.floor(p.length / 2);
  const swapped = p[i] === 'A' ? 'B' : 'A';
  const tampered = `${h}.${p.slice(0, i)}${swapped}${p.slice(i + 1)}.${s}`;
  assert.notEqual(tampered, token);
  await assert.rejects(jwtVerify(tampered, jwks, VERIFY_OPTS), (err) => {
    assert.equal(err.code, 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED', `got ${err.code}: ${err.message}`);
    return true;
  });

  // (b) a well-formed payload with one claim changed, original signature kept.
  const forged = { ...jwtPayload(token), sub: 'someone-else', user_id: 'someone-else' };
  await assert.rejects(jwtVerify(`${h}.${b64urlJson(forged)}.${s}`, jwks, VERIFY_OPTS), (err) => {
    assert.equal(err.code, 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED', `got ${err.code}: ${err.message}`);
    return true;
  });

  // (c) the same payload re-labelled alg:none with no signature.
  const unsigned = `${b64urlJson({ alg: 'none', typ: 'JWT' })}.${p}.`;
  await assert.rejects(jwtVerify(unsigned, jwks, VERIFY_OPTS));
});
