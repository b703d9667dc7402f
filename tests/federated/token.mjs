// Obtains an ID token from the upstream provider (op.mjs) without a browser: it drives the
// authorization code flow with PKCE over plain HTTP with a cookie jar, fills the development login
// form, confirms consent, catches the redirect to redirect_uri without following it (nothing need
// listen there), and exchanges the code at the token endpoint.
//
// Module: `getToken(options)`, `authorize(options)`, `exchangeCode(options)`, `discover(issuer)`.
// CLI:    node token.mjs --issuer URL --client-id ID --client-secret S --redirect-uri URI --login NAME
//                        [--nonce N | --no-nonce] [--no-exchange] [--auth-method client_secret_post]
//         prints one JSON object on stdout.
import { createHash, randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';
import { pathToFileURL } from 'node:url';

/** An OAuth error returned by the provider, at the authorization or the token endpoint. */
export class OAuthError extends Error {
  constructor(where, status, body) {
    super(`${where}: ${body.error}${body.error_description ? `: ${body.error_description}` : ''}`);
    this.name = 'OAuthError';
    this.where = where;
    this.status = status;
    this.body = body;
  }
}

const random = () => randomBytes(16).toString('base64url');

/** A minimal cookie jar: name, value and path, for one origin (the provider's). */
class CookieJar {
  #cookies = new Map();

  store(response) {
    for (const line of response.headers.getSetCookie()) {
      const [pair, ...attributes] = line.split(';').map((s) => s.trim());
      const eq = pair.indexOf('=');
      const name = pair.slice(0, eq);
      const value = pair.slice(eq + 1);
      let path = '/';
      let expired = value === '';
      for (const attribute of attributes) {
        const [key, val = ''] = attribute.split('=');
        if (key.toLowerCase() === 'path') path = val;
        if (key.toLowerCase() === 'expires' && Date.parse(val) <= Date.now()) expired = true;
        if (key.toLowerCase() === 'max-age' && Number(val) <= 0) expired = true;
      }
      const key = `${name};${path}`;
      if (expired) this.#cookies.delete(key);
      else this.#cookies.set(key, { name, value, path });
    }
  }

  header(url) {
    const { pathname } = new URL(url);
    return [...this.#cookies.values()]
      .filter(({ path }) => pathname === path || pathname.startsWith(path.endsWith('/') ? path : `${path}/`))
      .map(({ name, value }) => `${name}=${value}`)
      .join('; ');
  }
}

const discoveryCache = new Map();

/** The provider's discovery document. */
export async function discover(issuer) {
  if (!discoveryCache.has(issuer)) {
    const res = await fetch(new URL('/.well-known/openid-configuration', issuer));
    if (!res.ok) throw new Error(`discovery at ${issuer} answered ${res.status}`);
    discoveryCache.set(issuer, await res.json());
  }
  return discoveryCache.get(issuer);
}

const unescapeHtml = (s) => s
  .replace(/&#x([0-9a-f]+);/gi, (_, h) => String.fromCodePoint(parseInt(h, 16)))
  .replace(/&#(\d+);/g, (_, d) => String.fromCodePoint(Number(d)))
  .replace(/&quot;/g, '"').replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&amp;/g, '&');

/** The interaction form of a development login or consent page: its action and prompt. */
function interactionForm(html) {
  const action = /<form[^>]*\baction="([^"]*)"/.exec(html)?.[1];
  const prompt = /<input[^>]*name="prompt"[^>]*value="([^"]*)"/.exec(html)?.[1];
  if (!action || !prompt) return undefined;
  return { action: unescapeHtml(action), prompt };
}

/** The error object from the provider's error page (op.mjs renders it into #op-error). */
function errorPage(html) {
  const json = /<pre id="op-error">([^<]*)<\/pre>/.exec(html)?.[1];
  return json ? JSON.parse(unescapeHtml(json)) : undefined;
}

const sameEndpoint = (a, b) => a.origin === b.origin && a.pathname === b.pathname;

