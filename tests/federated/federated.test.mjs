// Black-box tests of Gatehouse's federated sign-in (OpenID Connect) against real upstream OpenID
// Providers (op.mjs), over HTTP and through the real Firebase JS SDK.
//
// Started by run.mjs, which provides (environment):
//   GATEHOUSE_URL                 the identity server, http://127.0.0.1:<port>
//   FED_DEV_PROJECT               development project (default project): oidc.corp, oidc.trusted, oidc.short
//   FED_PROD_PROJECT, FED_PROD_API_KEY   production project and its API key: oidc.corp
//   FED_ADMIN_KEY                 admin bearer key
//   FED_REDIRECT_URI              <GATEHOUSE_URL>/__/auth/handler (registered at every OP)
//   FED_OP1_ISSUER                clients gatehouse (oidc.corp) and other-app (oidc.trusted)
//   FED_OP2_ISSUER                another issuer with a client `gatehouse` (configured nowhere)
//   FED_OP3_ISSUER                ID tokens live 1 s (oidc.short)
//   FED_CORP_CLIENT_ID/SECRET, FED_OTHER_CLIENT_ID/SECRET
//
// Everything except the expiry test runs in sequence; the expiry test (it must wait ~62 s for the
// server's 60 s clock leeway to pass) runs alongside the others.

// The SDK captures `fetch` when it loads: wrap it first, so the test can see which paths the SDK
// calls in emulator mode (requests carrying the SDK's X-Client-Version header are recorded).
const realFetch = globalThis.fetch;
const sdkRequests = [];
globalThis.fetch = async (input, init = {}) => {
  const res = await realFetch(input, init);
  const headers = new Headers(init.headers ?? (input instanceof Request ? input.headers : undefined));
  if (headers.has('x-client-version')) {
    sdkRequests.push({ method: init.method ?? 'GET', url: String(input instanceof Request ? input.url : input), status: res.status });
  }
  return res;
};

const assert = (await import('node:assert/strict')).default;
const { createHash, randomBytes } = await import('node:crypto');
const { describe, test, before, after } = await import('node:test');
const { setTimeout: sleep } = await import('node:timers/promises');
const { getToken, authorize, discover, decodeJwt } = await import('./token.mjs');
const { initializeApp, deleteApp } = await import('firebase/app');
const {
  initializeAuth, inMemoryPersistence, connectAuthEmulator, signInWithCredential, signInWithEmailAndPassword,
  linkWithCredential, OAuthProvider, getAdditionalUserInfo,
} = await import('firebase/auth');

