// The upstream identity provider for Gatehouse's federated sign-in tests: a real, certified OpenID
// Provider (npm `oidc-provider` by panva) on loopback, plain http, with its development login and
// consent pages. Any login name signs in; the account's claims are derived from that name.
//
// As a program it prints one JSON line on stdout when ready, `{"issuer":"http://127.0.0.1:N","port":N}`,
// logs everything else to stderr, and exits on SIGTERM/SIGINT (and, with --watch-stdin, when its
// standard input closes, so a parent that dies does not leave it running). As a module,
// `startProvider(options)` does the same in-process. README.md lists the options.
import { randomBytes, generateKeyPairSync } from 'node:crypto';
import { createServer } from 'node:http';
import { parseArgs } from 'node:util';
import { pathToFileURL } from 'node:url';

export const EMAIL_DOMAIN = 'upstream.example';

/** The claims the provider holds for an account; `sub` is the login name itself. */
export function accountClaims(login) {
  return {
    sub: login,
    email: `${login}@${EMAIL_DOMAIN}`,
    email_verified: !login.startsWith('unverified-'),
    name: `User ${login}`,
    picture: `https://${EMAIL_DOMAIN}/${login}.png`,
  };
}

function signingKey() {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = privateKey.export({ format: 'jwk' });
  return { ...jwk, kid: `op-${randomBytes(6).toString('hex')}`, alg: 'RS256', use: 'sig' };
}

function htmlEscape(value) {
  return String(value).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

// The stock error page pulls a web font from the internet; this one is self-contained and puts the
// OAuth error where a test can read it: `#op-error` holds the error object as JSON.
async function renderError(ctx, out) {
  ctx.type = 'html';
  ctx.body = `<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>oops! something went wrong</title></head>
<body><h1>oops! something went wrong</h1>
<pre id="op-error">${htmlEscape(JSON.stringify(out))}</pre>
</body></html>`;
}

// The development interaction pages (login, consent, logout) also @import a Google web font. Tests
// must not reach the internet, so that one line is cut from every HTML response.
async function stripExternalFonts(ctx, next) {
  await next();
  if (typeof ctx.body === 'string' && ctx.type === 'text/html') {
    ctx.body = ctx.body.replace(/@import url\(https:\/\/fonts\.googleapis\.com[^)]*\);?/g, '');
  }
}

function client(id, secret, redirectUris) {
  return {
    client_id: id,
    client_secret: secret,
    redirect_uris: redirectUris,
    grant_types: ['authorization_code'],
    response_types: ['code'],
    // The registered method is only the default: oidc-provider accepts client_secret_basic and
    // client_secret_post alike for any client that has a secret.
    token_endpoint_auth_method: 'client_secret_basic',
    id_token_signed_response_alg: 'RS256',
  };
}

/**
 * Starts the provider on `host:port` (port 0 = a free port).
 * Options: { port, host, clientId, clientSecret, redirectUris, secondClientId, secondClientSecret,
 * idTokenTtl, log }. Returns { issuer, port, provider, close() }.
 */
