// Child process of google-auth.iam.mjs: runs one scenario of the real npm google-auth-library
// (and the gcp-metadata it bundles) against a Gatehouse IAM server and prints the results as
// one JSON line on stdout. Argument: JSON {"scenario": "mds" | "keyfile" | "jwk", ...}.
//
// It runs in its own process because gcp-metadata reads GCE_METADATA_HOST / GCE_METADATA_IP /
// METADATA_SERVER_DETECTION from the environment and memoizes isAvailable(), GoogleAuth caches
// the credential it found, and the "jwk" scenario makes the library take its browser path
// (see below); the test process itself never changes its own environment.
//
// Each step's failure is reported as {"error", "message", "stack"} so that one failing step
// does not hide the others; the test asserts on the results.

import {
  Compute,
  GoogleAuth,
  IdTokenClient,
  JWT,
  OAuth2Client,
  gcpMetadata,
} from 'google-auth-library';

const args = JSON.parse(process.argv[2] ?? '{}');
const out = { scenario: args.scenario };

async function step(name, fn) {
  try {
    out[name] = { ok: await fn() };
  } catch (err) {
    out[name] = {
      error: err?.name ?? typeof err,
      message: String(err?.message ?? err),
      status: err?.response?.status,
      body: typeof err?.response?.data === 'string'
        ? err.response.data.slice(0, 500)
        : err?.response?.data,
      stack: String(err?.stack ?? '').split('\n').slice(0, 8).join('\n'),
    };
  }
  return out[name].ok;
}

/** An OAuth2Client whose certificate URLs (PEM and JWK) are the server's. */
function verifier() {
  return new OAuth2Client({
    endpoints: {
      oauth2FederatedSignonPemCertsUrl: args.pemCertsUrl,
      oauth2FederatedSignonJwkCertsUrl: args.jwkCertsUrl,
    },
  });
}

/** Verifies `idToken` for `audience` (and for a wrong audience, and tampered) with `client`. */
async function verifyAll(prefix, client, idToken, audience) {
  await step(`${prefix}Verify`, async () => {
    const ticket = await client.verifyIdToken({ idToken, audience });
    return { payload: ticket.getPayload(), envelope: ticket.getEnvelope() };
  });
  await step(`${prefix}WrongAudience`, async () => {
    await client.verifyIdToken({ idToken, audience: args.wrongAudience });
    return 'accepted';
  });
  await step(`${prefix}Tampered`, async () => {
    const [h, p, s] = idToken.split('.');
    const claims = JSON.parse(Buffer.from(p, 'base64url').toString('utf8'));
    claims.email = 'intruder@demo-proj.iam.gserviceaccount.com';
    const forged = `${h}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.${s}`;
    await client.verifyIdToken({ idToken: forged, audience });
    return 'accepted';
  });
}

// ------------------------------------------------------------------ metadata server (GCE)

async function mds() {
  await step('isAvailable', () => gcpMetadata.isAvailable());
  const auth = new GoogleAuth();
  let compute;
  await step('getClient', async () => {
    compute = await auth.getClient();
    return { constructor: compute.constructor.name, isCompute: compute instanceof Compute };
  });
  await step('getProjectId', () => auth.getProjectId());
  await step('getCredentials', async () => (await auth.getCredentials()).client_email ?? null);
  await step('getAccessToken', () => auth.getAccessToken());
  if (compute) {
    await step('clientAccessToken', async () => {
      const r = await compute.getAccessToken();
      return { token: r.token, expiry_date: compute.credentials.expiry_date };
    });
  }
  let idc;
  await step('getIdTokenClient', async () => {
    idc = await auth.getIdTokenClient(args.audience);
    return {
      isIdTokenClient: idc instanceof IdTokenClient,
      providerIsCompute: idc.idTokenProvider instanceof Compute,
    };
  });
  if (idc) {
    const idToken = await step('fetchIdToken', () => idc.idTokenProvider.fetchIdToken(args.audience));
    await step('idTokenHeaders', async () => {
      const headers = await idc.getRequestHeaders();
      return headers.get('authorization');
    });
    if (idToken) await verifyAll('pem', verifier(), idToken, args.audience);
  }
}

