// Browser end-to-end test of the CATS v DOGS page with the Gatehouse hosted sign-in page.
//
//   VOTE_URL=http://127.0.0.1:8080/ node tests/browser/vote.e2e.mjs
//
// Env: VOTE_URL (required), CHROMIUM (default /usr/bin/chromium), ARTIFACTS (screenshots,
// default target/browser-artifacts). Exits 0 when every scenario passes, 1 otherwise.
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { chromium } from 'playwright-core';

const VOTE_URL = process.env.VOTE_URL;
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const ARTIFACTS = process.env.ARTIFACTS || 'target/browser-artifacts';
const TIMEOUT_MS = 15_000;

class Failure extends Error {}

function check(condition, message) {
  if (!condition) throw new Failure(message);
}

// Waits until fn(arg) is truthy in the page; fails with `message` and fn's last value otherwise.
async function waitUntil(page, message, fn, arg) {
  try {
    await page.waitForFunction(fn, arg, { timeout: TIMEOUT_MS });
  } catch (err) {
    if (!/Timeout/.test(err.message)) throw err;
    const status = await page.textContent('#status').catch(() => null);
    throw new Failure(`${message} (after ${TIMEOUT_MS} ms; #status: ${JSON.stringify(status)})`);
  }
}

const buttonSays = (page, text) =>
  waitUntil(page, `#signInButton never said "${text}"`, (t) => document.querySelector('#signInButton')?.textContent.trim() === t, text);

async function count(page, team) {
  const id = team === 'CATS' ? '#catsCard h3' : '#dogsCard h3';
  const text = await page.textContent(id);
  const match = /^\s*(\d+) votes?\s*$/.exec(text ?? '');
  check(match, `${id} should read "N votes", got ${JSON.stringify(text)}`);
  return Number(match[1]);
}

// Clicks a vote button and waits for the server's answer in #status.
async function castVote(page, team) {
  const before = await count(page, team);
  await page.evaluate(() => { document.querySelector('#status').textContent = ''; });
  await page.click(team === 'CATS' ? '#voteCats' : '#voteDogs');
  await waitUntil(
    page,
    `no vote result shown after voting ${team}`,
    () => /Successfully voted|Vote failed|went wrong/.test(document.querySelector('#status')?.textContent ?? ''),
  );
  const status = (await page.textContent('#status')).trim();
  check(status.startsWith(`Successfully voted for ${team} at`), `vote for ${team} failed: ${status}`);
  await waitUntil(
    page,
    `${team} count did not change after a successful vote`,
    ([id, n]) => !document.querySelector(id)?.textContent.includes(`${n} vote`),
    [team === 'CATS' ? '#catsCard h3' : '#dogsCard h3', before],
  );
  const after = await count(page, team);
  check(after === before + 1, `${team} count went from ${before} to ${after}, expected ${before + 1}`);
  return { before, after, status };
}

// Waits for the popup to close, failing early with the sign-in page's error if it shows one.
async function popupCloses(popup) {
  const error = popup
    .waitForSelector('#error', { state: 'visible', timeout: TIMEOUT_MS })
    .then(async () => {
      throw new Failure(`the sign-in popup showed an error: ${await popup.textContent('#error')}`);
    });
  error.catch(() => {}); // loses the race when the popup closes
  await Promise.race([popup.waitForEvent('close', { timeout: TIMEOUT_MS }), error]);
}

async function screenshot(page, name) {
  const file = path.join(ARTIFACTS, name);
  await page.screenshot({ path: file, fullPage: true });
  return file;
}