/**
 * Runs the front-channel part of the flow and returns what reached redirect_uri:
 * { code, state, iss, codeVerifier, nonce, redirectUri }.
 * Options: issuer, clientId, redirectUri, login, nonce (undefined = random, null = none sent),
 * state (default random), scope (default 'openid email profile'), pkce (default true; false sends
 * no code_challenge, to see the provider refuse it), extraParams (object added to the request),
 * onPage ({ prompt, html, url } => void, called with each login/consent page before it is submitted).
 * Throws OAuthError('authorization', ...) when the provider answers with an error, whether on its
 * own error page (e.g. an unregistered redirect_uri) or through the redirect (e.g. missing PKCE).
 */
export async function authorize({
  issuer,
  clientId,
  redirectUri,
  login,
  nonce,
  state = random(),
  scope = 'openid email profile',
  pkce = true,
  extraParams = {},
  onPage,
}) {
  if (!issuer || !clientId || !redirectUri || !login) {
    throw new Error('authorize needs issuer, clientId, redirectUri and login');
  }
  const meta = await discover(issuer);
  const codeVerifier = pkce ? randomBytes(32).toString('base64url') : undefined;
  const usedNonce = nonce === undefined ? random() : nonce;

  const url = new URL(meta.authorization_endpoint);
  const params = {
    client_id: clientId,
    redirect_uri: redirectUri,
    response_type: 'code',
    scope,
    state,
    ...(usedNonce !== null && { nonce: usedNonce }),
    ...(pkce && {
      code_challenge: createHash('sha256').update(codeVerifier).digest('base64url'),
      code_challenge_method: 'S256',
    }),
    ...extraParams,
  };
  for (const [k, v] of Object.entries(params)) url.searchParams.set(k, v);

  const jar = new CookieJar();
  const target = new URL(redirectUri);
  let request = { url: url.href, method: 'GET' };

  for (let step = 0; step < 12; step += 1) {
    const res = await fetch(request.url, {
      method: request.method,
      redirect: 'manual',
      headers: {
        cookie: jar.header(request.url),
        ...(request.body && { 'content-type': 'application/x-www-form-urlencoded' }),
      },
      body: request.body,
    });
    jar.store(res);

    if (res.status >= 300 && res.status < 400) {
      const next = new URL(res.headers.get('location'), request.url);
      await res.arrayBuffer();
      if (sameEndpoint(next, target)) {
        const got = Object.fromEntries(next.searchParams);
        if (got.error) throw new OAuthError('authorization', res.status, got);
        if (got.state !== state) throw new Error(`state mismatch: sent ${state}, got ${got.state}`);
        if (got.iss !== undefined && got.iss !== meta.issuer) {
          throw new Error(`iss mismatch in the authorization response: ${got.iss}`);
        }
        return { code: got.code, state: got.state, iss: got.iss, codeVerifier, nonce: usedNonce ?? undefined, redirectUri };
      }
      if (next.origin !== new URL(meta.issuer).origin) {
        throw new Error(`the provider redirected outside itself and redirect_uri: ${next.origin}${next.pathname}`);
      }
      request = { url: next.href, method: 'GET' };
      continue;
    }

    const html = await res.text();
    const error = errorPage(html);
    if (error) throw new OAuthError('authorization', res.status, error);
    const form = res.ok ? interactionForm(html) : undefined;
    if (!form) throw new Error(`unexpected ${res.status} page at ${new URL(request.url).pathname}: ${html.slice(0, 300)}`);
    onPage?.({ prompt: form.prompt, html, url: request.url });
    const fields = form.prompt === 'login'
      ? { prompt: 'login', login, password: 'any' }
      : { prompt: form.prompt };
    request = {
      url: new URL(form.action, request.url).href,
      method: 'POST',
      body: new URLSearchParams(fields).toString(),
    };
  }
  throw new Error('the authorization flow did not reach redirect_uri within 12 steps');
}

