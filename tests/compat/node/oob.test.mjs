// Out-of-band codes: email verification and password reset, read back through
// the emulator API GET /emulator/v1/projects/{project}/oobCodes.
import test from 'node:test';
import assert from 'node:assert/strict';
import {
  applyActionCode,
  confirmPasswordReset,
  createUserWithEmailAndPassword,
  sendEmailVerification,
  sendPasswordResetEmail,
  signInWithEmailAndPassword,
  signOut,
  verifyPasswordResetCode,
} from 'firebase/auth';
import {
  TEST_OPTS,
  newAuth,
  randomEmail,
  randomPassword,
  expectAuthError,
  getOobCode,
} from './env.mjs';

test('6. email verification via oob code', TEST_OPTS, async (t) => {
  const auth = newAuth(t);
  const email = randomEmail();
  const { user } = await createUserWithEmailAndPassword(auth, email, randomPassword());
  assert.equal(user.emailVerified, false);

  await sendEmailVerification(user);
  const code = await getOobCode(email, 'VERIFY_EMAIL');

  await applyActionCode(auth, code);
  await user.reload();
  assert.equal(user.emailVerified, true, 'emailVerified after applyActionCode + reload');

  const { claims } = await user.getIdTokenResult(true);
  assert.equal(claims.email_verified, true, 'refreshed token carries email_verified');

  await expectAuthError(applyActionCode(auth, code), 'auth/invalid-action-code', 'reusing the code');
});

test('7. password reset via oob code', TEST_OPTS, async (t) => {
  const auth = newAuth(t);
  const email = randomEmail();
  const oldPassword = randomPassword();
  const newPassword = 'newpass123';
  const { user } = await createUserWithEmailAndPassword(auth, email, oldPassword);
  const uid = user.uid;
  await signOut(auth);

  await sendPasswordResetEmail(auth, email);
  const code = await getOobCode(email, 'PASSWORD_RESET');

  const forEmail = await verifyPasswordResetCode(auth, code);
  assert.equal(forEmail, email);

  await confirmPasswordReset(auth, code, newPassword);

  const cred = await signInWithEmailAndPassword(auth, email, newPassword);
  assert.equal(cred.user.uid, uid);
  await signOut(auth);

  await expectAuthError(
    signInWithEmailAndPassword(auth, email, oldPassword),
    ['auth/wrong-password', 'auth/invalid-credential'],
    'sign-in with the old password',
  );
  // The code is single-use.
  await expectAuthError(
    confirmPasswordReset(auth, code, 'yetanother123'),
    'auth/invalid-action-code',
    'reusing the reset code',
  );
});
