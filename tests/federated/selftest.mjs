// Self-test of the upstream harness: op.mjs is a working, strict OpenID Provider and token.mjs gets
// real ID tokens from it. Run: bash setup.sh && node --test selftest.mjs
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { createRemoteJWKSet, decodeProtectedHeader, jwtVerify, errors as joseErrors } from 'jose';

import { spawnOp } from './harness.mjs';
import { OAuthError, authorize, discover, exchangeCode, getToken } from './token.mjs';

const CLIENT = { clientId: 'gatehouse-rp', clientSecret: 'rp secret:with&odd=chars' };
const OTHER = { clientId: 'other-rp', clientSecret: 'other-secret' };
// Nothing listens on these: the flow stops at the redirect.
const REDIRECT = 'http://127.0.0.1:9/__/auth/handler';
const REDIRECT_2 = 'http://localhost:9/second/callback';

let op;
let shortOp;

before(async () => {
  [op, shortOp] = await Promise.all([
    spawnOp({
      ...CLIENT,
      redirectUris: [REDIRECT, REDIRECT_2],
      secondClientId: OTHER.clientId,
      secondClientSecret: OTHER.clientSecret,
    }),
    spawnOp({ ...CLIENT, redirectUris: [REDIRECT], idTokenTtl: 1 }),
  ]);
});

after(async () => {
  await Promise.all([op?.stop(), shortOp?.stop()]);
});

const base = () => ({ issuer: op.issuer, ...CLIENT, redirectUri: REDIRECT });

/** Runs `fn`, which must fail with an OAuthError, and returns that error. */
async function oauthError(fn) {
  try {
    await fn();
  } catch (err) {
    if (err instanceof OAuthError) return err;
    throw err;
  }
  assert.fail('expected the provider to refuse');
}

test('the ready line names a loopback http issuer that serves discovery', async () => {
  assert.match(op.issuer, /^http:\/\/127\.0\.0\.1:\d+$/);
  assert.equal(op.issuer, `http://127.0.0.1:${op.port}`);
  const meta = await discover(op.issuer);
  assert.equal(meta.issuer, op.issuer);
  assert.deepEqual(meta.code_challenge_methods_supported, ['S256']);
  assert.deepEqual(meta.token_endpoint_auth_methods_supported, ['client_secret_basic', 'client_secret_post']);
  assert.deepEqual(meta.id_token_signing_alg_values_supported, ['RS256']);
  assert.deepEqual(meta.scopes_supported, ['openid', 'email', 'profile']);
  for (const claim of ['sub', 'email', 'email_verified', 'name', 'picture']) {
    assert.ok(meta.claims_supported.includes(claim), claim);
  }
});

test('an ID token verifies against the JWKS and carries the account, nonce, aud and iss', async (t) => {
  const pages = [];
  const got = await getToken({ ...base(), login: 'alice', nonce: 'nonce-123', onPage: (p) => pages.push(p) });

  const header = decodeProtectedHeader(got.id_token);
  assert.equal(header.alg, 'RS256');
  const meta = await discover(op.issuer);
  const { payload } = await jwtVerify(got.id_token, createRemoteJWKSet(new URL(meta.jwks_uri)), {
    issuer: op.issuer,
    audience: CLIENT.clientId,
    algorithms: ['RS256'],
  });
  assert.equal(payload.nonce, 'nonce-123');
  assert.equal(payload.aud, CLIENT.clientId);
  assert.equal(payload.iss, op.issuer);
  assert.equal(payload.sub, 'alice');
  assert.equal(payload.email, 'alice@upstream.example');
  assert.equal(payload.email_verified, true);
  assert.equal(payload.name, 'User alice');
  assert.equal(payload.picture, 'https://upstream.example/alice.png');
  assert.equal(payload.exp - payload.iat, 3600, 'default --id-token-ttl');
  assert.equal(got.token_type, 'Bearer');
  assert.ok(got.access_token);
  t.diagnostic(`id_token header ${JSON.stringify(header)}, payload ${JSON.stringify(payload)}`);

  // The pages a browser sees, with the selectors README.md documents, and nothing off-machine.
  assert.deepEqual(pages.map((p) => p.prompt), ['login', 'consent']);
  const [login, consent] = pages.map((p) => p.html);
  assert.match(login, /<input required type="text" name="login"/);
  assert.match(login, /<input required type="password" name="password"/);
  assert.match(login, /<button type="submit" class="login login-submit">Sign-in<\/button>/);
  assert.match(consent, /<button autofocus type="submit" class="login login-submit">Continue<\/button>/);
  for (const html of [login, consent]) assert.doesNotMatch(html, /https:\/\/fonts/);
});

test('a login starting with unverified- has email_verified false', async () => {
  const { claims } = await getToken({ ...base(), login: 'unverified-bob' });
  assert.equal(claims.email, 'unverified-bob@upstream.example');
  assert.equal(claims.email_verified, false);
});

test('without a nonce the ID token has none; a random one is sent when not given', async () => {
  const none = await getToken({ ...base(), login: 'carol', nonce: null });
  assert.equal(none.claims.nonce, undefined);
  const random = await getToken({ ...base(), login: 'carol' });
  assert.ok(random.nonce);
  assert.equal(random.claims.nonce, random.nonce);
});

test('client_secret_post is accepted as well as client_secret_basic', async () => {
  const got = await getToken({ ...base(), login: 'dave', authMethod: 'client_secret_post' });
  assert.equal(got.claims.aud, CLIENT.clientId);
});

