// Profile updates and ID-token refresh.
import test from 'node:test';
import assert from 'node:assert/strict';
import { createUserWithEmailAndPassword, updateProfile } from 'firebase/auth';
import { PROJECT, ISSUER, TEST_OPTS, newAuth, randomEmail, randomPassword, sleep } from './env.mjs';

test('4. updateProfile: displayName/photoURL visible after reload and in refreshed token', TEST_OPTS, async (t) => {
  const auth = newAuth(t);
  const { user } = await createUserWithEmailAndPassword(auth, randomEmail(), randomPassword());
  const displayName = `Test User ${Math.floor(Math.random() * 1e6)}`;
  const photoURL = `https://example.com/photos/${user.uid}.png`;

  await updateProfile(user, { displayName, photoURL });
  assert.equal(user.displayName, displayName, 'updateProfile updates the local user');
  assert.equal(user.photoURL, photoURL);

  await user.reload();
  assert.equal(user.displayName, displayName, 'server returns displayName on lookup');
  assert.equal(user.photoURL, photoURL, 'server returns photoUrl on lookup');
  const pw = user.providerData.find((p) => p.providerId === 'password');
  assert.ok(pw, 'password provider still listed');

  const token = await user.getIdToken(true);
  assert.equal(typeof token, 'string');
  const { claims } = await user.getIdTokenResult();
  assert.equal(claims.name, displayName);
  assert.equal(claims.picture, photoURL);
  assert.equal(claims.sub, user.uid);
  assert.equal(claims.aud, PROJECT);
  assert.equal(claims.iss, ISSUER);
});

test('5. forced refresh issues a newer token but keeps auth_time', TEST_OPTS, async (t) => {
  const auth = newAuth(t);
  const { user } = await createUserWithEmailAndPassword(auth, randomEmail(), randomPassword());
  const first = await user.getIdTokenResult();
  assert.equal(typeof first.claims.auth_time, 'number');
  assert.equal(typeof first.claims.iat, 'number');

  // iat has one-second resolution; after 1.2 s floor(now) must have advanced.
  await sleep(1200);
  const second = await user.getIdTokenResult(true);
  assert.notEqual(second.token, first.token, 'forced refresh returns a new token');
  assert.ok(
    second.claims.iat > first.claims.iat,
    `iat must increase: ${first.claims.iat} -> ${second.claims.iat}`,
  );
  assert.equal(second.claims.exp, second.claims.iat + 3600);
  assert.equal(second.claims.auth_time, first.claims.auth_time, 'auth_time survives refresh');
  assert.equal(second.claims.sub, user.uid);
  assert.equal(second.claims.email, first.claims.email);
  assert.equal(second.claims.firebase?.sign_in_provider, 'password');
  assert.equal(second.authTime, first.authTime);
  assert.equal(typeof user.refreshToken, 'string');
  assert.ok(user.refreshToken.length > 0);

  // Without force the cached token is returned unchanged.
  const cached = await user.getIdToken();
  assert.equal(cached, second.token);
});
