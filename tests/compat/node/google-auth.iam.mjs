// The real npm google-auth-library (and its gcp-metadata) against a Gatehouse IAM server:
// Application Default Credentials on a metadata server (GCE / Cloud Run), access tokens on the
// IAM API, ID tokens verified by OAuth2Client against our PEM and JWK certificate endpoints,
// and key files issued by Gatehouse (JWT-bearer grant at the key file's token_uri).
//
// Run separately (it starts its own server; GATEHOUSE_BIN names the binary):
//   GATEHOUSE_BIN=$PWD/target/debug/gatehouse node --test tests/compat/node/google-auth.iam.mjs
//
// One `gatehouse iam serve` (API + one metadata server) runs on a fresh temporary data
// directory and free loopback ports; accounts, key files and grants are made with the
// `gatehouse iam` CLI on the same database. The library runs in child processes
// (google-auth.iam.probe.mjs) because gcp-metadata takes its configuration from the
// environment (GCE_METADATA_HOST / GCE_METADATA_IP / METADATA_SERVER_DETECTION) and memoizes
// what it found. The server's process group is killed and the data directory removed at the
// end. Tests assert Google's behaviour: a failure is a compatibility gap.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const PROBE = path.join(HERE, 'google-auth.iam.probe.mjs');
const PROJECT = 'demo-proj';
const CLOUD_PLATFORM = 'https://www.googleapis.com/auth/cloud-platform';
// What a service's ingress (Cloud Run, IAP) would put in `aud`.
const AUDIENCE = 'https://vote-app-abc123-uc.a.run.app';
const WRONG_AUDIENCE = 'https://someone-else.example.com';
const GOOGLE_TOKEN_URL = 'https://oauth2.googleapis.com/token';
const HTTP_TIMEOUT_MS = 15_000;
const TEST_OPTS = { timeout: 30_000 };

// ------------------------------------------------------------------ the binary (required)

function gatehouseBin() {
  const hint =
    'GATEHOUSE_BIN must name an executable gatehouse binary, e.g.\n' +
    '  GATEHOUSE_BIN=$PWD/target/debug/gatehouse node --test tests/compat/node/google-auth.iam.mjs';
  const bin = (process.env.GATEHOUSE_BIN ?? '').trim();
  if (!bin) throw new Error(`GATEHOUSE_BIN is not set.\n${hint}`);
  try {
    fs.accessSync(bin, fs.constants.X_OK);
    if (!fs.statSync(bin).isFile()) throw new Error('not a file');
  } catch (err) {
    throw new Error(`GATEHOUSE_BIN=${JSON.stringify(bin)} is not an executable file (${err.message}).\n${hint}`);
  }
  return path.resolve(bin);
}

const BIN = gatehouseBin(); // fails the whole file at once, never skips

// ------------------------------------------------------------------ small helpers

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** A fresh account id (6-30 chars of [a-z0-9-], starting with a letter). */
function uniqueId(prefix) {
  const id = `${prefix}-${randomBytes(3).toString('hex')}`;
  assert.ok(id.length >= 6 && id.length <= 30, id);
  return id;
}

/** Calls `check` until it does not throw an AssertionError (the server caches for 1 s). */
async function eventually(check, timeoutMs = 6_000, intervalMs = 100) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await check();
    } catch (err) {
      if (!(err instanceof assert.AssertionError) || Date.now() >= deadline) throw err;
    }
    await sleep(intervalMs);
  }
}

function jwtParts(token) {
  assert.equal(typeof token, 'string', `expected a JWT string, got ${JSON.stringify(token)}`);
  const parts = token.split('.');
  assert.equal(parts.length, 3, `a JWT has three dot-separated parts: ${token.slice(0, 80)}`);
  const dec = (s) => JSON.parse(Buffer.from(s, 'base64url').toString('utf8'));
  return { header: dec(parts[0]), payload: dec(parts[1]) };
}

