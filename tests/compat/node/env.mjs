// Shared helpers for the Gatehouse compatibility suite.
//
// Target server comes from the environment:
//   GATEHOUSE_URL      e.g. http://127.0.0.1:41234 (also serves emulator-style paths)
//   GATEHOUSE_PROJECT  default project id (development mode), e.g. demo-project
//   GATEHOUSE_API_KEY  any non-empty string in development mode

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { initializeApp, deleteApp } from 'firebase/app';
import {
  initializeAuth,
  inMemoryPersistence,
  connectAuthEmulator,
} from 'firebase/auth';

function readEnv() {
  const names = ['GATEHOUSE_URL', 'GATEHOUSE_PROJECT', 'GATEHOUSE_API_KEY'];
  const missing = names.filter((n) => !process.env[n] || !process.env[n].trim());
  if (missing.length) {
    throw new Error(
      `Gatehouse compat suite: missing environment variable(s): ${missing.join(', ')}.\n` +
        'Set all of them, e.g.\n' +
        '  GATEHOUSE_URL=http://127.0.0.1:41234 GATEHOUSE_PROJECT=demo-project ' +
        'GATEHOUSE_API_KEY=fake-api-key node --test --test-concurrency=1',
    );
  }
  const url = process.env.GATEHOUSE_URL.trim().replace(/\/+$/, '');
  let parsed;
  try {
    parsed = new URL(url);
  } catch {
    throw new Error(`GATEHOUSE_URL is not a valid URL: ${JSON.stringify(url)}`);
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') {
    throw new Error(`GATEHOUSE_URL must start with http:// or https://, got ${JSON.stringify(url)}`);
  }
  return {
    url,
    project: process.env.GATEHOUSE_PROJECT.trim(),
    apiKey: process.env.GATEHOUSE_API_KEY.trim(),
  };
}

const env = readEnv();
export const GATEHOUSE_URL = env.url;
export const PROJECT = env.project;
export const API_KEY = env.apiKey;
export const ISSUER = `https://securetoken.google.com/${PROJECT}`;

// Per-test timeout for node:test, so a hanging server fails the test instead of the run.
export const TEST_OPTS = { timeout: 30_000 };

export function randomId(bytes = 8) {
  return randomBytes(bytes).toString('hex');
}

export function randomEmail(prefix = 'u') {
  return `${prefix}-${randomId()}@example.com`;
}

export function randomPassword() {
  return `pw-${randomId(6)}`;
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * A fresh firebase app + auth instance wired to the server. The app is deleted
 * when the test `t` finishes, so no timers/handles keep the process alive.
 */
export function newAuth(t) {
  const name = `compat-${randomId()}`;
  const app = initializeApp(
    { apiKey: API_KEY, projectId: PROJECT, authDomain: 'localhost' },
    name,
  );
  const auth = initializeAuth(app, { persistence: inMemoryPersistence });
  connectAuthEmulator(auth, GATEHOUSE_URL, { disableWarnings: true });
  t.after(async () => {
    await deleteApp(app).catch(() => {});
  });
  return auth;
}

/** Awaits `promise` and asserts it rejects with a FirebaseError whose code is one of `codes`. */
export async function expectAuthError(promise, codes, what = 'operation') {
  const allowed = Array.isArray(codes) ? codes : [codes];
  let result;
  try {
    result = await promise;
  } catch (err) {
    assert.ok(
      allowed.includes(err?.code),
      `${what}: expected error code ${allowed.join(' or ')}, got ${err?.code} (${err?.message})`,
    );
    return err;
  }
  assert.fail(`${what}: expected error ${allowed.join(' or ')}, but it succeeded (${summarize(result)})`);
}

function summarize(v) {
  try {
    return JSON.stringify(v?.user ? { uid: v.user.uid, email: v.user.email } : v)?.slice(0, 200);
  } catch {
    return String(v);
  }
}

/** Plain JSON GET against the server with a bounded timeout. */
export async function getJson(path) {
  const res = await fetch(GATEHOUSE_URL + path, { signal: AbortSignal.timeout(10_000) });
  const text = await res.text();
  assert.equal(res.status, 200, `GET ${path} -> HTTP ${res.status}: ${text.slice(0, 300)}`);
  try {
    return { res, body: JSON.parse(text) };
  } catch {
    assert.fail(`GET ${path}: response is not JSON: ${text.slice(0, 300)}`);
  }
}

/**
 * Reads the newest out-of-band code for `email` and `requestType` from the
 * emulator API (GET /emulator/v1/projects/{p}/oobCodes). Retries briefly in
 * case the server records codes asynchronously.
 */
export async function getOobCode(email, requestType) {
  const want = email.toLowerCase();
  const path = `/emulator/v1/projects/${encodeURIComponent(PROJECT)}/oobCodes`;
  let seen = [];
  for (let attempt = 0; attempt < 10; attempt++) {
    const { body } = await getJson(path);
    assert.ok(Array.isArray(body.oobCodes), `oobCodes listing has no oobCodes array: ${JSON.stringify(body).slice(0, 300)}`);
    seen = body.oobCodes;
    const matches = seen.filter(
      (c) => typeof c.email === 'string' && c.email.toLowerCase() === want && c.requestType === requestType,
    );
    if (matches.length) {
      const code = matches[matches.length - 1];
      assert.equal(typeof code.oobCode, 'string', 'oobCode entry must have a string oobCode');
      assert.ok(code.oobCode.length > 0, 'oobCode must be non-empty');
      assert.equal(typeof code.oobLink, 'string', 'oobCode entry must have a string oobLink');
      assert.ok(code.oobLink.includes(code.oobCode), 'oobLink must contain the oobCode');
      return code.oobCode;
    }
    await sleep(200);
  }
  assert.fail(`no ${requestType} oob code for ${email} (server lists ${seen.length} codes)`);
}

export function b64urlJson(obj) {
  return Buffer.from(JSON.stringify(obj), 'utf8').toString('base64url');
}

/**
 * An unsigned custom token in the form firebase-admin produces in emulator
 * mode: header {"alg":"none","typ":"JWT"}, empty signature.
 */
export function unsignedCustomToken(uid, claims) {
  const iat = Math.floor(Date.now() / 1000);
  const payload = {
    aud: 'https://identitytoolkit.googleapis.com/google.identity.identitytoolkit.v1.IdentityToolkit',
    iat,
    exp: iat + 3600,
    iss: 'firebase-auth-emulator@example.com',
    sub: 'firebase-auth-emulator@example.com',
    uid,
  };
  if (claims !== undefined) payload.claims = claims;
  return `${b64urlJson({ alg: 'none', typ: 'JWT' })}.${b64urlJson(payload)}.`;
}

/** Decodes a JWT's payload without verifying it. */
export function jwtPayload(token) {
  const parts = token.split('.');
  assert.equal(parts.length, 3, 'a JWT has three dot-separated parts');
  return JSON.parse(Buffer.from(parts[1], 'base64url').toString('utf8'));
}
