// Email/password accounts: sign-up, errors, sign-in, password change, deletion.
import test from 'node:test';
import assert from 'node:assert/strict';
import {
  createUserWithEmailAndPassword,
  signInWithEmailAndPassword,
  signOut,
  updatePassword,
} from 'firebase/auth';
import {
  PROJECT,
  ISSUER,
  TEST_OPTS,
  newAuth,
  randomEmail,
  randomPassword,
  expectAuthError,
} from './env.mjs';

// The server may run with or without email-enumeration protection.
const WRONG_PASSWORD = ['auth/wrong-password', 'auth/invalid-credential'];
const UNKNOWN_USER = ['auth/user-not-found', 'auth/invalid-credential'];

test('1. createUserWithEmailAndPassword issues a password ID token for the project', TEST_OPTS, async (t) => {
  const auth = newAuth(t);
  const email = randomEmail();
  const cred = await createUserWithEmailAndPassword(auth, email, randomPassword());
  const user = cred.user;

  assert.equal(typeof user.uid, 'string');
  assert.ok(user.uid.length > 0, 'uid must be non-empty');
  assert.equal(user.email, email);
  assert.equal(user.isAnonymous, false);
  assert.equal(user.emailVerified, false);
  assert.equal(auth.currentUser?.uid, user.uid);
  assert.ok(user.providerData.some((p) => p.providerId === 'password'), 'password provider is listed');
  assert.equal(typeof user.refreshToken, 'string');
  assert.ok(user.refreshToken.length > 0, 'refresh token must be non-empty');

  const result = await user.getIdTokenResult();
  const c = result.claims;
  assert.equal(c.email, email);
  assert.equal(c.email_verified, false);
  assert.equal(c.firebase?.sign_in_provider, 'password');
  assert.equal(result.signInProvider, 'password');
  assert.deepEqual(c.firebase?.identities?.email, [email]);
  assert.equal(c.aud, PROJECT);
  assert.equal(c.iss, ISSUER);
  assert.equal(c.sub, user.uid);
  assert.equal(c.user_id, user.uid);
  assert.equal(typeof c.iat, 'number');
  assert.equal(c.exp, c.iat + 3600, 'ID tokens live one hour');
  assert.equal(typeof c.auth_time, 'number');
  assert.ok(Math.abs(c.iat - Date.now() / 1000) < 300, 'iat is close to now');
});

test('2. sign-up errors: duplicate email (any case), weak password, invalid email', TEST_OPTS, async (t) => {
  const auth = newAuth(t);
  const email = randomEmail();
  await createUserWithEmailAndPassword(auth, email, randomPassword());
  await signOut(auth);

  await expectAuthError(
    createUserWithEmailAndPassword(auth, email, randomPassword()),
    'auth/email-already-in-use',
    'duplicate email',
  );
  await expectAuthError(
    createUserWithEmailAndPassword(auth, email.toUpperCase(), randomPassword()),
    'auth/email-already-in-use',
    'duplicate email in upper case',
  );
  await expectAuthError(
    createUserWithEmailAndPassword(auth, randomEmail(), '12345'),
    'auth/weak-password',
    'five-character password',
  );
  await expectAuthError(
    createUserWithEmailAndPassword(auth, 'not-an-email', randomPassword()),
    'auth/invalid-email',
    'malformed email',
  );
  assert.equal(auth.currentUser, null, 'failed sign-ups must not sign anyone in');
});

test('3. sign out, sign in again; wrong password and unknown email are rejected', TEST_OPTS, async (t) => {
  const auth = newAuth(t);
  const email = randomEmail();
  const password = randomPassword();
  const { user } = await createUserWithEmailAndPassword(auth, email, password);
  const uid = user.uid;

  await signOut(auth);
  assert.equal(auth.currentUser, null);

  const cred = await signInWithEmailAndPassword(auth, email, password);
  assert.equal(cred.user.uid, uid);
  assert.equal(cred.user.email, email);
  assert.equal(auth.currentUser?.uid, uid);
  const claims = (await cred.user.getIdTokenResult()).claims;
  assert.equal(claims.sub, uid);
  assert.equal(claims.firebase?.sign_in_provider, 'password');

  // Emails are case-insensitive for sign-in as well.
  await signOut(auth);
  const upper = await signInWithEmailAndPassword(auth, email.toUpperCase(), password);
  assert.equal(upper.user.uid, uid);
  await signOut(auth);

  await expectAuthError(
    signInWithEmailAndPassword(auth, email, password + 'x'),
    WRONG_PASSWORD,
    'wrong password',
  );
  await expectAuthError(
    signInWithEmailAndPassword(auth, randomEmail('nobody'), password),
    UNKNOWN_USER,
    'unknown email',
  );
  assert.equal(auth.currentUser, null);
});

test('10. updatePassword: new password works, old one fails', TEST_OPTS, async (t) => {
  const auth = newAuth(t);
  const email = randomEmail();
  const oldPassword = randomPassword();
  const newPassword = 'another123';
  const { user } = await createUserWithEmailAndPassword(auth, email, oldPassword);
  const uid = user.uid;

  await updatePassword(user, newPassword);
  // The SDK keeps the user signed in with the tokens returned by accounts:update.
  assert.equal(auth.currentUser?.uid, uid);
  const claims = (await user.getIdTokenResult()).claims;
  assert.equal(claims.sub, uid);

  await signOut(auth);
  const cred = await signInWithEmailAndPassword(auth, email, newPassword);
  assert.equal(cred.user.uid, uid);
  await signOut(auth);

  await expectAuthError(
    signInWithEmailAndPassword(auth, email, oldPassword),
    WRONG_PASSWORD,
    'sign-in with the old password',
  );
});

test('11. user.delete(): the account is gone', TEST_OPTS, async (t) => {
  const auth = newAuth(t);
  const email = randomEmail();
  const password = randomPassword();
  const { user } = await createUserWithEmailAndPassword(auth, email, password);

  await user.delete();
  assert.equal(auth.currentUser, null, 'deleting the current user signs it out');

  await expectAuthError(
    signInWithEmailAndPassword(auth, email, password),
    UNKNOWN_USER,
    'sign-in to a deleted account',
  );
  // The address is free again.
  const again = await createUserWithEmailAndPassword(auth, email, password);
  assert.notEqual(again.user.uid, user.uid, 'a re-created account gets a new uid');
});