function newAccount() {
  const tag = `${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
  return { email: `e2e-${tag}@example.com`, password: `pw-${tag}`, name: `E2E ${tag}` };
}

async function openVotePage(browser) {
  const context = await browser.newContext();
  context.setDefaultTimeout(TIMEOUT_MS);
  const page = await context.newPage();
  page.on('pageerror', (err) => console.error(`  [page error] ${err.message}`));
  page.on('console', (msg) => {
    if (msg.type() === 'error') console.error(`  [console] ${msg.text()} (${msg.location().url})`);
  });
  const response = await page.goto(VOTE_URL);
  check(response?.ok(), `GET ${VOTE_URL} answered ${response?.status()}`);
  return { context, page };
}

// A: sign up in the popup, vote CATS, sign out.
async function popupScenario(browser, account) {
  const { context, page } = await openVotePage(browser);
  await buttonSays(page, 'Sign In');
  const cats = await count(page, 'CATS');

  const [popup] = await Promise.all([page.waitForEvent('popup'), page.click('#signInButton')]);
  await popup.waitForSelector('#show-signup');
  await popup.click('#show-signup');
  await popup.fill('#signup-email', account.email);
  await popup.fill('#signup-password', account.password);
  await popup.fill('#signup-name', account.name);
  await Promise.all([popupCloses(popup), popup.click('#signup-submit')]);

  await buttonSays(page, 'Sign Out');
  check(await page.isVisible('#form'), '#form should be visible once signed in');
  const welcome = await page.textContent('#status');
  check(welcome.includes(`Welcome ${account.name}!`), `expected a welcome for ${account.name}, got ${JSON.stringify(welcome)}`);

  const { after } = await castVote(page, 'CATS');
  check(after === cats + 1, `CATS went from ${cats} (page load) to ${after}`);
  const latest = await page.textContent('#recentVotes li:first-child');
  check(latest?.includes('CATS'), `the newest recent vote should be CATS, got ${JSON.stringify(latest)}`);
  const shot = await screenshot(page, 'vote.png');

  await page.click('#signInButton');
  await buttonSays(page, 'Sign In');
  check(await page.isHidden('#form'), '#form should be hidden after sign-out');
  await context.close();
  return `signed up ${account.email} in the popup, CATS ${cats} → ${after}, signed out (${shot})`;
}

// B: redirect sign-in with the same account, persistence across a reload, vote DOGS.
async function redirectScenario(browser, account) {
  const { context, page } = await openVotePage(browser);
  await buttonSays(page, 'Sign In');
  const start = new URL(page.url());

  await page.evaluate(() => {
    window.auth.signInWithRedirect();
  });
  await page.waitForURL((url) => url.pathname.endsWith('/__/auth/signin'));
  const signin = new URL(page.url());
  check(signin.searchParams.get('mode') === 'redirect', `expected mode=redirect in ${signin}`);
  await page.fill('#signin-email', account.email);
  await page.fill('#signin-password', account.password);
  await page.click('#signin-submit');
  await Promise.race([
    page.waitForURL((url) => url.origin === start.origin && url.pathname === start.pathname),
    page.waitForSelector('#error', { state: 'visible' }).then(async () => {
      throw new Failure(`the sign-in page showed an error: ${await page.textContent('#error')}`);
    }),
  ]);
  await buttonSays(page, 'Sign Out');
  check(!page.url().includes('#'), `the redirect result should be removed from the URL: ${page.url()}`);
  const email = await page.evaluate(async () => (await window.auth.getRedirectResult())?.user.email);
  check(email === account.email, `getRedirectResult() returned ${email}, expected ${account.email}`);

  await page.reload();
  await buttonSays(page, 'Sign Out');
  const { before, after } = await castVote(page, 'DOGS');
  const shot = await screenshot(page, 'vote-redirect.png');
  return { context, page, summary: `signed in by redirect, still signed in after reload, DOGS ${before} → ${after} (${shot})` };
}

// C: a forced refresh yields a new ID token that the server accepts.
async function refreshScenario(page) {
  const refreshes = [];
  page.on('request', (req) => {
    if (req.url().includes('/securetoken.googleapis.com/v1/token')) refreshes.push(req);
  });
  const old = await page.evaluate(() => window.auth.currentUser.getIdToken());
  await page.waitForTimeout(1100); // tokens carry iat in whole seconds
  const [fresh, again] = await page.evaluate(async () => {
    const user = window.auth.currentUser;
    const token = await user.getIdToken(true);
    return [token, await user.getIdToken()];
  });
  check(refreshes.length === 1, `expected one call to the token endpoint, saw ${refreshes.length}`);
  check(fresh && fresh !== old, 'getIdToken(true) returned the same token');
  check(again === fresh, 'getIdToken() after a refresh should return the new cached token');

  const { status, body } = await page.evaluate(async (token) => {
    const response = await fetch('/', {
      method: 'POST',
      headers: { 'Content-Type': 'application/x-www-form-urlencoded', Authorization: `Bearer ${token}` },
      body: 'team=CATS',
    });
    return { status: response.status, body: await response.text() };
  }, fresh);
  check(status === 200 && body.startsWith('Successfully voted for CATS at'), `vote with the refreshed token: ${status} ${body}`);
  return 'getIdToken(true) fetched a new token and the server accepted it';
}

// The hosted page refuses to hand a sign-in to an origin outside the authorized domains, and
// says so on the page.
async function unauthorizedDomainScenario(page) {
  const config = await page.evaluate(() => config); // a top-level const of /config.js
  const url = new URL('/__/auth/signin', config.authUrl);
  url.searchParams.set('apiKey', config.apiKey);
  url.searchParams.set('mode', 'popup');
  url.searchParams.set('origin', 'https://evil.example');
  const res = await page.goto(url.href);
  check(res.status() === 403, `expected 403 for an unlisted origin, got ${res.status()}`);
  const error = page.locator('#error');
  await error.waitFor({ state: 'visible', timeout: TIMEOUT_MS });
  const text = await error.textContent();
  check(/evil\.example/.test(text) && /not authorized/.test(text), `unexpected error text: ${text}`);
  check(await page.locator('#signin-form').isHidden(), 'the sign-in form must not be offered');
  const shot = await screenshot(page, 'unauthorized-domain.png');
  return `refused with a visible error: "${text.trim()}" (${shot})`;
}

// E (when OIDC_PROVIDER_ID is set): the provider's button on the hosted page, sign-in at the
// upstream OpenID provider (oidc-provider's login and consent pages), back signed in with that
// provider as firebase.sign_in_provider; then a vote.
async function federatedScenario(browser) {
  const providerId = process.env.OIDC_PROVIDER_ID;
  const login = `fed-${Date.now().toString(36)}`;
  const { context, page } = await openVotePage(browser);
  await buttonSays(page, 'Sign In');
  const [popup] = await Promise.all([page.waitForEvent('popup'), page.click('#signInButton')]);
  const button = popup.locator(`button.provider[data-provider-id="${providerId}"]`);
  await button.waitFor({ timeout: TIMEOUT_MS });
  await button.click();
  await popup.waitForSelector('input[name="login"]', { timeout: TIMEOUT_MS });
  await popup.fill('input[name="login"]', login);
  await popup.fill('input[name="password"]', 'any-password');
  await popup.click('button[type="submit"]');
  await popup.waitForSelector('button[type="submit"]:has-text("Continue")', { timeout: TIMEOUT_MS });
  await Promise.all([popupCloses(popup), popup.click('button[type="submit"]:has-text("Continue")')]);
  await buttonSays(page, 'Sign Out');
  const who = await page.evaluate(async () => {
    const token = await window.auth.currentUser.getIdToken();
    const claims = JSON.parse(atob(token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/')));
    return { provider: claims.firebase.sign_in_provider, email: claims.email, providerId: window.auth.currentUser.providerId };
  });
  check(who.provider === providerId, `sign_in_provider is ${who.provider}, expected ${providerId}`);
  check(who.email === `${login}@upstream.example`, `email is ${who.email}`);
  const { before, after } = await castVote(page, 'DOGS');
  check(after === before + 1, `DOGS went from ${before} to ${after}`);
  const shot = await screenshot(page, 'vote-federated.png');
  await context.close();
  return `signed in at the upstream as ${login}, sign_in_provider ${who.provider}, DOGS ${before} → ${after} (${shot})`;
}

async function main() {
  if (!VOTE_URL) {
    console.error('VOTE_URL is required, e.g. VOTE_URL=http://127.0.0.1:8080/');
    return 1;
  }
  await mkdir(ARTIFACTS, { recursive: true });
  let browser;
  try {
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
  } catch (err) {
    console.error(`cannot start Chromium at ${CHROMIUM} (apt-get install -y chromium): ${err.message}`);
    return 1;
  }
  const account = newAccount();
  let current = 'A';
  let page;
  try {
    console.log(`PASS A (popup sign-up + vote): ${await popupScenario(browser, account)}`);
    current = 'B';
    const redirect = await redirectScenario(browser, account);
    page = redirect.page;
    console.log(`PASS B (redirect + persistence): ${redirect.summary}`);
    current = 'C';
    console.log(`PASS C (token refresh): ${await refreshScenario(page)}`);
    current = 'D';
    console.log(`PASS D (unauthorized domain): ${await unauthorizedDomainScenario(page)}`);
    if (process.env.OIDC_PROVIDER_ID) {
      current = 'E';
      console.log(`PASS E (federated sign-in): ${await federatedScenario(browser)}`);
    }
    return 0;
  } catch (err) {
    console.error(`FAIL ${current}: ${err instanceof Failure ? err.message : err.stack}`);
    for (const context of browser.contexts()) {
      for (const [i, p] of context.pages().entries()) {
        const file = await screenshot(p, `failure-${current}-${i}.png`).catch(() => null);
        if (file) console.error(`  screenshot of ${p.url()}: ${file}`);
      }
    }
    return 1;
  } finally {
    await browser.close();
  }
}

process.exitCode = await main();