/** The value of a probe step, or an assertion failure naming the library call that failed. */
function ok(result, what) {
  assert.ok(result, `${what}: the probe did not run this step`);
  assert.ok(
    'ok' in result,
    `${what} failed: ${result.error}: ${result.message}` +
      (result.status ? `\nHTTP ${result.status}: ${JSON.stringify(result.body)}` : '') +
      `\n${result.stack ?? ''}`,
  );
  return result.ok;
}

/** A probe step that must have been rejected with an error whose message matches `re`. */
function rejected(result, re, what) {
  assert.ok(result, `${what}: the probe did not run this step`);
  assert.ok(!('ok' in result), `${what}: expected a rejection, but it returned ${JSON.stringify(result.ok)}`);
  assert.match(result.message, re, `${what}: unexpected error ${result.error}: ${result.message}`);
}

async function assertGoogleError(res, code, status, what) {
  const text = await res.text();
  assert.equal(res.status, code, `${what}: expected HTTP ${code} ${status}, got ${res.status}: ${text.slice(0, 500)}`);
  let body;
  try {
    body = JSON.parse(text);
  } catch {
    assert.fail(`${what}: error body is not JSON: ${text.slice(0, 300)}`);
  }
  const err = body?.error;
  assert.equal(typeof err, 'object', `${what}: no "error" object: ${text.slice(0, 300)}`);
  assert.equal(err.code, code, `${what}: error.code in ${text.slice(0, 300)}`);
  assert.equal(err.status, status, `${what}: error.status in ${text.slice(0, 300)}`);
  assert.ok(typeof err.message === 'string' && err.message, `${what}: error.message in ${text.slice(0, 300)}`);
}

async function assertOkJson(res, what) {
  const text = await res.text();
  assert.equal(res.status, 200, `${what}: HTTP ${res.status}: ${text.slice(0, 500)}`);
  return JSON.parse(text);
}

/** Claims Google puts in an ID token for a service account. */
function assertIdTokenClaims(token, account, azp, what) {
  const { header, payload } = jwtParts(token);
  assert.equal(header.alg, 'RS256', `${what}: header ${JSON.stringify(header)}`);
  assert.ok(typeof header.kid === 'string' && header.kid, `${what}: header ${JSON.stringify(header)}`);
  const claims = JSON.stringify(payload);
  assert.equal(payload.iss, 'https://accounts.google.com', `${what}: iss in ${claims}`);
  assert.equal(payload.aud, AUDIENCE, `${what}: aud in ${claims}`);
  assert.equal(payload.email, account.email, `${what}: email in ${claims}`);
  assert.equal(payload.email_verified, true, `${what}: email_verified in ${claims}`);
  assert.equal(payload.sub, account.uniqueId, `${what}: sub in ${claims}`);
  assert.equal(payload.azp, azp, `${what}: azp in ${claims}`);
  assert.equal(payload.exp - payload.iat, 3600, `${what}: exp - iat in ${claims}`);
  const now = Date.now() / 1000;
  assert.ok(payload.iat <= now + 60 && payload.exp > now, `${what}: iat/exp vs now=${now} in ${claims}`);
  return { header, payload };
}

// ------------------------------------------------------------------ the server under test

/** The environment for the gatehouse binary: no GATEHOUSE_* settings leak in from outside. */
function binEnv() {
  return Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('GATEHOUSE_')));
}

class Gatehouse {
  constructor(dataDir, port, mdsPort) {
    this.dataDir = dataDir;
    this.port = port;
    this.mdsPort = mdsPort;
    this.url = `http://127.0.0.1:${port}`;
    this.logPath = path.join(dataDir, 'server.log');
    this.proc = null;
    this.exited = null;
  }

  /** `gatehouse iam --data-dir D --public-url URL ARGS`; resolves with the last stdout line as JSON. */
  cliJson(...args) {
    const argv = ['iam', '--data-dir', this.dataDir, '--public-url', this.url, ...args];
    return new Promise((resolve, reject) => {
      execFile(BIN, argv, { env: binEnv(), timeout: 60_000, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
        if (err) {
          reject(new Error(`gatehouse iam ${args.join(' ')} failed (${err.code ?? err.signal}):\n` +
            `stdout: ${stdout.slice(-2000)}\nstderr: ${stderr.slice(-2000)}`));
          return;
        }
        const lines = stdout.split('\n').filter((l) => l.trim());
        try {
          resolve(JSON.parse(lines[lines.length - 1]));
        } catch {
          reject(new Error(`gatehouse iam ${args.join(' ')}: last line is not JSON:\n${stdout.slice(-2000)}`));
        }
      });
    });
  }

