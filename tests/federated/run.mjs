// Runs the federated sign-in suite (federated.test.mjs) against a real Gatehouse binary and real
// upstream OpenID Providers (op.mjs):
//
//   GATEHOUSE_BIN=target/debug/gatehouse node tests/federated/run.mjs [--keep] [node --test args] [FILE.mjs ...]
//
// 1. picks a free port for Gatehouse (the OPs must know its redirect URI before it starts);
// 2. starts three providers, all registering `http://127.0.0.1:<port>/__/auth/handler`:
//    OP1 (clients `gatehouse` and `other-app`, secrets with `:&+ ` in them), OP2 (another issuer,
//    same client id `gatehouse`), OP3 (client `gatehouse`, ID tokens live 1 s);
// 3. writes the --idp-config file and the client-secret files into a temporary directory:
//      fed-proj (development): oidc.corp -> OP1/gatehouse (trusted_email false),
//                              oidc.trusted -> OP1/other-app (trusted_email true),
//                              oidc.short -> OP3/gatehouse;
//      fed-prod (production):  oidc.corp -> OP1/gatehouse;
// 4. starts `gatehouse identity` on that port and waits for its "listening" line;
// 5. runs `node --test federated.test.mjs` with everything in the environment;
// 6. fails when no test ran (counted from a TAP copy of the report), then
//    stops everything (also on failure, SIGINT/SIGTERM, and after a hard 5-minute cap) and exits
//    with the test run's exit code. On failure it prints the tail of Gatehouse's and the OPs' logs.
//    The temporary directory is removed unless the run failed or --keep was given.
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, statSync, createWriteStream, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';

import { spawnOp } from './harness.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, '..', '..');
const HARD_CAP_MS = 5 * 60 * 1000;
const started = Date.now();

const args = process.argv.slice(2);
const keep = args.includes('--keep');
// Other arguments go to `node --test` (e.g. --test-name-pattern=linking); a *.mjs argument
// replaces the default test file.
const testArgs = args.filter((a) => a !== '--keep' && !a.endsWith('.mjs'));
const testFiles = args.filter((a) => a.endsWith('.mjs')).map((f) => path.resolve(f));

const BIN = path.resolve(process.env.GATEHOUSE_BIN || path.join(REPO, 'target/debug/gatehouse'));
const DEV = 'fed-proj';
const PROD = 'fed-prod';
const PROD_KEY = 'prod-key';
const ADMIN_KEY = `admin-${randomBytes(12).toString('hex')}`;
// Secrets with the characters that break a client that skips RFC 6749 §2.3.1's form-encoding.
const CORP = { clientId: 'gatehouse', clientSecret: `corp:s3cret&a+b c/${randomBytes(4).toString('hex')}` };
const OTHER = { clientId: 'other-app', clientSecret: `other:s3cret&x+y z=${randomBytes(4).toString('hex')}` };

const log = (line) => process.stderr.write(`[run] ${line}\n`);
const elapsed = () => `${((Date.now() - started) / 1000).toFixed(1)} s`;

const children = { ops: [], gatehouse: null, tests: null };
let work;
let gatehouseLogPath;
let finishing = false;

async function freePort() {
  const server = createServer();
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** The binary may be mid-rebuild: wait until it exists and has stopped changing. */
async function waitForBinary(file, timeoutMs = 180_000) {
  const deadline = Date.now() + timeoutMs;
  let announced = false;
  let last = '';
  for (;;) {
    if (existsSync(file)) {
      const s = statSync(file);
      const now = `${s.size}:${s.mtimeMs}`;
      if (now === last && s.size > 0 && (s.mode & 0o111)) return;
      last = now;
    } else if (!announced) {
      log(`waiting for ${file} (a rebuild in progress?)`);
      announced = true;
    }
    if (Date.now() > deadline) throw new Error(`${file} did not appear within ${timeoutMs / 1000} s; set GATEHOUSE_BIN`);
    await sleep(1000);
  }
}

/** Starts `gatehouse identity` and resolves to its address once it prints its "listening" line. */
function startGatehouse(argv, logPath) {
  const out = createWriteStream(logPath);
  const child = spawn(BIN, argv, {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, GATEHOUSE_LOG: process.env.GATEHOUSE_LOG || 'info' },
  });
  children.gatehouse = child;
  child.stderr.pipe(out, { end: false });
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  const ready = new Promise((resolve, reject) => {
    const lines = createInterface({ input: child.stdout });
    let done = false;
    lines.on('line', (line) => {
      out.write(`${line}\n`);
      if (done || !line.includes('"listening"')) return;
      try {
        const rec = JSON.parse(line);
        if (rec.message === 'listening' && rec.addr) {
          done = true;
          resolve(rec.addr);
        }
      } catch { /* not JSON: keep reading */ }
    });
    child.once('error', reject);
    exited.then(({ code, signal }) => {
      if (!done) reject(new Error(`gatehouse exited (${code ?? signal}) before listening:\n${tail(logPath, 30)}`));
    });
    setTimeout(() => {
      if (!done) reject(new Error(`gatehouse did not report listening within 60 s:\n${tail(logPath, 30)}`));
    }, 60_000).unref();
  });
  return { ready, exited };
}