/**
 * Exchanges a code at the token endpoint; resolves to the token response.
 * Options: issuer, clientId, clientSecret, redirectUri, code, codeVerifier,
 * authMethod ('client_secret_basic' default, or 'client_secret_post').
 * Throws OAuthError('token', status, body) with the provider's JSON error body.
 */
export async function exchangeCode({
  issuer, clientId, clientSecret, redirectUri, code, codeVerifier, authMethod = 'client_secret_basic',
}) {
  const meta = await discover(issuer);
  const form = new URLSearchParams({ grant_type: 'authorization_code', code });
  if (redirectUri !== undefined) form.set('redirect_uri', redirectUri);
  if (codeVerifier !== undefined) form.set('code_verifier', codeVerifier);
  const headers = { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' };
  if (authMethod === 'client_secret_basic') {
    // RFC 6749 2.3.1: id and secret are form-urlencoded before base64; oidc-provider decodes them so.
    const enc = (s) => encodeURIComponent(s).replace(/%20/g, '+');
    headers.authorization = `Basic ${Buffer.from(`${enc(clientId)}:${enc(clientSecret)}`).toString('base64')}`;
  } else if (authMethod === 'client_secret_post') {
    form.set('client_id', clientId);
    form.set('client_secret', clientSecret);
  } else {
    throw new Error(`unknown authMethod ${authMethod}`);
  }
  const res = await fetch(meta.token_endpoint, { method: 'POST', headers, body: form.toString() });
  const body = await res.json();
  if (!res.ok) throw new OAuthError('token', res.status, body);
  return body;
}

/** The payload of a JWT, NOT verified: for reading what a test is about to send. */
export function decodeJwt(jwt) {
  return JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url').toString('utf8'));
}

/**
 * Signs `login` in at the provider and returns
 * { id_token, access_token, token_type, expires_in, scope, claims, code, state, nonce, codeVerifier }
 * (`claims` is the ID token's payload, decoded, not verified), or with exchange: false only
 * { code, state, iss, nonce, codeVerifier, redirectUri } for a test that hands the code on.
 */
export async function getToken({ exchange = true, clientSecret, authMethod, ...options }) {
  const front = await authorize(options);
  if (!exchange) return front;
  const tokens = await exchangeCode({
    issuer: options.issuer,
    clientId: options.clientId,
    clientSecret,
    redirectUri: options.redirectUri,
    code: front.code,
    codeVerifier: front.codeVerifier,
    authMethod,
  });
  return {
    ...tokens,
    claims: decodeJwt(tokens.id_token),
    code: front.code,
    state: front.state,
    nonce: front.nonce,
    codeVerifier: front.codeVerifier,
  };
}

async function main() {
  const { values } = parseArgs({
    options: {
      issuer: { type: 'string' },
      'client-id': { type: 'string' },
      'client-secret': { type: 'string' },
      'redirect-uri': { type: 'string' },
      login: { type: 'string' },
      nonce: { type: 'string' },
      'no-nonce': { type: 'boolean', default: false },
      'no-exchange': { type: 'boolean', default: false },
      'auth-method': { type: 'string', default: 'client_secret_basic' },
    },
    strict: true,
  });
  const required = ['issuer', 'client-id', 'redirect-uri', 'login'];
  if (!values['no-exchange']) required.push('client-secret');
  const missing = required.filter((k) => !values[k]);
  if (missing.length) {
    process.stderr.write(`token.mjs: missing ${missing.map((k) => `--${k}`).join(', ')}\n`);
    process.exit(2);
  }
  const result = await getToken({
    issuer: values.issuer,
    clientId: values['client-id'],
    clientSecret: values['client-secret'],
    redirectUri: values['redirect-uri'],
    login: values.login,
    nonce: values['no-nonce'] ? null : values.nonce,
    exchange: !values['no-exchange'],
    authMethod: values['auth-method'],
  });
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  main().catch((err) => {
    process.stderr.write(`token.mjs: ${err.message}\n`);
    if (err instanceof OAuthError) process.stdout.write(`${JSON.stringify({ error: err.body, status: err.status, where: err.where })}\n`);
    process.exit(1);
  });
}
