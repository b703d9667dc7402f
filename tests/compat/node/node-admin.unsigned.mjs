// The Node Admin SDK in emulator mode only accepts unsigned (alg: none) ID tokens.
// Run against a development project started with `--unsigned-id-tokens` (the documented,
// opt-in exception). Run as: node --test node-admin.unsigned.mjs
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { initializeApp, deleteApp } from 'firebase-admin/app';
import { getAuth } from 'firebase-admin/auth';
import { GATEHOUSE_URL, PROJECT, API_KEY } from './env.mjs';

assert.ok(process.env.FIREBASE_AUTH_EMULATOR_HOST, 'FIREBASE_AUTH_EMULATOR_HOST must be set');

async function rest(op, body) {
  const res = await fetch(`${GATEHOUSE_URL}/identitytoolkit.googleapis.com/v1/accounts:${op}?key=${API_KEY}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  const json = await res.json();
  assert.equal(res.status, 200, JSON.stringify(json));
  return json;
}

const header = (jwt) => JSON.parse(Buffer.from(jwt.split('.')[0], 'base64url').toString());

test('firebase-admin (Node) verifies ID tokens and session cookies, sees revocation', async () => {
  const app = initializeApp({ projectId: PROJECT }, `admin-${randomBytes(4).toString('hex')}`);
  try {
    const auth = getAuth(app);
    const email = `node-admin-${randomBytes(6).toString('hex')}@example.com`;
    const user = await auth.createUser({ email, password: 'secret123', displayName: 'Node Admin' });
    await auth.setCustomUserClaims(user.uid, { role: 'ops' });

    const signedIn = await rest('signInWithPassword', { email, password: 'secret123', returnSecureToken: true });
    assert.equal(header(signedIn.idToken).alg, 'none');
    const decoded = await auth.verifyIdToken(signedIn.idToken, true);
    assert.equal(decoded.uid, user.uid);
    assert.equal(decoded.role, 'ops');
    assert.equal(decoded.firebase.sign_in_provider, 'password');

    const cookie = await auth.createSessionCookie(signedIn.idToken, { expiresIn: 3600 * 1000 });
    const fromCookie = await auth.verifySessionCookie(cookie, true);
    assert.equal(fromCookie.uid, user.uid);

    const custom = await auth.createCustomToken(`cust-${randomBytes(5).toString('hex')}`, { plan: 'pro' });
    const viaCustom = await rest('signInWithCustomToken', { token: custom, returnSecureToken: true });
    assert.equal((await auth.verifyIdToken(viaCustom.idToken)).plan, 'pro');

    await new Promise((r) => setTimeout(r, 1100));
    await auth.revokeRefreshTokens(user.uid);
    await assert.rejects(auth.verifyIdToken(signedIn.idToken, true), (e) => e.code === 'auth/id-token-revoked');

    await auth.deleteUser(user.uid);
    await assert.rejects(auth.getUser(user.uid), (e) => e.code === 'auth/user-not-found');
  } finally {
    await deleteApp(app);
  }
});