/** The `# tests N`, `# pass N`, ... counts at the end of a TAP report ({} when unreadable). */
function tapSummary(file) {
  const out = {};
  let text = '';
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return out;
  }
  for (const line of text.split('\n')) {
    const m = /^# (tests|pass|fail|cancelled|skipped|todo) (\d+)$/.exec(line);
    if (m) out[m[1]] = Number(m[2]);
  }
  return out;
}

function tail(file, n) {
  try {
    return readFileSync(file, 'utf8').split('\n').slice(-n - 1).join('\n');
  } catch {
    return '(no log)';
  }
}

async function stopChild(child, name, graceMs = 5000) {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const gone = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  const timer = setTimeout(() => {
    log(`${name} ignored SIGTERM for ${graceMs} ms: SIGKILL`);
    child.kill('SIGKILL');
  }, graceMs);
  await gone;
  clearTimeout(timer);
}

async function teardown(ok) {
  await stopChild(children.tests, 'node --test', 3000);
  await stopChild(children.gatehouse, 'gatehouse');
  await Promise.all(children.ops.map((op) => op.stop().catch(() => {})));
  if (!ok) {
    if (gatehouseLogPath) process.stderr.write(`\n----- gatehouse log (last 60 lines; full log ${gatehouseLogPath}) -----\n${tail(gatehouseLogPath, 60)}\n`);
    for (const op of [...children.ops].sort((a, b) => a.name.localeCompare(b.name))) {
      const lines = op.log().trimEnd().split('\n');
      process.stderr.write(`\n----- ${op.name} (${op.issuer}) log, last 25 lines -----\n${lines.slice(-25).join('\n')}\n`);
    }
  }
  if (work && (ok && !keep)) rmSync(work, { recursive: true, force: true });
  else if (work) log(`kept ${work}`);
}

async function finish(code, why) {
  if (finishing) return;
  finishing = true;
  if (why) log(why);
  try {
    await teardown(code === 0);
  } catch (err) {
    log(`teardown: ${err.stack ?? err}`);
  }
  log(`${code === 0 ? 'passed' : 'FAILED'} in ${elapsed()}`);
  process.exit(code);
}

process.once('SIGINT', () => finish(130, 'interrupted (SIGINT)'));
process.once('SIGTERM', () => finish(143, 'terminated (SIGTERM)'));
setTimeout(() => finish(1, `hard cap: the run took longer than ${HARD_CAP_MS / 60000} minutes`), HARD_CAP_MS).unref();