export async function startProvider({
  port = 0,
  host = '127.0.0.1',
  clientId,
  clientSecret,
  redirectUris,
  secondClientId,
  secondClientSecret,
  idTokenTtl = 3600,
  log = (line) => process.stderr.write(`[op] ${line}\n`),
} = {}) {
  if (!clientId || !clientSecret) throw new Error('clientId and clientSecret are required');
  if (!redirectUris?.length) throw new Error('at least one redirect URI is required');
  if (Boolean(secondClientId) !== Boolean(secondClientSecret)) {
    throw new Error('secondClientId and secondClientSecret go together');
  }
  if (!Number.isInteger(idTokenTtl) || idTokenTtl < 1) {
    throw new Error('idTokenTtl must be a positive whole number of seconds (oidc-provider refuses 0)');
  }

  // The issuer names the port, so bind first and build the provider once the port is known.
  const server = createServer();
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, resolve);
  });
  const bound = server.address().port;
  const issuer = `http://${host.includes(':') ? `[${host}]` : host}:${bound}`;

  const { default: Provider } = await import('oidc-provider');
  const clients = [client(clientId, clientSecret, redirectUris)];
  if (secondClientId) clients.push(client(secondClientId, secondClientSecret, redirectUris));

  const provider = new Provider(issuer, {
    clients,
    jwks: { keys: [signingKey()] },
    findAccount: async (_ctx, sub) => ({
      accountId: sub,
      claims: async () => accountClaims(sub),
    }),
    scopes: ['openid', 'email', 'profile'],
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name', 'picture'],
    },
    // Like Google: the ID token from the code flow carries the scope's claims, not only `sub`.
    conformIdTokenClaims: false,
    responseTypes: ['code'],
    clientAuthMethods: ['client_secret_basic', 'client_secret_post'],
    pkce: { required: () => true },
    // A token request must repeat the redirect_uri even when the client registered only one.
    allowOmittingSingleRegisteredRedirectUri: false,
    features: {
      devInteractions: { enabled: true },
    },
    cookies: { keys: [randomBytes(32).toString('base64url')] },
    clientBasedCORS: () => false,
    renderError,
    ttl: {
      AccessToken: 3600,
      AuthorizationCode: 60,
      IdToken: idTokenTtl,
      Interaction: 600,
      Session: 3600,
      Grant: 3600,
    },
  });

  provider.use(stripExternalFonts);
  provider.use(async (ctx, next) => {
    await next();
    log(`${ctx.method} ${ctx.path} -> ${ctx.status}`);
  });
  for (const event of ['server_error', 'authorization.error', 'grant.error', 'interaction.error']) {
    provider.on(event, (_ctx, err) => log(`${event}: ${err.error ?? err.name}: ${err.error_description ?? err.message}${err.error_detail ? ` (${err.error_detail})` : ''}`));
  }

  server.on('request', provider.callback());

  return {
    issuer,
    port: bound,
    provider,
    close: () => new Promise((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    }),
  };
}

function parseCli(argv) {
  const env = process.env;
  const { values } = parseArgs({
    args: argv,
    options: {
      port: { type: 'string', default: env.OP_PORT ?? '0' },
      'issuer-host': { type: 'string', default: env.OP_ISSUER_HOST ?? '127.0.0.1' },
      'client-id': { type: 'string', default: env.OP_CLIENT_ID },
      'client-secret': { type: 'string', default: env.OP_CLIENT_SECRET },
      'redirect-uri': { type: 'string', multiple: true, default: env.OP_REDIRECT_URIS?.split(/\s+/).filter(Boolean) },
      'second-client-id': { type: 'string', default: env.OP_SECOND_CLIENT_ID },
      'second-client-secret': { type: 'string', default: env.OP_SECOND_CLIENT_SECRET },
      'id-token-ttl': { type: 'string', default: env.OP_ID_TOKEN_TTL ?? '3600' },
      'watch-stdin': { type: 'boolean', default: false },
    },
    strict: true,
  });
  const whole = (name) => {
    const n = Number(values[name]);
    if (!Number.isInteger(n)) throw new Error(`--${name} must be a whole number, got ${values[name]}`);
    return n;
  };
  const positive = (name) => {
    const n = whole(name);
    if (n < 1) throw new Error(`--${name} must be at least 1 (oidc-provider refuses 0), got ${n}`);
    return n;
  };
  return {
    port: whole('port'),
    host: values['issuer-host'],
    clientId: values['client-id'],
    clientSecret: values['client-secret'],
    redirectUris: values['redirect-uri'],
    secondClientId: values['second-client-id'],
    secondClientSecret: values['second-client-secret'],
    idTokenTtl: positive('id-token-ttl'),
    watchStdin: values['watch-stdin'],
  };
}

async function main() {
  // oidc-provider prints its notices with console.info, i.e. on stdout; stdout carries exactly one
  // JSON line here, so everything the library says goes to stderr.
  console.log = console.error;
  console.info = console.error;

  let options;
  try {
    options = parseCli(process.argv.slice(2));
    if (!options.clientId || !options.clientSecret || !options.redirectUris?.length) {
      throw new Error('--client-id, --client-secret and at least one --redirect-uri are required');
    }
  } catch (err) {
    process.stderr.write(`op.mjs: ${err.message}\n`);
    process.exit(2);
  }

  const op = await startProvider(options);
  const stop = async (why) => {
    process.stderr.write(`[op] stopping (${why})\n`);
    await op.close();
    process.exit(0);
  };
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));
  if (options.watchStdin) {
    process.stdin.on('end', () => stop('stdin closed'));
    process.stdin.resume();
  }
  process.stdout.write(`${JSON.stringify({ issuer: op.issuer, port: op.port })}\n`);
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  main().catch((err) => {
    process.stderr.write(`op.mjs: ${err.stack ?? err}\n`);
    process.exit(1);
  });
}
