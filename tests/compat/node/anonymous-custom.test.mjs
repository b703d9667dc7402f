// Anonymous sign-in with upgrade, and custom-token sign-in with claims.
import test from 'node:test';
import assert from 'node:assert/strict';
import {
  EmailAuthProvider,
  linkWithCredential,
  signInAnonymously,
  signInWithCustomToken,
  signInWithEmailAndPassword,
  signOut,
} from 'firebase/auth';
import {
  PROJECT,
  ISSUER,
  TEST_OPTS,
  newAuth,
  randomEmail,
  randomId,
  randomPassword,
  unsignedCustomToken,
} from './env.mjs';

test('8. anonymous sign-in, then link an email/password credential', TEST_OPTS, async (t) => {
  const auth = newAuth(t);
  const { user } = await signInAnonymously(auth);
  const uid = user.uid;
  assert.ok(uid, 'anonymous user has a uid');
  assert.equal(user.isAnonymous, true);
  assert.equal(user.email, null);

  const anon = await user.getIdTokenResult();
  assert.equal(anon.claims.firebase?.sign_in_provider, 'anonymous');
  assert.equal(anon.claims.sub, uid);
  assert.equal(anon.claims.aud, PROJECT);
  assert.equal(anon.claims.iss, ISSUER);

  const email = randomEmail();
  const password = randomPassword();
  const linked = await linkWithCredential(user, EmailAuthProvider.credential(email, password));
  assert.equal(linked.user.uid, uid, 'linking keeps the uid');
  assert.equal(linked.user.isAnonymous, false);
  assert.equal(linked.user.email, email);
  assert.equal(auth.currentUser?.uid, uid);
  const after = await linked.user.getIdTokenResult();
  assert.equal(after.claims.email, email);
  assert.equal(after.claims.sub, uid);

  await signOut(auth);
  const cred = await signInWithEmailAndPassword(auth, email, password);
  assert.equal(cred.user.uid, uid);
  assert.equal(cred.user.isAnonymous, false);
});

test('9. custom-token sign-in carries developer claims through refresh', TEST_OPTS, async (t) => {
  const auth = newAuth(t);
  const uid = `custom-${randomId()}`;
  const token = unsignedCustomToken(uid, { role: 'admin', level: 3 });

  const cred = await signInWithCustomToken(auth, token);
  assert.equal(cred.user.uid, uid);
  assert.equal(auth.currentUser?.uid, uid);
  assert.equal(cred.user.isAnonymous, false);

  const first = await cred.user.getIdTokenResult();
  assert.equal(first.claims.role, 'admin');
  assert.equal(first.claims.level, 3);
  assert.equal(first.claims.firebase?.sign_in_provider, 'custom');
  assert.equal(first.signInProvider, 'custom');
  assert.equal(first.claims.sub, uid);
  assert.equal(first.claims.user_id, uid);
  assert.equal(first.claims.aud, PROJECT);
  assert.equal(first.claims.iss, ISSUER);
  // Custom-token claims must not leak custom-token envelope fields.
  assert.equal(first.claims.claims, undefined);
  assert.equal(first.claims.uid, undefined);

  await cred.user.getIdToken(true);
  const refreshed = await cred.user.getIdTokenResult();
  assert.equal(refreshed.claims.role, 'admin', 'claims survive a forced refresh');
  assert.equal(refreshed.claims.level, 3);
  assert.equal(refreshed.claims.firebase?.sign_in_provider, 'custom');
  assert.equal(refreshed.claims.sub, uid);

  // Signing in again with a token for the same uid returns the same user.
  await signOut(auth);
  const again = await signInWithCustomToken(auth, unsignedCustomToken(uid, { role: 'admin', level: 3 }));
  assert.equal(again.user.uid, uid);
});
