// Starts op.mjs as a child process the way any test does (Rust tests do the same with
// std::process::Command): read the one JSON line on stdout, keep stderr for the failure message,
// stop with SIGTERM.
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

const OP = fileURLToPath(new URL('./op.mjs', import.meta.url));

/**
 * Options: clientId, clientSecret, redirectUris (array), secondClientId, secondClientSecret,
 * idTokenTtl, port (default 0), readyTimeoutMs (default 120000: a loaded CI machine starts Node slowly).
 * Resolves to { issuer, port, stop(), log() } where log() is the provider's stderr so far.
 */
export async function spawnOp(options) {
  // A provider that has not said it is ready after a minute is stopped and started once more:
  // under a fully loaded CI machine one of three providers started side by side has been seen
  // to stall after loading oidc-provider (never in a run of its own). A second stall fails.
  const { readyTimeoutMs = 120_000 } = options;
  try {
    return await spawnOnce({ ...options, readyTimeoutMs: Math.min(60_000, readyTimeoutMs), stalled: true });
  } catch (err) {
    if (!err.stalled) throw err;
    process.stderr.write(`[harness] ${err.message.split('\n')[0]}; starting it again\n`);
    return spawnOnce({ ...options, readyTimeoutMs });
  }
}

async function spawnOnce({
  clientId, clientSecret, redirectUris, secondClientId, secondClientSecret, idTokenTtl, port = 0,
  readyTimeoutMs, stalled = false,
}) {
  const args = [OP, '--port', String(port), '--client-id', clientId, '--client-secret', clientSecret];
  for (const uri of redirectUris) args.push('--redirect-uri', uri);
  if (secondClientId) args.push('--second-client-id', secondClientId, '--second-client-secret', secondClientSecret);
  if (idTokenTtl !== undefined) args.push('--id-token-ttl', String(idTokenTtl));
  args.push('--watch-stdin');

  const child = spawn(process.execPath, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (chunk) => { stderr += chunk; });
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));

  const ready = new Promise((resolve, reject) => {
    const lines = createInterface({ input: child.stdout });
    lines.once('line', (line) => {
      try { resolve(JSON.parse(line)); } catch (err) { reject(new Error(`op.mjs printed a non-JSON line: ${line}`)); }
    });
    exited.then(({ code, signal }) => reject(new Error(`op.mjs exited (${code ?? signal}) before it was ready:\n${stderr}`)));
    setTimeout(() => {
      const err = new Error(`op.mjs not ready after ${readyTimeoutMs} ms:\n${stderr}`);
      err.stalled = stalled;
      reject(err);
    }, readyTimeoutMs).unref();
  });

  let info;
  try {
    info = await ready;
  } catch (err) {
    child.kill('SIGTERM');
    throw err;
  }
  return {
    ...info,
    log: () => stderr,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      return exited;
    },
  };
}
