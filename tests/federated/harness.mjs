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
export async function spawnOp({
  clientId, clientSecret, redirectUris, secondClientId, secondClientSecret, idTokenTtl, port = 0,
  readyTimeoutMs = 120_000,
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
    setTimeout(() => reject(new Error(`op.mjs not ready after ${readyTimeoutMs} ms:\n${stderr}`)), readyTimeoutMs).unref();
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