test('--id-token-ttl sets exp, and such a token expires', async () => {
  const got = await getToken({ issuer: shortOp.issuer, ...CLIENT, redirectUri: REDIRECT, login: 'erin' });
  assert.equal(got.claims.exp - got.claims.iat, 1);
  const jwks = createRemoteJWKSet(new URL((await discover(shortOp.issuer)).jwks_uri));
  const wait = got.claims.exp * 1000 - Date.now() + 1100;
  if (wait > 0) await sleep(wait);
  await assert.rejects(
    jwtVerify(got.id_token, jwks, { issuer: shortOp.issuer, audience: CLIENT.clientId }),
    joseErrors.JWTExpired,
  );
});

test('a code cannot be exchanged twice, and the replay revokes what the first exchange issued', async (t) => {
  const front = await getToken({ ...base(), login: 'frank', exchange: false });
  assert.deepEqual(Object.keys(front).sort(), ['code', 'codeVerifier', 'iss', 'nonce', 'redirectUri', 'state']);
  assert.equal(front.iss, op.issuer, 'the authorization response carries iss (RFC 9207)');
  const exchange = () => exchangeCode({ ...base(), code: front.code, codeVerifier: front.codeVerifier });

  const first = await exchange();
  assert.ok(first.id_token);
  const userinfo = (token) => fetch(`${op.issuer}/me`, { headers: { authorization: `Bearer ${token}` } });
  assert.equal((await userinfo(first.access_token)).status, 200);

  const replay = await oauthError(exchange);
  t.diagnostic(`replayed code: HTTP ${replay.status} ${JSON.stringify(replay.body)}`);
  assert.equal(replay.status, 400);
  assert.deepEqual(replay.body, { error: 'invalid_grant', error_description: 'grant request is invalid' });
  assert.equal((await userinfo(first.access_token)).status, 401, 'access token revoked after the replay');
});

test('a redirect_uri that is not registered gets the error page, not a redirect', async (t) => {
  const err = await oauthError(() => authorize({ ...base(), redirectUri: 'http://127.0.0.1:9/evil', login: 'gina' }));
  t.diagnostic(`unregistered redirect_uri: HTTP ${err.status} ${JSON.stringify(err.body)}`);
  assert.equal(err.status, 400);
  assert.equal(err.body.error, 'invalid_redirect_uri');
  assert.equal(err.body.error_description, "redirect_uri did not match any of the client's registered redirect_uris");
});

test('a code redeemed with another registered redirect_uri is refused', async (t) => {
  const front = await getToken({ ...base(), login: 'hank', exchange: false });
  const err = await oauthError(() => exchangeCode({ ...base(), redirectUri: REDIRECT_2, code: front.code, codeVerifier: front.codeVerifier }));
  t.diagnostic(`redirect_uri mismatch at the token endpoint: HTTP ${err.status} ${JSON.stringify(err.body)}`);
  assert.equal(err.status, 400);
  assert.equal(err.body.error, 'invalid_grant');
  const missing = await oauthError(() => exchangeCode({ ...base(), redirectUri: undefined, code: front.code, codeVerifier: front.codeVerifier }));
  t.diagnostic(`redirect_uri omitted at the token endpoint: HTTP ${missing.status} ${JSON.stringify(missing.body)}`);
  assert.equal(missing.body.error, 'invalid_request');
});

test('PKCE is required, and the verifier must match', async (t) => {
  const noPkce = await oauthError(() => authorize({ ...base(), login: 'ivy', pkce: false }));
  t.diagnostic(`no code_challenge: ${JSON.stringify(noPkce.body)}`);
  assert.equal(noPkce.body.error, 'invalid_request');
  assert.match(noPkce.body.error_description, /PKCE/);

  const front = await getToken({ ...base(), login: 'ivy', exchange: false });
  const wrong = await oauthError(() => exchangeCode({ ...base(), code: front.code, codeVerifier: 'x'.repeat(43) }));
  const none = await oauthError(() => exchangeCode({ ...base(), code: front.code, codeVerifier: undefined }));
  t.diagnostic(`wrong code_verifier: ${JSON.stringify(wrong.body)}; none: ${JSON.stringify(none.body)}`);
  assert.equal(wrong.body.error, 'invalid_grant');
  assert.equal(none.body.error, 'invalid_grant');
});

test('the second client gets tokens for itself and cannot redeem the first client\'s code', async (t) => {
  const own = await getToken({ ...base(), ...OTHER, login: 'jack' });
  assert.equal(own.claims.aud, OTHER.clientId);

  const front = await getToken({ ...base(), login: 'jack', exchange: false });
  const stolen = await oauthError(() => exchangeCode({ ...base(), ...OTHER, code: front.code, codeVerifier: front.codeVerifier }));
  t.diagnostic(`code of another client: HTTP ${stolen.status} ${JSON.stringify(stolen.body)}`);
  assert.equal(stolen.body.error, 'invalid_grant');
});

test('a wrong client secret is invalid_client', async (t) => {
  const front = await getToken({ ...base(), login: 'kate', exchange: false });
  const err = await oauthError(() => exchangeCode({ ...base(), clientSecret: 'wrong', code: front.code, codeVerifier: front.codeVerifier }));
  t.diagnostic(`wrong secret: HTTP ${err.status} ${JSON.stringify(err.body)}`);
  assert.equal(err.status, 401);
  assert.equal(err.body.error, 'invalid_client');
});