  async createAccount(prefix) {
    const out = await this.cliJson('service-accounts', 'create', uniqueId(prefix), '--project', PROJECT);
    assert.equal(out.projectId, PROJECT, JSON.stringify(out));
    return { email: out.email, uniqueId: out.uniqueId, member: `serviceAccount:${out.email}` };
  }

  /** Writes a key file for the account; returns { path, keyId, info }. */
  async createKeyFile(account) {
    const dir = path.join(this.dataDir, 'keys');
    fs.mkdirSync(dir, { recursive: true });
    const file = path.join(dir, `${account.email.split('@')[0]}.json`);
    const out = await this.cliJson('service-accounts', 'keys', 'create', file, '--iam-account', account.email);
    return { path: file, keyId: out.keyId, info: JSON.parse(fs.readFileSync(file, 'utf8')) };
  }

  addBinding(member, role) {
    return this.cliJson('add-binding', '--project', PROJECT, '--member', member, '--role', role);
  }

  /** Starts `serve` with a metadata server for `mdsAccount`; resolves once both listen. */
  async start(mdsAccount) {
    const argv = [
      'iam', '--data-dir', this.dataDir, '--public-url', this.url,
      'serve', '--listen', `127.0.0.1:${this.port}`,
      '--metadata', `${mdsAccount.email}=127.0.0.1:${this.mdsPort}`,
    ];
    const log = fs.openSync(this.logPath, 'a');
    try {
      // detached: its own process group, killed as a whole by stop().
      this.proc = spawn(BIN, argv, { env: binEnv(), stdio: ['ignore', log, log], detached: true });
    } finally {
      fs.closeSync(log);
    }
    this.exited = new Promise((resolve) => this.proc.once('exit', (code, signal) => resolve({ code, signal })));
    this.proc.once('error', () => {});
    const deadline = Date.now() + 30_000;
    while (Date.now() < deadline) {
      if (this.proc.exitCode !== null || this.proc.signalCode !== null) {
        throw new Error(`gatehouse iam serve exited (${this.proc.exitCode ?? this.proc.signalCode}):\n${this.logTail()}`);
      }
      const messages = new Set(this.logRecords().map((r) => r.message ?? r.fields?.message));
      if (messages.has('metadata server failed')) throw new Error(`metadata server failed:\n${this.logTail()}`);
      if (messages.has('listening') && messages.has('metadata listening')) return;
      await sleep(50);
    }
    throw new Error(`gatehouse iam serve did not come up in 30 s:\n${this.logTail()}`);
  }

  logRecords() {
    let text = '';
    try {
      text = fs.readFileSync(this.logPath, 'utf8');
    } catch {
      return [];
    }
    return text.split('\n').flatMap((line) => {
      try {
        const rec = JSON.parse(line);
        return rec && typeof rec === 'object' ? [rec] : [];
      } catch {
        return [];
      }
    });
  }

  logTail(n = 40) {
    try {
      return fs.readFileSync(this.logPath, 'utf8').split('\n').slice(-n).join('\n');
    } catch {
      return '(no log)';
    }
  }

  /** Kills the server's process group (TERM, then KILL after 10 s) and waits for it. */
  async stop() {
    const proc = this.proc;
    if (!proc || proc.pid === undefined) return;
    if (proc.exitCode === null && proc.signalCode === null) {
      killGroup(proc.pid, 'SIGTERM');
      let timer;
      const done = await Promise.race([
        this.exited,
        new Promise((resolve) => { timer = setTimeout(() => resolve(null), 10_000); }),
      ]);
      clearTimeout(timer);
      if (!done) {
        killGroup(proc.pid, 'SIGKILL');
        await this.exited;
      }
    }
    killGroup(proc.pid, 'SIGKILL'); // anything the server left in its group
    this.proc = null;
  }