function need(name) {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set: run this file through tests/federated/run.mjs`);
  return v;
}

const GH = need('GATEHOUSE_URL').replace(/\/+$/, '');
const DEV = need('FED_DEV_PROJECT');
const PROD = need('FED_PROD_PROJECT');
const PROD_KEY = need('FED_PROD_API_KEY');
const REDIRECT = need('FED_REDIRECT_URI');
const OP1 = need('FED_OP1_ISSUER');
const OP2 = need('FED_OP2_ISSUER');
const OP3 = need('FED_OP3_ISSUER');
const CORP = { clientId: need('FED_CORP_CLIENT_ID'), clientSecret: need('FED_CORP_CLIENT_SECRET') };
const OTHER = { clientId: need('FED_OTHER_CLIENT_ID'), clientSecret: need('FED_OTHER_CLIENT_SECRET') };
const DEV_KEY = 'any-dev-key'; // any key selects the development (default) project
const RETURN_ORIGIN = 'http://127.0.0.1:5555';
const SKEW_SECS = 60; // the server's clock leeway for upstream tokens

const T = { timeout: 60_000 };
const RUN = randomBytes(3).toString('hex');
let serial = 0;
/** A login name unique to this run (it becomes the upstream `sub`, and `<login>@upstream.example`). */
const uniq = (prefix) => `${prefix}-${RUN}${(serial += 1)}`;
const upstreamEmail = (login) => `${login}@upstream.example`;
const sha256hex = (s) => createHash('sha256').update(s).digest('hex');

// ---------------------------------------------------------------------------------------------
// HTTP helpers

/** POST an Identity Toolkit operation; resolves to { status, body }. */
async function api(op, body, { key = DEV_KEY, bearer } = {}) {
  const headers = { 'content-type': 'application/json' };
  if (bearer) headers.authorization = `Bearer ${bearer}`;
  const url = `${GH}/identitytoolkit.googleapis.com/v1/${op}${bearer ? '' : `?key=${encodeURIComponent(key)}`}`;
  const res = await realFetch(url, { method: 'POST', headers, body: JSON.stringify(body), signal: AbortSignal.timeout(20_000) });
  const text = await res.text();
  let json;
  try { json = JSON.parse(text); } catch { json = text; }
  return { status: res.status, body: json };
}

/** The operation must answer 200; resolves to the body. */
async function ok(op, body, opts) {
  const res = await api(op, body, opts);
  assert.equal(res.status, 200, `${op} should succeed, got HTTP ${res.status}: ${JSON.stringify(res.body)}`);
  return res.body;
}

/** Asserts a Firebase-shaped error: HTTP `status`, message `CODE` or `CODE : detail`. */
function assertApiError(res, code, detail, status = 400) {
  const msg = res.body?.error?.message;
  assert.equal(res.status, status, `expected HTTP ${status} ${code}, got ${res.status}: ${JSON.stringify(res.body)}`);
  assert.equal(typeof msg, 'string', `error body has no message: ${JSON.stringify(res.body)}`);
  const [left, ...rest] = msg.split(' : ');
  const codes = Array.isArray(code) ? code : [code];
  assert.ok(codes.includes(left), `expected error ${codes.join(' or ')}, got "${msg}"`);
  if (detail) assert.match(rest.join(' : '), detail, `error detail of "${msg}"`);
  assert.equal(res.body.error.code, status);
  return msg;
}

/** A signInWithIdp request body: `params` go into postBody (form-encoded). */
function idpRequest(params, extra = {}) {
  return {
    requestUri: 'http://127.0.0.1',
    postBody: new URLSearchParams(params).toString(),
    returnSecureToken: true,
    ...extra,
  };
}

const signInWithIdp = (params, extra, opts) => api('accounts:signInWithIdp', idpRequest(params, extra), opts);

/** An ID token from an upstream provider (the code flow at the OP, no browser). */
function upstream({ issuer = OP1, client = CORP, login, nonce }) {
  return getToken({ issuer, ...client, redirectUri: REDIRECT, login, nonce });
}

async function signUp(email, password, opts) {
  return ok('accounts:signUp', { email, password, returnSecureToken: true }, opts);
}

async function lookup(idToken, opts) {
  const body = await ok('accounts:lookup', { idToken }, opts);
  assert.equal(body.users?.length, 1, `lookup should return one user: ${JSON.stringify(body)}`);
  return body.users[0];
}

const providerIds = (user) => (user.providerUserInfo ?? []).map((p) => p.providerId).sort();
const b64json = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
/** The emulator's fake IdP token: an unsigned JWT. */
const unsignedJwt = (claims) => `${b64json({ alg: 'none', typ: 'JWT' })}.${b64json(claims)}.`;

// ---------------------------------------------------------------------------------------------
// Hosted-page helpers (GET /__/auth/federated/start and /__/auth/handler)

// The browser's cookies for the identity server: start sets a cookie binding the flow to the
// browser, and the callback must bring it back.
const ghCookies = new Map();

/** GET start without following the redirect; resolves to { status, location, params, html }. */
async function start({ providerId = 'oidc.corp', apiKey = 'k', mode = 'popup', origin = RETURN_ORIGIN, redirectUrl, nonce = randomBytes(16).toString('base64url') } = {}) {
  const q = new URLSearchParams({ providerId, apiKey, mode, origin });
  if (redirectUrl) q.set('redirectUrl', redirectUrl);
  // A redirect flow carries the starting page's nonce (login CSRF protection).
  if (mode === 'redirect') q.set('nonce', nonce);
  const res = await realFetch(`${GH}/__/auth/federated/start?${q}`, { redirect: 'manual', signal: AbortSignal.timeout(20_000) });
  for (const line of res.headers.getSetCookie()) {
    const [pair] = line.split(';');
    const eq = pair.indexOf('=');
    ghCookies.set(pair.slice(0, eq).trim(), pair.slice(eq + 1).trim());
  }
  const location = res.headers.get('location');
  const html = await res.text();
  const params = location ? Object.fromEntries(new URL(location).searchParams) : undefined;
  return { status: res.status, location, params, html, headers: res.headers };
}

/** Signs `login` in at OP1 with the authorization request Gatehouse built; returns the callback URL. */
async function loginAtOp(location, login, overrides = {}) {
  const u = new URL(location);
  const p = { ...Object.fromEntries(u.searchParams), ...overrides };
  const got = await authorize({
    issuer: u.origin,
    clientId: p.client_id,
    redirectUri: p.redirect_uri,
    login,
    state: p.state,
    nonce: p.nonce,
    scope: p.scope,
    pkce: false, // Gatehouse's own challenge is passed on as is
    extraParams: { code_challenge: p.code_challenge, code_challenge_method: p.code_challenge_method },
  });
  const cb = new URL(p.redirect_uri);
  cb.searchParams.set('code', got.code);
  cb.searchParams.set('state', got.state);
  if (got.iss) cb.searchParams.set('iss', got.iss);
  return { callback: cb.href, code: got.code, state: got.state, iss: got.iss };
}

/** Follows the provider's pages and clicks "[ Cancel ]"; returns the URL the provider sends back. */
async function cancelAtOp(location) {
  const jar = new Map();
  const cookieHeader = (url) => {
    const { pathname } = new URL(url);
    return [...jar.values()]
      .filter((c) => pathname === c.path || pathname.startsWith(c.path.endsWith('/') ? c.path : `${c.path}/`))
      .map((c) => `${c.name}=${c.value}`).join('; ');
  };
  let url = location;
  for (let step = 0; step < 10; step += 1) {
    const res = await realFetch(url, { redirect: 'manual', headers: { cookie: cookieHeader(url) } });
    for (const line of res.headers.getSetCookie()) {
      const [pair, ...attrs] = line.split(';').map((s) => s.trim());
      const eq = pair.indexOf('=');
      const path = attrs.find((a) => a.toLowerCase().startsWith('path='))?.slice(5) ?? '/';
      jar.set(`${pair.slice(0, eq)};${path}`, { name: pair.slice(0, eq), value: pair.slice(eq + 1), path });
    }
    if (res.status >= 300 && res.status < 400) {
      const next = new URL(res.headers.get('location'), url).href;
      await res.arrayBuffer();
      if (next.startsWith(REDIRECT)) return next;
      url = next;
      continue;
    }
    const html = await res.text();
    const abort = /href="([^"]*\/abort)"/.exec(html)?.[1];
    assert.ok(abort, `no Cancel link on the provider's page ${url} (HTTP ${res.status}): ${html.slice(0, 300)}`);
    url = new URL(abort.replace(/&amp;/g, '&'), url).href;
  }
  throw new Error('the provider did not send the browser back after Cancel');
}

/** GET a page of the hosted flow; resolves to { status, headers, html, config }. */
async function page(url, { cookies = true } = {}) {
  const headers = {};
  if (cookies && url.startsWith(GH)) {
    headers.cookie = [...ghCookies].map(([k, v]) => `${k}=${v}`).join('; ');
  }
  const res = await realFetch(url, { redirect: 'manual', headers, signal: AbortSignal.timeout(20_000) });
  const html = await res.text();
  const m = /const CONFIG = (.*);\s*$/m.exec(html);
  assert.ok(m, `HTTP ${res.status} from ${new URL(url).pathname}: no "const CONFIG = {...};" in the page: ${html.slice(0, 300)}`);
  return { status: res.status, headers: res.headers, html, config: JSON.parse(m[1]) };
}

/** Asserts the hosted page is an error page with `status` and an error matching `re`. */
function assertErrorPage(p, status, re) {
  assert.equal(p.status, status, `expected an HTTP ${status} error page, got ${p.status}: ${JSON.stringify(p.config)}`);
  assert.equal(typeof p.config.error, 'string', `the page carries no error: ${JSON.stringify(p.config)}`);
  assert.match(p.config.error, re);
  assert.ok(p.config.result == null, `an error page must carry no result: ${JSON.stringify(p.config.result)}`);
  assert.equal(p.headers.get('cache-control'), 'no-store');
}

// ---------------------------------------------------------------------------------------------
// JS SDK helper

const apps = [];
function sdkAuth(apiKey = 'sdk-key', projectId = DEV) {
  const app = initializeApp({ apiKey, projectId, authDomain: '127.0.0.1' }, `fed-${RUN}-${(serial += 1)}`);
  apps.push(app);
  const auth = initializeAuth(app, { persistence: inMemoryPersistence });
  connectAuthEmulator(auth, GH, { disableWarnings: true });
  return auth;
}

async function sdkError(promise, code, what) {
  try {
    const r = await promise;
    assert.fail(`${what}: expected ${code}, but it succeeded (uid ${r?.user?.uid})`);
  } catch (err) {
    if (err instanceof assert.AssertionError) throw err;
    assert.equal(err.code, code, `${what}: expected ${code}, got ${err.code} (${err.message})`);
    return err;
  }
}