// ------------------------------------------------------------------ key file

const GOOGLE_TOKEN_URL = 'https://oauth2.googleapis.com/token';

/**
 * google-auth-library sends the JWT-bearer grant to a fixed URL (its bundled gtoken has no
 * token URL option and ignores the key file's token_uri). The only public hook is the
 * client's gaxios transporter: route that one URL to the key file's token_uri, record what
 * the library asked for, and refuse anything that would leave the loopback interface.
 */
function routeTokenEndpoint(client, tokenUri, seen) {
  client.transporter.interceptors.request.add({
    resolved: async (config) => {
      const requested = config.url.toString();
      if (requested === GOOGLE_TOKEN_URL) config.url = new URL(tokenUri);
      const sent = config.url.toString();
      seen.push({ method: config.method ?? 'GET', requested, sent });
      const host = new URL(sent).hostname;
      if (host !== '127.0.0.1' && host !== 'localhost') {
        throw new Error(`refusing to send a request off the loopback interface: ${requested}`);
      }
      return config;
    },
  });
}

async function keyfile() {
  const seen = [];
  out.requests = seen;
  const jwt = new JWT({ keyFile: args.keyFile, scopes: args.scopes });
  routeTokenEndpoint(jwt, args.tokenUri, seen);
  await step('authorize', async () => {
    const t = await jwt.authorize();
    return { access_token: t.access_token, token_type: t.token_type, expiry_date: t.expiry_date };
  });
  await step('apiRequest', async () => {
    const res = await jwt.request({
      url: args.testPermissionsUrl,
      method: 'POST',
      data: { permissions: args.permissions },
    });
    return { status: res.status, data: res.data };
  });
  await step('jwtFetchIdToken', () => jwt.fetchIdToken(args.audience));

  const auth = new GoogleAuth({ keyFile: args.keyFile });
  let idClient;
  await step('getIdTokenClient', async () => {
    const client = await auth.getClient(); // the JWT that getIdTokenClient wraps
    routeTokenEndpoint(client, args.tokenUri, seen);
    idClient = await auth.getIdTokenClient(args.audience);
    return {
      isIdTokenClient: idClient instanceof IdTokenClient,
      providerIsJWT: idClient.idTokenProvider instanceof JWT,
      sameClient: idClient.idTokenProvider === client,
    };
  });
  if (idClient) {
    const idToken = await step('fetchIdToken', () => idClient.idTokenProvider.fetchIdToken(args.audience));
    if (idToken) await verifyAll('pem', verifier(), idToken, args.audience);
  }
  if (out.jwtFetchIdToken?.ok) await verifyAll('jwtPem', verifier(), out.jwtFetchIdToken.ok, args.audience);
}

// ------------------------------------------------------------------ JWK certificates

/**
 * OAuth2Client picks the certificate format itself: JWK (oauth2FederatedSignonJwkCertsUrl) and
 * WebCrypto verification when `window.crypto.subtle` exists, as in a browser; PEM and
 * node:crypto otherwise. There is no option to choose, so this process looks like a browser
 * (`window` is the global object, with WebCrypto and fetch, which gaxios then uses) to take the
 * library's JWK path.
 */
async function jwk() {
  globalThis.window = globalThis;
  const client = verifier();
  await step('certs', async () => {
    const r = await client.getFederatedSignonCertsAsync();
    return { format: r.format, kids: Object.keys(r.certs), url: r.res?.config?.url?.toString() };
  });
  for (const [i, idToken] of args.idTokens.entries()) {
    await verifyAll(`jwk${i}`, client, idToken, args.audience);
  }
}

const scenarios = { mds, keyfile, jwk };
if (!scenarios[args.scenario]) {
  console.error(`unknown scenario ${JSON.stringify(args.scenario)}`);
  process.exit(2);
}
await scenarios[args.scenario]();
process.stdout.write(`${JSON.stringify(out)}\n`);