  fetch(method, urlPath, { token, body } = {}) {
    const headers = {};
    if (token !== undefined) headers.authorization = `Bearer ${token}`;
    if (body !== undefined) headers['content-type'] = 'application/json';
    return fetch(this.url + urlPath, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(HTTP_TIMEOUT_MS),
    });
  }

  testPermissions(token, permissions) {
    return this.fetch('POST', `/v1/projects/${PROJECT}:testIamPermissions`, { token, body: { permissions } });
  }

  listAccounts(token) {
    return this.fetch('GET', `/v1/projects/${PROJECT}/serviceAccounts`, { token });
  }
}

function killGroup(pid, signal) {
  try {
    process.kill(-pid, signal);
  } catch {
    // already gone
  }
}

// ------------------------------------------------------------------ the library, in a child

// Variables that would make google-auth-library find other credentials, another project or
// another environment (or send loopback traffic through a proxy) are not passed on.
const DROPPED_ENV = /^(GOOGLE_|GCE_|GCLOUD_|CLOUDSDK_|GATEHOUSE_|GAE_|K_|FUNCTION_|CLOUD_RUN_|METADATA_SERVER_DETECTION$|DETECT_GCP_RETRIES$|NODE_TEST_CONTEXT$|NODE_OPTIONS$|(HTTPS?|ALL|NO)_PROXY$)/i;

function probeEnv(extra) {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !DROPPED_ENV.test(k)));
  const gcloudDir = path.join(gh.dataDir, 'empty-gcloud-config'); // no application-default credentials
  fs.mkdirSync(gcloudDir, { recursive: true });
  return { ...env, CLOUDSDK_CONFIG: gcloudDir, NO_PROXY: '127.0.0.1,localhost', no_proxy: '127.0.0.1,localhost', ...extra };
}

const probeGroups = new Set(); // process groups of running probes (the library may run gcloud)

/** Runs google-auth.iam.probe.mjs with `args` and `extraEnv`; resolves with its JSON output. */
function runProbe(args, extraEnv) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [PROBE, JSON.stringify(args)], {
      cwd: HERE,
      env: probeEnv(extraEnv),
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true, // its own process group, with anything it starts
    });
    probeGroups.add(child.pid);
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d) => { stdout += d; });
    child.stderr.setEncoding('utf8').on('data', (d) => { stderr += d; });
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      killGroup(child.pid, 'SIGKILL');
    }, 30_000);
    child.once('error', (err) => {
      clearTimeout(timer);
      probeGroups.delete(child.pid);
      reject(err);
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      killGroup(child.pid, 'SIGKILL'); // nothing it started outlives it
      probeGroups.delete(child.pid);
      const detail = `\nstdout: ${stdout.slice(-3000)}\nstderr: ${stderr.slice(-3000)}`;
      if (code !== 0) {
        const how = timedOut ? 'killed after 30 s' : `exit ${code ?? signal}`;
        reject(new Error(`probe ${args.scenario} failed (${how}):${detail}`));
        return;
      }
      const lines = stdout.split('\n').filter((l) => l.trim());
      try {
        resolve(JSON.parse(lines[lines.length - 1]));
      } catch {
        reject(new Error(`probe ${args.scenario}: no JSON result:${detail}`));
      }
    });
  });
}

// ------------------------------------------------------------------ session

let gh; // the Gatehouse under test
let mdsAccount; // the metadata server's account (no roles until the access-token test grants one)
let keyAccount; // an account with a key file, granted roles/iam.serviceAccountAdmin before start
let keyFile;
const probes = {}; // scenario -> Promise of the probe's output

// Never leave the server, a probe or the data directory behind, even if this process exits
// early or is interrupted (the signal handlers turn SIGINT / SIGTERM / SIGHUP into an exit).
function cleanUpNow() {
  for (const pgid of probeGroups) killGroup(pgid, 'SIGKILL');
  if (!gh) return;
  if (gh.proc?.pid !== undefined) killGroup(gh.proc.pid, 'SIGKILL');
  fs.rmSync(gh.dataDir, { recursive: true, force: true, maxRetries: 5, retryDelay: 50 });
}
process.once('exit', cleanUpNow);
for (const [signal, number] of [['SIGINT', 2], ['SIGTERM', 15], ['SIGHUP', 1]]) {
  process.once(signal, () => process.exit(128 + number));
}