// =============================================================================================

describe('federated sign-in (OpenID Connect)', { concurrency: true }, () => {
  before(async () => {
    // Fail early and clearly when something is not up.
    const meta = await discover(OP1);
    assert.equal(meta.issuer, OP1);
    const res = await realFetch(`${GH}/`);
    assert.equal(res.status, 200, 'Gatehouse answers at /');
  });
  after(() => Promise.all(apps.map((app) => deleteApp(app).catch(() => {}))));

  // Alone, because it waits out the leeway; it runs while the scenarios below run.
  test('an expired upstream ID token is refused once the 60 s clock leeway has passed', { timeout: 150_000 }, async () => {
    const login = uniq('late');
    const t = await upstream({ issuer: OP3, login });
    assert.equal(t.claims.exp - t.claims.iat, 1, 'OP3 issues 1-second ID tokens');

    const first = await signInWithIdp({ id_token: t.id_token, providerId: 'oidc.short' });
    assert.equal(first.status, 200, `a fresh token is accepted: ${JSON.stringify(first.body)}`);
    assert.equal(first.body.isNewUser, true);

    // Past exp but inside the leeway: still accepted.
    await sleep(Math.max(0, (t.claims.exp + SKEW_SECS / 2) * 1000 - Date.now()));
    const inside = await signInWithIdp({ id_token: t.id_token, providerId: 'oidc.short' });
    assert.equal(inside.status, 200, `exp + 30 s is inside the 60 s leeway: ${JSON.stringify(inside.body)}`);
    assert.equal(inside.body.localId, first.body.localId);

    // The server accepts while now <= exp + 60: wait for exp + 62.
    await sleep(Math.max(0, (t.claims.exp + SKEW_SECS + 2) * 1000 - Date.now()));
    const late = await signInWithIdp({ id_token: t.id_token, providerId: 'oidc.short' });
    assertApiError(late, 'INVALID_IDP_RESPONSE', /^the provider's ID token has expired$/);
  });

  describe('scenarios', { concurrency: 1 }, () => {
    // ---------------------------------------------------------------------------------------
    describe('accounts:signInWithIdp (REST)', () => {
      test('a new upstream identity creates an account; the second sign-in finds it', T, async () => {
        const login = uniq('alice');
        const t = await upstream({ login });
        const r = await ok('accounts:signInWithIdp', idpRequest({ id_token: t.id_token, providerId: 'oidc.corp' }));

        assert.equal(r.kind, 'identitytoolkit#VerifyAssertionResponse');
        assert.equal(r.isNewUser, true);
        assert.equal(r.providerId, 'oidc.corp');
        assert.equal(r.federatedId, login, 'federatedId of an oidc.* provider is the subject');
        assert.equal(typeof r.localId, 'string');
        assert.ok(r.localId.length > 0);
        assert.equal(r.email, upstreamEmail(login));
        assert.equal(r.emailVerified, true);
        assert.equal(r.displayName, `User ${login}`);
        assert.equal(r.photoUrl, `https://upstream.example/${login}.png`);
        assert.equal(r.oauthIdToken, t.id_token);
        assert.equal(r.needConfirmation, undefined);
        assert.equal(typeof r.rawUserInfo, 'string', 'rawUserInfo is a JSON string');
        const raw = JSON.parse(r.rawUserInfo);
        assert.equal(raw.sub, login);
        assert.equal(raw.email, upstreamEmail(login));
        assert.equal(raw.iss, OP1);
        assert.equal(raw.aud, CORP.clientId);
        assert.equal(typeof r.refreshToken, 'string');
        assert.equal(r.expiresIn, '3600');

        const c = decodeJwt(r.idToken);
        assert.equal(c.sub, r.localId);
        assert.equal(c.user_id, r.localId);
        assert.equal(c.aud, DEV);
        assert.equal(c.iss, `https://securetoken.google.com/${DEV}`);
        assert.equal(c.email, upstreamEmail(login));
        assert.equal(c.email_verified, true);
        assert.equal(c.name, `User ${login}`);
        assert.equal(c.firebase?.sign_in_provider, 'oidc.corp');
        assert.deepEqual(c.firebase?.identities?.['oidc.corp'], [login]);
        assert.deepEqual(c.firebase?.identities?.email, [upstreamEmail(login)]);

        // A new upstream token for the same subject: the same account.
        const t2 = await upstream({ login });
        const again = await ok('accounts:signInWithIdp', idpRequest({ id_token: t2.id_token, providerId: 'oidc.corp' }));
        assert.equal(again.localId, r.localId);
        assert.equal(again.isNewUser, false);
        assert.equal(decodeJwt(again.idToken).firebase.sign_in_provider, 'oidc.corp');

        const u = await lookup(again.idToken);
        assert.equal(u.localId, r.localId);
        assert.equal(u.email, upstreamEmail(login));
        const info = u.providerUserInfo?.find((p) => p.providerId === 'oidc.corp');
        assert.ok(info, `lookup lists oidc.corp: ${JSON.stringify(u.providerUserInfo)}`);
        assert.equal(info.rawId, login);
        assert.equal(info.federatedId, login);
        assert.equal(info.email, upstreamEmail(login));
        assert.equal(info.displayName, `User ${login}`);
        assert.equal(info.photoUrl, `https://upstream.example/${login}.png`);
        assert.deepEqual(providerIds(u), ['oidc.corp']);

        // The Admin SDK's getUserByProviderUid.
        const admin = await ok('accounts:lookup', { federatedUserId: [{ providerId: 'oidc.corp', rawId: login }] }, { bearer: 'owner' });
        assert.equal(admin.users?.[0]?.localId, r.localId);
      });

      test('concurrent first sign-ins of one new identity all land in one account', T, async () => {
        // A double click, or an SDK retry, sends the same new identity twice at once. Every request
        // must succeed (one creates the account, the others find it). Several rounds, as a race.
        const rounds = [];
        for (let i = 0; i < 3; i += 1) {
          const login = uniq('race');
          const tokens = await Promise.all([1, 2, 3, 4].map(() => upstream({ login })));
          rounds.push({ what: `oidc.corp ${login}`, params: tokens.map((t) => ({ id_token: t.id_token, providerId: 'oidc.corp' })) });
          const sub = uniq('race-fake'); // no e-mail: only the identity itself collides
          rounds.push({ what: `fake.example ${sub}`, params: [1, 2, 3, 4].map(() => ({ id_token: JSON.stringify({ sub }), providerId: 'fake.example' })) });
        }
        const failures = [];
        for (const round of rounds) {
          const all = await Promise.all(round.params.map((p) => signInWithIdp(p)));
          const bad = all
            .filter((r) => r.status !== 200 || r.body.needConfirmation || !r.body.idToken)
            .map((r) => (r.status === 200 ? `200 needConfirmation=${r.body.needConfirmation}` : `${r.status} ${r.body?.error?.message}`));
          if (bad.length) failures.push(`${round.what}: ${bad.length}/4 not signed in (${[...new Set(bad)].join(', ')})`);
          const ids = new Set(all.filter((r) => r.status === 200 && r.body.localId).map((r) => r.body.localId));
          assert.equal(ids.size, 1, `${round.what}: one account, got ${[...ids].join(', ')}`);
          assert.ok(all.filter((r) => r.body?.isNewUser).length <= 1, `${round.what}: at most one isNewUser`);
        }
        assert.deepEqual(failures, [], 'concurrent sign-ins of a new identity were refused');
      });

      test('a disabled account cannot sign in with its identity', T, async () => {
        const login = uniq('disabled');
        const r = await ok('accounts:signInWithIdp', idpRequest({ id_token: (await upstream({ login })).id_token, providerId: 'oidc.corp' }));
        await ok('accounts:update', { localId: r.localId, disableUser: true }, { bearer: 'owner' });
        const res = await signInWithIdp({ id_token: (await upstream({ login })).id_token, providerId: 'oidc.corp' });
        assertApiError(res, 'USER_DISABLED');
      });

      test('a nonce in postBody must match the token: raw or its SHA-256 (hex)', T, async () => {
        const raw = `n-${randomBytes(8).toString('hex')}`;
        const t1 = await upstream({ login: uniq('nonce'), nonce: raw });
        await ok('accounts:signInWithIdp', idpRequest({ id_token: t1.id_token, providerId: 'oidc.corp', nonce: raw }));
        const t2 = await upstream({ login: uniq('hashed'), nonce: sha256hex(raw) });
        await ok('accounts:signInWithIdp', idpRequest({ id_token: t2.id_token, providerId: 'oidc.corp', nonce: raw }));
      });
    });

    // ---------------------------------------------------------------------------------------
    describe('the Firebase JS SDK (connectAuthEmulator)', () => {
      test('signInWithCredential(OAuthProvider("oidc.corp").credential({idToken}))', T, async (t) => {
        const auth = sdkAuth('sdk-key');
        const login = uniq('sdk');
        const up = await upstream({ login });
        const before = sdkRequests.length;
        const cred = await signInWithCredential(auth, new OAuthProvider('oidc.corp').credential({ idToken: up.id_token }));
        const user = cred.user;
        assert.equal(cred.providerId, 'oidc.corp');
        assert.equal(user.providerData[0]?.providerId, 'oidc.corp');
        assert.equal(user.providerData[0]?.uid, login);
        assert.equal(user.providerData[0]?.email, upstreamEmail(login));
        assert.equal(user.email, upstreamEmail(login));
        assert.equal(user.displayName, `User ${login}`);
        assert.equal(user.photoURL, `https://upstream.example/${login}.png`);
        assert.equal(user.isAnonymous, false);
        const extra = getAdditionalUserInfo(cred);
        assert.equal(extra.isNewUser, true);
        assert.equal(extra.providerId, 'oidc.corp');
        assert.equal(extra.profile?.sub, login);
        assert.equal(OAuthProvider.credentialFromResult(cred)?.idToken, up.id_token);

        const idr = await user.getIdTokenResult();
        assert.equal(idr.signInProvider, 'oidc.corp');
        assert.deepEqual(idr.claims.firebase.identities['oidc.corp'], [login]);

        // Refreshing keeps the sign-in provider.
        const refreshed = decodeJwt(await user.getIdToken(true));
        assert.equal(refreshed.firebase.sign_in_provider, 'oidc.corp');
        assert.equal(refreshed.sub, user.uid);

        // The paths the SDK used in emulator mode, all answered 200.
        const seen = sdkRequests.slice(before).map((r) => ({ ...r, path: new URL(r.url).pathname }));
        const paths = seen.map((r) => `${r.method} ${r.path} ${r.status}`);
        t.diagnostic(`SDK requests: ${paths.join(' | ')}`);
        assert.ok(paths.includes('POST /identitytoolkit.googleapis.com/v1/accounts:signInWithIdp 200'), paths.join('\n'));
        assert.ok(paths.includes('POST /identitytoolkit.googleapis.com/v1/accounts:lookup 200'), paths.join('\n'));
        assert.ok(paths.includes('POST /securetoken.googleapis.com/v1/token 200'), paths.join('\n'));
        for (const r of seen) {
          assert.ok(r.url.startsWith(`${GH}/`), `the SDK went to ${r.url}`);
          assert.equal(r.status, 200, `${r.method} ${r.url} -> ${r.status}`);
          assert.equal(new URL(r.url).searchParams.get('key'), 'sdk-key');
        }
      });

      test('credential({idToken, rawNonce}): the token carries the raw nonce, or its SHA-256', T, async () => {
        const auth = sdkAuth();
        const rawNonce = `raw-${randomBytes(8).toString('hex')}`;

        const login1 = uniq('nonce-sdk');
        const t1 = await upstream({ login: login1, nonce: rawNonce });
        const c1 = await signInWithCredential(auth, new OAuthProvider('oidc.corp').credential({ idToken: t1.id_token, rawNonce }));
        assert.equal(c1.user.providerData[0]?.providerId, 'oidc.corp');
        assert.equal(c1.user.providerData[0]?.uid, login1);

        // The documented pattern (Apple and others): the provider got sha256(rawNonce).
        const login2 = uniq('hnonce-sdk');
        const t2 = await upstream({ login: login2, nonce: sha256hex(rawNonce) });
        const c2 = await signInWithCredential(auth, new OAuthProvider('oidc.corp').credential({ idToken: t2.id_token, rawNonce }));
        assert.equal(c2.user.providerData[0]?.uid, login2);

        // A rawNonce that matches neither.
        const t3 = await upstream({ login: uniq('bad-nonce-sdk'), nonce: rawNonce });
        const err = await sdkError(
          signInWithCredential(auth, new OAuthProvider('oidc.corp').credential({ idToken: t3.id_token, rawNonce: 'something-else' })),
          'auth/invalid-credential',
          'wrong rawNonce',
        );
        assert.match(err.message, /nonce/);
      });
    });

    // ---------------------------------------------------------------------------------------
    describe('refused upstream tokens', () => {
      test('a token minted for another client (aud other-app) sent as oidc.corp', T, async () => {
        const t = await upstream({ client: OTHER, login: uniq('aud') });
        assert.equal(t.claims.aud, OTHER.clientId);
        const res = await signInWithIdp({ id_token: t.id_token, providerId: 'oidc.corp' });
        assertApiError(res, 'INVALID_IDP_RESPONSE', /is for another client \(aud "other-app"\), not "gatehouse"/);
      });

      test('an access token issued to another client (other-app) sent as oidc.corp', T, async () => {
        // The ID token of the same grant is refused (aud other-app): its access token must not get
        // around that check through the userinfo endpoint (token substitution: any client of the
        // provider could sign its users in here).
        const login = uniq('at-other');
        const t = await upstream({ client: OTHER, login });
        assert.ok(t.access_token);
        const res = await signInWithIdp({ access_token: t.access_token, providerId: 'oidc.corp' });
        assertApiError(res, 'INVALID_IDP_RESPONSE');
      });

      test('a token from another issuer (OP2, same client id)', T, async () => {
        const t = await upstream({ issuer: OP2, login: uniq('iss') });
        const res = await signInWithIdp({ id_token: t.id_token, providerId: 'oidc.corp' });
        const msg = assertApiError(res, 'INVALID_IDP_RESPONSE', /was issued by /);
        assert.ok(msg.includes(`"${OP2}"`) && msg.includes(`not "${OP1}"`), msg);
      });

      test('a nonce in postBody that differs from the token\'s, or a token without one', T, async () => {
        const t = await upstream({ login: uniq('nonce'), nonce: 'nonce-A' });
        const res = await signInWithIdp({ id_token: t.id_token, providerId: 'oidc.corp', nonce: 'nonce-B' });
        assertApiError(res, 'INVALID_IDP_RESPONSE', /the nonce in the ID token does not match the one given/);
        const bare = await upstream({ login: uniq('nononce'), nonce: null });
        assert.equal(bare.claims.nonce, undefined);
        const res2 = await signInWithIdp({ id_token: bare.id_token, providerId: 'oidc.corp', nonce: 'nonce-B' });
        assertApiError(res2, 'INVALID_IDP_RESPONSE', /the nonce in the ID token does not match the one given/);
      });

      test('a token whose payload was altered (signature no longer matches)', T, async () => {
        const t = await upstream({ login: uniq('tamper') });
        const [h, , s] = t.id_token.split('.');
        const forged = `${h}.${b64json({ ...t.claims, sub: 'mallory', email: 'mallory@upstream.example' })}.${s}`;
        const res = await signInWithIdp({ id_token: forged, providerId: 'oidc.corp' });
        assertApiError(res, 'INVALID_IDP_RESPONSE', /signature is invalid/);
      });

      test('a fake (unsigned) token for a configured provider, on the development project too', T, async () => {
        const claims = { iss: OP1, aud: CORP.clientId, sub: uniq('fake'), exp: Math.floor(Date.now() / 1000) + 600, iat: Math.floor(Date.now() / 1000) };
        const res = await signInWithIdp({ id_token: unsignedJwt(claims), providerId: 'oidc.corp' });
        assertApiError(res, 'INVALID_IDP_RESPONSE', /algorithm "none"/);
        const json = await signInWithIdp({ id_token: JSON.stringify(claims), providerId: 'oidc.corp' });
        assertApiError(json, 'INVALID_IDP_RESPONSE', /not a JWT/);
      });
    });

    // ---------------------------------------------------------------------------------------
    describe('production vs development project', () => {
      test('production: a configured provider works; unknown providers and fake tokens are refused', T, async () => {
        const prod = { key: PROD_KEY };
        const login = uniq('prod');
        const t = await upstream({ login });
        const r = await ok('accounts:signInWithIdp', idpRequest({ id_token: t.id_token, providerId: 'oidc.corp' }), prod);
        assert.equal(r.isNewUser, true);
        assert.equal(decodeJwt(r.idToken).aud, PROD);
        assert.equal(decodeJwt(r.idToken).firebase.sign_in_provider, 'oidc.corp');
        // The same upstream identity is a different account in the development project.
        const t2 = await upstream({ login });
        const d = await ok('accounts:signInWithIdp', idpRequest({ id_token: t2.id_token, providerId: 'oidc.corp' }));
        assert.equal(d.isNewUser, true);
        assert.notEqual(d.localId, r.localId);

        const t3 = await upstream({ login: uniq('prod') });
        const unknown = await signInWithIdp({ id_token: t3.id_token, providerId: 'oidc.nope' }, {}, prod);
        assertApiError(unknown, 'INVALID_PROVIDER_ID', /the identity provider oidc\.nope is not configured for this project/);

        const fake = JSON.stringify({ sub: uniq('fake'), email: `${uniq('fake')}@example.com` });
        const refused = await signInWithIdp({ id_token: fake, providerId: 'fake.example' }, {}, prod);
        assertApiError(refused, 'INVALID_PROVIDER_ID', /the identity provider fake\.example is not configured for this project/);
        const refusedJwt = await signInWithIdp({ id_token: unsignedJwt({ sub: uniq('fake') }), providerId: 'fake.example' }, {}, prod);
        assertApiError(refusedJwt, 'INVALID_PROVIDER_ID', /fake\.example is not configured/);
        const unsignedCorp = await signInWithIdp({ id_token: unsignedJwt({ ...t3.claims }), providerId: 'oidc.corp' }, {}, prod);
        assertApiError(unsignedCorp, 'INVALID_IDP_RESPONSE', /algorithm "none"/);
      });

      test('development: the emulator\'s fake IdP accepts plain JSON and unsigned JWTs for an unconfigured provider', T, async () => {
        const sub = uniq('fake');
        const email = `${sub}@fake.example`;
        const r = await ok('accounts:signInWithIdp', idpRequest({ id_token: JSON.stringify({ sub, email, email_verified: true, name: 'Fake User' }), providerId: 'fake.example' }));
        assert.equal(r.isNewUser, true);
        assert.equal(r.providerId, 'fake.example');
        assert.equal(r.federatedId, sub);
        assert.equal(r.email, email);
        assert.equal(r.displayName, 'Fake User');
        assert.equal(decodeJwt(r.idToken).firebase.sign_in_provider, 'fake.example');
        assert.deepEqual(decodeJwt(r.idToken).firebase.identities['fake.example'], [sub]);
        const again = await ok('accounts:signInWithIdp', idpRequest({ id_token: unsignedJwt({ sub, email }), providerId: 'fake.example' }));
        assert.equal(again.localId, r.localId);
        assert.equal(again.isNewUser, false);
      });
    });

    // ---------------------------------------------------------------------------------------
    describe('account linking rules', () => {
      const bob = { login: uniq('bob'), password: `pw-${randomBytes(6).toString('hex')}` };
      bob.email = upstreamEmail(bob.login);

      test('(a) an untrusted provider naming an existing (unverified) e-mail: needConfirmation, no tokens', T, async () => {
        bob.account = await signUp(bob.email, bob.password);
        const t = await upstream({ login: bob.login });
        assert.equal(t.claims.email, bob.email);
        assert.equal(t.claims.email_verified, true);
        const r = await ok('accounts:signInWithIdp', idpRequest({ id_token: t.id_token, providerId: 'oidc.corp' }));
        assert.equal(r.needConfirmation, true, JSON.stringify(r));
        assert.equal(r.idToken, undefined, 'no ID token with needConfirmation');
        assert.equal(r.refreshToken, undefined, 'no refresh token with needConfirmation');
        assert.equal(r.email, bob.email);
        assert.equal(r.providerId, 'oidc.corp');

        // The SDK turns it into account-exists-with-different-credential.
        const t2 = await upstream({ login: bob.login });
        await sdkError(
          signInWithCredential(sdkAuth(), new OAuthProvider('oidc.corp').credential({ idToken: t2.id_token })),
          'auth/account-exists-with-different-credential',
          'untrusted provider, e-mail taken',
        );

        // Nothing changed: the password still works and no provider was added.
        const pw = await ok('accounts:signInWithPassword', { email: bob.email, password: bob.password, returnSecureToken: true });
        assert.equal(pw.localId, bob.account.localId);
        const u = await lookup(pw.idToken);
        assert.deepEqual(providerIds(u), ['password']);
        assert.equal(u.emailVerified, false);
      });

      test('(b) a trusted provider with a verified e-mail takes over the unverified account; its password is gone', T, async () => {
        assert.ok(bob.account, '(a) created bob');
        await sleep(1100); // bob's tokens must predate the takeover by at least a second (validSince is in seconds)
        const t = await upstream({ client: OTHER, login: bob.login });
        const r = await ok('accounts:signInWithIdp', idpRequest({ id_token: t.id_token, providerId: 'oidc.trusted' }));
        assert.equal(r.needConfirmation, undefined, JSON.stringify(r));
        assert.equal(r.localId, bob.account.localId, 'signed in to bob\'s account');
        assert.equal(r.isNewUser, false);
        assert.equal(decodeJwt(r.idToken).firebase.sign_in_provider, 'oidc.trusted');

        const pw = await api('accounts:signInWithPassword', { email: bob.email, password: bob.password, returnSecureToken: true });
        assertApiError(pw, ['INVALID_PASSWORD', 'INVALID_LOGIN_CREDENTIALS']);

        const u = await lookup(r.idToken);
        assert.deepEqual(providerIds(u), ['oidc.trusted']);
        assert.equal(u.emailVerified, true);
        assert.equal(u.passwordHash, undefined);

        // Whatever the password's holder had is revoked.
        const refresh = await realFetch(`${GH}/securetoken.googleapis.com/v1/token?key=${DEV_KEY}`, {
          method: 'POST',
          headers: { 'content-type': 'application/x-www-form-urlencoded' },
          body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: bob.account.refreshToken }),
        });
        assertApiError({ status: refresh.status, body: await refresh.json() }, ['TOKEN_EXPIRED', 'INVALID_REFRESH_TOKEN']);
        const old = await api('accounts:lookup', { idToken: bob.account.idToken });
        assertApiError(old, 'TOKEN_EXPIRED');
      });

      test('(b1) a trusted provider that does not vouch for the e-mail (email_verified false): needConfirmation', T, async () => {
        const login = uniq('unverified-tr');
        const acct = await signUp(upstreamEmail(login), 'pw-123456');
        const t = await upstream({ client: OTHER, login });
        assert.equal(t.claims.email_verified, false);
        const r = await ok('accounts:signInWithIdp', idpRequest({ id_token: t.id_token, providerId: 'oidc.trusted' }));
        assert.equal(r.needConfirmation, true, JSON.stringify(r));
        assert.equal(r.idToken, undefined);
        await ok('accounts:signInWithPassword', { email: upstreamEmail(login), password: 'pw-123456', returnSecureToken: true });
        assert.ok(acct.localId);
      });

      test('(b2) the takeover also drops identities linked to the unverified account (pre-hijacking)', T, async () => {
        // Mallory registers the victim's address with a password, then links her own oidc.corp
        // identity to that account. The victim later signs in with a trusted provider.
        const victim = uniq('victim');
        const mallory = uniq('mallory');
        const acct = await signUp(upstreamEmail(victim), 'mallory-pw-1');
        const mt = await upstream({ login: mallory });
        const linked = await ok('accounts:signInWithIdp', idpRequest({ id_token: mt.id_token, providerId: 'oidc.corp' }, { idToken: acct.idToken }));
        assert.equal(linked.localId, acct.localId);

        const vt = await upstream({ client: OTHER, login: victim });
        const v = await ok('accounts:signInWithIdp', idpRequest({ id_token: vt.id_token, providerId: 'oidc.trusted' }));
        assert.equal(v.localId, acct.localId);
        const u = await lookup(v.idToken);
        assert.deepEqual(providerIds(u), ['oidc.trusted'],
          'an account that never proved it owns its address keeps none of the identities its creator attached '
          + '(the Auth Emulator deletes them all, like the password)');

        const again = await ok('accounts:signInWithIdp', idpRequest({ id_token: (await upstream({ login: mallory })).id_token, providerId: 'oidc.corp' }));
        assert.notEqual(again.localId, acct.localId, 'mallory\'s identity must no longer open the victim\'s account');
      });

      const carol = { email: `carol-${RUN}@example.com`, password: 'carol-pw-1', login: uniq('carol') };

      test('(c) linking: signInWithIdp with an idToken adds the provider; the identity cannot go to a second user', T, async () => {
        carol.account = await signUp(carol.email, carol.password);
        const t = await upstream({ login: carol.login });
        const r = await ok('accounts:signInWithIdp', idpRequest({ id_token: t.id_token, providerId: 'oidc.corp' }, { idToken: carol.account.idToken }));
        assert.equal(r.localId, carol.account.localId);
        assert.equal(r.isNewUser, false);
        carol.idToken = r.idToken;
        const u = await lookup(r.idToken);
        assert.deepEqual(providerIds(u), ['oidc.corp', 'password']);
        assert.equal(u.email, carol.email, 'the account keeps its own e-mail');
        const info = u.providerUserInfo.find((p) => p.providerId === 'oidc.corp');
        assert.equal(info.rawId, carol.login);
        assert.equal(info.federatedId, carol.login);
        assert.deepEqual(decodeJwt(r.idToken).firebase.identities['oidc.corp'], [carol.login]);

        // Signing in with the identity now opens carol's account.
        const s = await ok('accounts:signInWithIdp', idpRequest({ id_token: (await upstream({ login: carol.login })).id_token, providerId: 'oidc.corp' }));
        assert.equal(s.localId, carol.account.localId);

        // Another user cannot take it.
        const dave = await signUp(`dave-${RUN}@example.com`, 'dave-pw-1');
        const t2 = await upstream({ login: carol.login });
        const res = await signInWithIdp({ id_token: t2.id_token, providerId: 'oidc.corp' }, { idToken: dave.idToken });
        assertApiError(res, 'FEDERATED_USER_ID_ALREADY_LINKED');
        // ... also not through the SDK (auth/credential-already-in-use).
        const auth = sdkAuth();
        const daveCred = await signInWithEmailAndPassword(auth, `dave-${RUN}@example.com`, 'dave-pw-1');
        const t3 = await upstream({ login: carol.login });
        await sdkError(
          linkWithCredential(daveCred.user, new OAuthProvider('oidc.corp').credential({ idToken: t3.id_token })),
          'auth/credential-already-in-use',
          'linking an identity that belongs to another user',
        );
        const du = await lookup(dave.idToken);
        assert.deepEqual(providerIds(du), ['password']);
      });

      test('(c2) linking an identity whose e-mail belongs to another account: EMAIL_EXISTS', T, async () => {
        // Firebase (and its Auth Emulator, handleLinkIdp) refuse this link: the account holding the
        // address would otherwise stop being the only one the address leads to.
        const login = uniq('held');
        const holder = await signUp(upstreamEmail(login), 'holder-pw-1');
        const other = await signUp(`linker-${RUN}@example.com`, 'linker-pw-1');
        const t = await upstream({ login });
        const res = await signInWithIdp({ id_token: t.id_token, providerId: 'oidc.corp' }, { idToken: other.idToken });
        assertApiError(res, 'EMAIL_EXISTS');
        assert.deepEqual(providerIds(await lookup(other.idToken)), ['password']);
        assert.ok(holder.localId);
      });

      test('(e) createAuthUri lists the provider in signinMethods', T, async () => {
        assert.ok(carol.idToken, '(c) linked carol');
        const r = await ok('accounts:createAuthUri', { identifier: carol.email, continueUri: 'http://localhost/' });
        assert.equal(r.registered, true);
        assert.deepEqual([...r.signinMethods].sort(), ['oidc.corp', 'password']);
        assert.ok(r.allProviders.includes('oidc.corp'), JSON.stringify(r));

        // An account created by the provider alone.
        const login = uniq('only');
        await ok('accounts:signInWithIdp', idpRequest({ id_token: (await upstream({ login })).id_token, providerId: 'oidc.corp' }));
        const o = await ok('accounts:createAuthUri', { identifier: upstreamEmail(login), continueUri: 'http://localhost/' });
        assert.equal(o.registered, true);
        assert.deepEqual(o.signinMethods, ['oidc.corp']);
      });

      test('(d) unlinking with accounts:update deleteProvider', T, async () => {
        assert.ok(carol.idToken, '(c) linked carol');
        const r = await ok('accounts:update', { idToken: carol.idToken, deleteProvider: ['oidc.corp'], returnSecureToken: true });
        assert.deepEqual(providerIds(r), ['password']);
        const u = await lookup(r.idToken ?? carol.idToken);
        assert.deepEqual(providerIds(u), ['password']);
        const m = await ok('accounts:createAuthUri', { identifier: carol.email, continueUri: 'http://localhost/' });
        assert.deepEqual(m.signinMethods, ['password']);

        // The identity is free again: signing in with it no longer opens carol's account.
        const t = await upstream({ login: carol.login });
        const s = await ok('accounts:signInWithIdp', idpRequest({ id_token: t.id_token, providerId: 'oidc.corp' }));
        assert.notEqual(s.localId, carol.account.localId);
        assert.equal(s.isNewUser, true);
      });
    });

    // ---------------------------------------------------------------------------------------
    describe('hosted code flow (/__/auth/federated/start -> provider -> /__/auth/handler)', () => {
      const flow = {};

      test('start redirects to the provider with state, nonce and a PKCE S256 challenge', T, async () => {
        const s = await start();
        assert.equal(s.status, 302, `start should redirect: ${s.status} ${s.html.slice(0, 300)}`);
        assert.equal(s.headers.get('cache-control'), 'no-store');
        const meta = await discover(OP1);
        const u = new URL(s.location);
        assert.equal(`${u.origin}${u.pathname}`, meta.authorization_endpoint);
        const p = s.params;
        assert.equal(p.response_type, 'code');
        assert.equal(p.client_id, CORP.clientId);
        assert.equal(p.redirect_uri, REDIRECT);
        assert.deepEqual(p.scope.split(' ').sort(), ['email', 'openid', 'profile']);
        assert.match(p.state, /^[A-Za-z0-9_-]{20,}$/);
        assert.match(p.nonce, /^[A-Za-z0-9_-]{20,}$/);
        assert.match(p.code_challenge, /^[A-Za-z0-9_-]{43}$/);
        assert.equal(p.code_challenge_method, 'S256');
        const s2 = await start();
        assert.notEqual(s2.params.state, p.state);
        assert.notEqual(s2.params.nonce, p.nonce);
        assert.notEqual(s2.params.code_challenge, p.code_challenge);
        flow.first = s;
      });

      test('the provider\'s code comes back to the handler: a page with our ID token for the origin', T, async () => {
        assert.ok(flow.first, 'start test ran');
        const login = uniq('popup');
        const back = await loginAtOp(flow.first.location, login);
        assert.ok(back.callback.startsWith(`${REDIRECT}?`));
        const p = await page(back.callback);
        assert.equal(p.status, 200, `handler: HTTP ${p.status} ${JSON.stringify(p.config)}`);
        assert.equal(p.config.error, null);
        assert.equal(p.config.origin, RETURN_ORIGIN);
        assert.equal(p.config.mode, 'popup');
        assert.equal(p.config.apiKey, 'k');
        assert.equal(p.config.projectId, DEV);
        const r = p.config.result;
        assert.ok(r?.idToken, `no result.idToken: ${JSON.stringify(p.config)}`);
        assert.equal(r.providerId, 'oidc.corp');
        assert.equal(r.isNewUser, true);
        assert.equal(r.email, upstreamEmail(login));
        const c = decodeJwt(r.idToken);
        assert.equal(c.firebase.sign_in_provider, 'oidc.corp');
        assert.deepEqual(c.firebase.identities['oidc.corp'], [login]);
        assert.equal(c.aud, DEV);
        assert.equal(c.sub, r.localId);
        assert.equal(p.headers.get('cache-control'), 'no-store');
        assert.match(p.headers.get('content-security-policy') ?? '', /frame-ancestors 'none'/);
        assert.equal(p.headers.get('referrer-policy'), 'no-referrer');
        // The page's tokens work, and it is the same account signInWithIdp finds.
        const u = await lookup(r.idToken);
        assert.deepEqual(providerIds(u), ['oidc.corp']);
        const viaRest = await ok('accounts:signInWithIdp', idpRequest({ id_token: (await upstream({ login })).id_token, providerId: 'oidc.corp' }));
        assert.equal(viaRest.localId, r.localId);
        assert.equal(viaRest.isNewUser, false);
        flow.done = back;
      });

      test('a callback opened in another browser (without the flow cookie) is refused: no login CSRF', T, async () => {
        const s = await start({ mode: 'redirect', redirectUrl: `${RETURN_ORIGIN}/app` });
        assert.equal(s.status, 302);
        const back = await loginAtOp(s.location, `csrf-${RUN}`);
        const p = await page(back.callback, { cookies: false });
        assertErrorPage(p, 400, /started in another browser/);
      });

      test('the state is single-use: replaying the callback fails; an unknown state fails', T, async () => {
        assert.ok(flow.done, 'the flow completed');
        const replay = await page(flow.done.callback);
        assertErrorPage(replay, 400, /^Unknown or already used sign-in state; start again\.$/);
        const unknown = await page(`${REDIRECT}?code=abc&state=${randomBytes(32).toString('base64url')}`);
        assertErrorPage(unknown, 400, /Unknown or already used sign-in state/);
        const none = await page(`${REDIRECT}?code=abc`);
        assertErrorPage(none, 400, /carries no state/);
      });

      test('a fresh state with an already redeemed code: the provider refuses the code', T, async () => {
        assert.ok(flow.done, 'the flow completed');
        const s = await start();
        assert.equal(s.status, 302);
        const p = await page(`${REDIRECT}?code=${encodeURIComponent(flow.done.code)}&state=${encodeURIComponent(s.params.state)}&iss=${encodeURIComponent(OP1)}`);
        assertErrorPage(p, 400, /^The provider refused the sign-in code: /);
      });

      test('an origin that is not an authorized domain is refused at start (403)', T, async () => {
        const s = await start({ origin: 'https://evil.example' });
        assert.equal(s.status, 403);
        assert.equal(s.location, null, 'no redirect to the provider');
        const m = /const CONFIG = (.*);\s*$/m.exec(s.html);
        const config = JSON.parse(m[1]);
        assert.match(config.error, /This domain \(evil\.example\) is not authorized to run this operation/);
      });

      test('redirect mode: a redirectUrl off the origin is refused at start (403)', T, async () => {
        const s = await start({ mode: 'redirect', redirectUrl: 'https://evil.example/steal' });
        assert.equal(s.status, 403);
        assert.equal(s.location, null);
        assert.match(JSON.parse(/const CONFIG = (.*);\s*$/m.exec(s.html)[1]).error, /must be on the page's origin/);
      });

      test('an ID token that does not carry the flow\'s nonce is refused at the handler', T, async () => {
        const s = await start();
        const back = await loginAtOp(s.location, uniq('nonce-flow'), { nonce: 'not-the-flows-nonce' });
        const p = await page(back.callback);
        assertErrorPage(p, 400, /does not carry the nonce of this sign-in/);
      });

      test('a callback whose RFC 9207 iss names another issuer is refused (mix-up)', T, async () => {
        const s = await start();
        const back = await loginAtOp(s.location, uniq('mixup'));
        const cb = new URL(back.callback);
        assert.equal(cb.searchParams.get('iss'), OP1, 'OP1 sends iss');
        cb.searchParams.set('iss', OP2);
        const p = await page(cb.href);
        assertErrorPage(p, 400, new RegExp(`^The answer came from ${OP2.replace(/[.]/g, '\\.')}, not from ${OP1.replace(/[.]/g, '\\.')}\\.$`));
        // The state is spent: the genuine callback no longer works either.
        const again = await page(back.callback);
        assertErrorPage(again, 400, /Unknown or already used sign-in state/);
      });

      test('unknown provider at start', T, async () => {
        const s = await start({ providerId: 'oidc.nope' });
        assert.equal(s.status, 400);
        assert.match(JSON.parse(/const CONFIG = (.*);\s*$/m.exec(s.html)[1]).error, /The identity provider oidc\.nope is not enabled for this project/);
      });

      test('the user cancels at the provider (error=access_denied): an error page, and the state is spent', T, async () => {
        const s = await start();
        const back = await cancelAtOp(s.location);
        const q = new URL(back).searchParams;
        assert.equal(q.get('error'), 'access_denied');
        assert.equal(q.get('state'), s.params.state);
        const p = await page(back);
        assertErrorPage(p, 400, /^The provider did not sign you in: access_denied/);
        const again = await page(back);
        assertErrorPage(again, 400, /Unknown or already used sign-in state/);
      });

      test('an e-mail held by another account (untrusted provider): a 409 page, no tokens', T, async () => {
        const login = uniq('erin');
        await signUp(upstreamEmail(login), 'erin-pw-1');
        const s = await start();
        const back = await loginAtOp(s.location, login);
        const p = await page(back.callback);
        assertErrorPage(p, 409, new RegExp(`An account already exists with the e-mail address ${upstreamEmail(login).replace(/[.]/g, '\\.')}`));
      });

      test('redirect mode on the production project', T, async () => {
        const s = await start({ apiKey: PROD_KEY, mode: 'redirect', redirectUrl: `${RETURN_ORIGIN}/app?x=1` });
        assert.equal(s.status, 302, s.html.slice(0, 300));
        const login = uniq('prod-redirect');
        const back = await loginAtOp(s.location, login);
        const p = await page(back.callback);
        assert.equal(p.status, 200, JSON.stringify(p.config));
        assert.equal(p.config.mode, 'redirect');
        assert.equal(p.config.redirectUrl, `${RETURN_ORIGIN}/app?x=1`);
        assert.equal(p.config.projectId, PROD);
        assert.equal(decodeJwt(p.config.result.idToken).aud, PROD);
        assert.equal(decodeJwt(p.config.result.idToken).firebase.sign_in_provider, 'oidc.corp');
      });
    });
  });
});