async function main() {
  await waitForBinary(BIN);
  work = mkdtempSync(path.join(tmpdir(), 'gatehouse-federated-'));
  const port = await freePort();
  const identityUrl = `http://127.0.0.1:${port}`;
  const redirectUri = `${identityUrl}/__/auth/handler`;

  const named = (name, op) => Object.assign(op, { name });
  const [op1, op2, op3] = await Promise.all([
    spawnOp({
      ...CORP,
      redirectUris: [redirectUri],
      secondClientId: OTHER.clientId,
      secondClientSecret: OTHER.clientSecret,
    }).then((op) => named('OP1', op)),
    spawnOp({ ...CORP, redirectUris: [redirectUri] }).then((op) => named('OP2', op)),
    spawnOp({ ...CORP, redirectUris: [redirectUri], idTokenTtl: 1 }).then((op) => named('OP3 (ttl 1 s)', op)),
  ].map((p) => p.then((op) => { children.ops.push(op); return op; })));
  log(`OP1 ${op1.issuer}, OP2 ${op2.issuer}, OP3 ${op3.issuer} (${elapsed()})`);

  const corpSecret = path.join(work, 'corp-secret.txt');
  const otherSecret = path.join(work, 'other-secret.txt');
  writeFileSync(corpSecret, `${CORP.clientSecret}\n`, { mode: 0o600 });
  writeFileSync(otherSecret, OTHER.clientSecret, { mode: 0o600 });
  const q = JSON.stringify; // JSON strings are valid YAML scalars
  const idpConfig = path.join(work, 'idp.yaml');
  writeFileSync(idpConfig, `# written by tests/federated/run.mjs
- provider_id: oidc.corp
  display_name: Corp SSO
  issuer: ${q(op1.issuer)}
  client_id: ${q(CORP.clientId)}
  client_secret_file: ${q(corpSecret)}
  trusted_email: false
  project: ${DEV}
- provider_id: oidc.trusted
  issuer: ${q(op1.issuer)}
  client_id: ${q(OTHER.clientId)}
  client_secret_file: ${q(otherSecret)}
  trusted_email: true
  project: ${DEV}
- provider_id: oidc.short
  issuer: ${q(op3.issuer)}
  client_id: ${q(CORP.clientId)}
  client_secret_file: ${q(corpSecret)}
  project: ${DEV}
- provider_id: oidc.corp
  issuer: ${q(op1.issuer)}
  client_id: ${q(CORP.clientId)}
  client_secret_file: ${q(corpSecret)}
  trusted_email: false
  project: ${PROD}
`);

  gatehouseLogPath = path.join(work, 'gatehouse.log');
  // A production project needs the master key its signing keys are sealed under.
  const masterKey = path.join(work, 'master.key');
  execFileSync(BIN, ['secrets', 'generate-master-key', masterKey]);
  const gh = startGatehouse([
    'identity',
    '--master-key-file', masterKey,
    '--project', DEV,
    '--project', `${PROD}:production`,
    '--api-key', `${PROD_KEY}=${PROD}`,
    '--admin-key', ADMIN_KEY,
    '--listen', `127.0.0.1:${port}`,
    '--data-dir', path.join(work, 'data'),
    '--rate-limits', 'off',
    '--authorized-domain', '127.0.0.1',
    '--authorized-domain', 'localhost',
    '--idp-config', idpConfig,
  ], gatehouseLogPath);
  const addr = await gh.ready;
  if (addr !== `127.0.0.1:${port}`) throw new Error(`gatehouse listens on ${addr}, not 127.0.0.1:${port}`);
  log(`gatehouse ${identityUrl} (${elapsed()})`);
  gh.exited.then(({ code, signal }) => {
    if (!finishing) log(`gatehouse exited unexpectedly (${code ?? signal})`);
  });

  const env = {
    ...process.env,
    GATEHOUSE_URL: identityUrl,
    FED_DEV_PROJECT: DEV,
    FED_PROD_PROJECT: PROD,
    FED_PROD_API_KEY: PROD_KEY,
    FED_ADMIN_KEY: ADMIN_KEY,
    FED_REDIRECT_URI: redirectUri,
    FED_OP1_ISSUER: op1.issuer,
    FED_OP2_ISSUER: op2.issuer,
    FED_OP3_ISSUER: op3.issuer,
    FED_CORP_CLIENT_ID: CORP.clientId,
    FED_CORP_CLIENT_SECRET: CORP.clientSecret,
    FED_OTHER_CLIENT_ID: OTHER.clientId,
    FED_OTHER_CLIENT_SECRET: OTHER.clientSecret,
    FED_GATEHOUSE_LOG: gatehouseLogPath,
  };
  const files = testFiles.length ? testFiles : [path.join(HERE, 'federated.test.mjs')];
  for (const f of files) {
    if (!existsSync(f)) throw new Error(`test file ${f} does not exist`);
  }
  // The spec report for people, a TAP copy to count the tests: a run in which no test ran fails.
  const tapPath = path.join(work, 'summary.tap');
  const child = spawn(process.execPath, [
    '--test',
    '--test-reporter=spec', '--test-reporter-destination=stdout',
    '--test-reporter=tap', `--test-reporter-destination=${tapPath}`,
    ...testArgs, ...files,
  ], {
    stdio: ['ignore', 'inherit', 'inherit'],
    env,
    cwd: HERE,
  });
  children.tests = child;
  const code = await new Promise((resolve) => child.once('exit', (c, signal) => resolve(c ?? (signal ? 1 : 0))));
  children.tests = null;
  if (code !== 0) return finish(code, `node --test exited ${code}`);
  const summary = tapSummary(tapPath);
  if (!(summary.tests > 0 && summary.pass > 0)) {
    return finish(1, `no test ran (${JSON.stringify(summary)}): check the file list and --test-name-pattern`);
  }
  log(`${summary.pass} of ${summary.tests} tests passed`);
  await finish(0);
}

main().catch((err) => finish(1, `setup failed: ${err.stack ?? err}`));