before(async () => {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'gatehouse-iam-node-'));
  const port = await freePort();
  let mdsPort = await freePort();
  while (mdsPort === port) mdsPort = await freePort();
  gh = new Gatehouse(dataDir, port, mdsPort);

  // Made before the server starts, so its 1 s cache cannot hide them.
  mdsAccount = await gh.createAccount('mds-runner');
  keyAccount = await gh.createAccount('kf-node');
  keyFile = await gh.createKeyFile(keyAccount);
  await gh.addBinding(keyAccount.member, 'roles/iam.serviceAccountAdmin');
  await gh.start(mdsAccount);

  const common = {
    audience: AUDIENCE,
    wrongAudience: WRONG_AUDIENCE,
    pemCertsUrl: `${gh.url}/oauth2/v1/certs`,
    jwkCertsUrl: `${gh.url}/oauth2/v3/certs`,
  };
  const mdsHost = `127.0.0.1:${gh.mdsPort}`;
  probes.mds = runProbe(
    { scenario: 'mds', ...common },
    { GCE_METADATA_HOST: mdsHost, GCE_METADATA_IP: mdsHost, METADATA_SERVER_DETECTION: 'ping-only' },
  );
  probes.keyfile = runProbe(
    {
      scenario: 'keyfile',
      ...common,
      keyFile: keyFile.path,
      tokenUri: keyFile.info.token_uri,
      scopes: [CLOUD_PLATFORM],
      testPermissionsUrl: `${gh.url}/v1/projects/${PROJECT}:testIamPermissions`,
      permissions: ['iam.serviceAccounts.list', 'iam.serviceAccounts.create'],
    },
    { METADATA_SERVER_DETECTION: 'none' },
  );
  probes.jwk = Promise.all([probes.mds, probes.keyfile]).then(([m, k]) => {
    const idTokens = [m.fetchIdToken?.ok, k.fetchIdToken?.ok, k.jwtFetchIdToken?.ok];
    return runProbe({ scenario: 'jwk', ...common, idTokens }, { METADATA_SERVER_DETECTION: 'none' });
  });
  for (const p of Object.values(probes)) p.catch(() => {}); // reported by the tests that await them
});

after(async () => {
  for (const pgid of probeGroups) killGroup(pgid, 'SIGKILL'); // only if a test gave up waiting
  if (!gh) return;
  await gh.stop();
  fs.rmSync(gh.dataDir, { recursive: true, force: true, maxRetries: 5, retryDelay: 50 });
});

// ------------------------------------------------------------------ metadata server (ADC on GCE)

test('gcp-metadata isAvailable() pings the metadata server at GCE_METADATA_HOST', TEST_OPTS, async () => {
  const r = await probes.mds;
  assert.equal(ok(r.isAvailable, 'gcpMetadata.isAvailable()'), true);
});

test('new GoogleAuth().getClient() is a Compute client; getProjectId() is the project', TEST_OPTS, async () => {
  const r = await probes.mds;
  const client = ok(r.getClient, 'GoogleAuth.getClient()');
  assert.equal(client.isCompute, true, `getClient() returned ${client.constructor}, not Compute`);
  assert.equal(ok(r.getProjectId, 'GoogleAuth.getProjectId()'), PROJECT);
  assert.equal(ok(r.getCredentials, 'GoogleAuth.getCredentials()'), mdsAccount.email);
});

test('metadata-server access token: authenticated, denied by default, allowed after add-binding', TEST_OPTS, async () => {
  const r = await probes.mds;
  const token = ok(r.getAccessToken, 'GoogleAuth.getAccessToken()');
  assert.ok(typeof token === 'string' && token.length > 20, `access token ${JSON.stringify(token)}`);
  const viaClient = ok(r.clientAccessToken, 'Compute.getAccessToken()');
  assert.equal(viaClient.token, token, 'Compute.getAccessToken() returns the cached token');
  assert.ok(viaClient.expiry_date > Date.now() + 60_000, `expiry_date ${viaClient.expiry_date}`);

  await assertGoogleError(await gh.listAccounts('not-a-token'), 401, 'UNAUTHENTICATED', 'list with a bogus token');
  await assertGoogleError(await gh.listAccounts(token), 403, 'PERMISSION_DENIED', 'list before any grant');
  const before = await assertOkJson(
    await gh.testPermissions(token, ['iam.serviceAccounts.list']),
    'testIamPermissions before any grant',
  );
  assert.ok(!('permissions' in before), `no permission granted yet, got ${JSON.stringify(before)}`);

  await gh.addBinding(mdsAccount.member, 'roles/iam.serviceAccountAdmin');
  // The server caches policies for 1 s: `eventually` waits for the grant to show.
  await eventually(async () => {
    const granted = await assertOkJson(
      await gh.testPermissions(token, ['iam.serviceAccounts.list']),
      'testIamPermissions after add-binding',
    );
    assert.deepEqual(granted, { permissions: ['iam.serviceAccounts.list'] });
  });
  const listing = await assertOkJson(await gh.listAccounts(token), 'list after add-binding');
  const emails = (listing.accounts ?? []).map((a) => a.email);
  assert.ok(emails.includes(mdsAccount.email), `listing ${JSON.stringify(emails)}`);
});

test('getIdTokenClient(aud).idTokenProvider.fetchIdToken(aud) on the metadata server', TEST_OPTS, async () => {
  const r = await probes.mds;
  const client = ok(r.getIdTokenClient, 'GoogleAuth.getIdTokenClient()');
  assert.deepEqual(client, { isIdTokenClient: true, providerIsCompute: true });
  const token = ok(r.fetchIdToken, 'Compute.fetchIdToken()');
  // The metadata server (like IAM generateIdToken) puts the account's unique id in azp.
  assertIdTokenClaims(token, mdsAccount, mdsAccount.uniqueId, 'metadata-server ID token');
  const header = ok(r.idTokenHeaders, 'IdTokenClient.getRequestHeaders()');
  assert.match(header ?? '', /^Bearer [\w-]+\.[\w-]+\.[\w-]+$/, `authorization header ${JSON.stringify(header)}`);
  assertIdTokenClaims(header.slice('Bearer '.length), mdsAccount, mdsAccount.uniqueId, 'IdTokenClient header');
});

test('OAuth2Client.verifyIdToken with our PEM certs accepts the metadata-server ID token', TEST_OPTS, async () => {
  const r = await probes.mds;
  const token = ok(r.fetchIdToken, 'Compute.fetchIdToken()');
  const { payload, envelope } = ok(r.pemVerify, 'OAuth2Client.verifyIdToken (PEM, /oauth2/v1/certs)');
  assert.equal(payload.email, mdsAccount.email);
  assert.equal(payload.aud, AUDIENCE);
  assert.equal(envelope.kid, jwtParts(token).header.kid);
  rejected(r.pemWrongAudience, /Wrong recipient/, 'verifyIdToken with the wrong audience');
  rejected(r.pemTampered, /Invalid token signature/, 'verifyIdToken of a tampered token');
});

test('OAuth2Client in JWK mode (/oauth2/v3/certs) verifies metadata-server and key-file ID tokens', TEST_OPTS, async () => {
  const r = await probes.jwk;
  const certs = ok(r.certs, 'OAuth2Client.getFederatedSignonCertsAsync() (JWK)');
  assert.equal(certs.format, 'JWK', `the probe must take the JWK path, got ${certs.format}`);
  assert.ok(certs.kids.length > 0, 'the JWK set has keys');
  const names = ['metadata-server ID token', 'GoogleAuth({keyFile}) ID token', 'JWT.fetchIdToken ID token'];
  for (const [i, name] of names.entries()) {
    const { payload } = ok(r[`jwk${i}Verify`], `verifyIdToken (JWK) of the ${name}`);
    assert.equal(payload.aud, AUDIENCE, name);
    rejected(r[`jwk${i}WrongAudience`], /Wrong recipient/, `verifyIdToken (JWK), wrong audience, ${name}`);
    rejected(r[`jwk${i}Tampered`], /Invalid token signature/, `verifyIdToken (JWK), tampered ${name}`);
  }
});

// ------------------------------------------------------------------ key files issued by Gatehouse

test('key file: JWT({keyFile, scopes}).authorize() gets an access token that works on the API', TEST_OPTS, async (t) => {
  const info = keyFile.info;
  assert.equal(info.type, 'service_account');
  assert.equal(info.client_email, keyAccount.email);
  assert.equal(info.private_key_id, keyFile.keyId);
  assert.equal(info.token_uri, `${gh.url}/token`);

  const r = await probes.keyfile;
  const tokens = ok(r.authorize, 'JWT.authorize()');
  assert.equal(tokens.token_type, 'Bearer');
  assert.ok(tokens.expiry_date > Date.now() + 60_000, `expiry_date ${tokens.expiry_date}`);
  const tokenRequests = r.requests.filter((q) => q.sent === info.token_uri);
  assert.ok(tokenRequests.length > 0, `no token request reached ${info.token_uri}: ${JSON.stringify(r.requests)}`);
  t.diagnostic(
    `google-auth-library posted the JWT-bearer grant to ${tokenRequests[0].requested}` +
      (tokenRequests[0].requested === GOOGLE_TOKEN_URL
        ? ` (its fixed URL, not the key file's token_uri; routed to ${info.token_uri} by a transporter interceptor)`
        : ' (the key file\'s token_uri)'),
  );

  // The access token, as a bearer, on the IAM API (the account has roles/iam.serviceAccountAdmin).
  const body = await assertOkJson(
    await gh.testPermissions(tokens.access_token, ['iam.serviceAccounts.list', 'iam.serviceAccounts.create']),
    'testIamPermissions with the key-file access token',
  );
  assert.deepEqual(body, { permissions: ['iam.serviceAccounts.list', 'iam.serviceAccounts.create'] });
  // And through the library's own authorized request.
  const viaLib = ok(r.apiRequest, 'JWT.request(testIamPermissions)');
  assert.equal(viaLib.status, 200);
  assert.deepEqual(viaLib.data, { permissions: ['iam.serviceAccounts.list', 'iam.serviceAccounts.create'] });
});

test('key file: JWT.fetchIdToken and GoogleAuth({keyFile}).getIdTokenClient give ID tokens that verify', TEST_OPTS, async () => {
  const r = await probes.keyfile;
  // Google's token endpoint puts the account's email in azp of JWT-bearer ID tokens.
  const viaJwt = ok(r.jwtFetchIdToken, 'JWT.fetchIdToken()');
  assertIdTokenClaims(viaJwt, keyAccount, keyAccount.email, 'JWT.fetchIdToken ID token');
  const client = ok(r.getIdTokenClient, 'GoogleAuth({keyFile}).getIdTokenClient()');
  assert.deepEqual(client, { isIdTokenClient: true, providerIsJWT: true, sameClient: true });
  const viaAuth = ok(r.fetchIdToken, 'IdTokenClient.idTokenProvider.fetchIdToken()');
  assertIdTokenClaims(viaAuth, keyAccount, keyAccount.email, 'GoogleAuth({keyFile}) ID token');

  for (const prefix of ['pem', 'jwtPem']) {
    const { payload } = ok(r[`${prefix}Verify`], `OAuth2Client.verifyIdToken (PEM) [${prefix}]`);
    assert.equal(payload.email, keyAccount.email);
    rejected(r[`${prefix}WrongAudience`], /Wrong recipient/, `verifyIdToken, wrong audience [${prefix}]`);
    rejected(r[`${prefix}Tampered`], /Invalid token signature/, `verifyIdToken, tampered [${prefix}]`);
  }
  const off = r.requests.filter((q) => !q.sent.startsWith(gh.url));
  assert.deepEqual(off, [], 'every request the library made went to our server');
});
