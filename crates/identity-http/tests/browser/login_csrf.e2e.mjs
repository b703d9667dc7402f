// Login CSRF against the hosted-page client (/__/auth/client.js), in Chromium.
//
// An attacker who signs in to their own account can plant its tokens in a link to the app
// (`#__gatehouse_auth=...`); a victim who opens it must not end up signed in as the attacker
// (whatever the victim then saves lands in the attacker's account). The client accepts a
// redirect result only with the nonce of a redirect it started itself, once.
//
// Env: APP_URL (a page that loads client.js as window.auth), ATTACKER_RESULT (JSON: the
// attacker's sign-in result), VICTIM_EMAIL, VICTIM_PASSWORD, PLAYWRIGHT_CORE (the
// playwright-core directory), CHROMIUM. Prints PASS lines; exits 1 on the first failure.
import { createRequire } from 'node:module';

const { chromium } = createRequire(import.meta.url)(process.env.PLAYWRIGHT_CORE);
const APP_URL = process.env.APP_URL;
const ATTACKER = JSON.parse(process.env.ATTACKER_RESULT);
const VICTIM = { email: process.env.VICTIM_EMAIL, password: process.env.VICTIM_PASSWORD };
const TIMEOUT_MS = 15_000;
const HASH = '#__gatehouse_auth=';

class Failure extends Error {}
function check(condition, message) {
  if (!condition) throw new Failure(message);
}

// The app's sign-in state once the client has handled whatever the URL carried.
async function state(page) {
  await page.waitForFunction(() => window.auth, null, { timeout: TIMEOUT_MS });
  return page.evaluate(async () => {
    let result = null;
    let error = null;
    try {
      result = (await window.auth.getRedirectResult())?.user?.email ?? null;
    } catch (err) {
      error = err.code || err.message;
    }
    return {
      result,
      error,
      current: window.auth.currentUser?.email ?? null,
      stored: Object.keys(localStorage).filter((k) => k.startsWith('gatehouse:authUser:')).length,
      hash: location.hash,
    };
  });
}

async function forgedLinks(browser) {
  const forged = [
    // The result alone, as the hosted page delivered it before nonces.
    encodeURIComponent(JSON.stringify(ATTACKER)),
    // With a made-up nonce: this tab started no redirect.
    encodeURIComponent(JSON.stringify({ nonce: 'AAAAAAAAAAAAAAAAAAAAAA', result: ATTACKER })),
    // Garbage.
    '%7B',
  ];
  for (const fragment of forged) {
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(`${APP_URL}${HASH}${fragment}`);
    const s = await state(page);
    check(s.current === null && s.result === null, `a forged link signed the victim in: ${JSON.stringify(s)}`);
    check(s.stored === 0, `a forged link persisted a session: ${JSON.stringify(s)}`);
    check(s.hash === '', `the fragment should be stripped: ${JSON.stringify(s)}`);
    await context.close();
  }
  return `${forged.length} forged links ignored and stripped`;
}

async function genuineRedirect(browser) {
  const context = await browser.newContext();
  const page = await context.newPage();
  let delivered = null;
  page.on('framenavigated', (frame) => {
    if (frame === page.mainFrame() && frame.url().includes(HASH)) delivered = frame.url();
  });
  await page.goto(APP_URL);
  await page.waitForFunction(() => window.auth, null, { timeout: TIMEOUT_MS });
  await page.evaluate(() => {
    window.auth.signInWithRedirect();
  });
  await page.waitForURL((url) => url.pathname.endsWith('/__/auth/signin'), { timeout: TIMEOUT_MS });
  const signin = new URL(page.url());
  check((signin.searchParams.get('nonce') ?? '').length >= 16, `the redirect carries no nonce: ${signin}`);
  await page.fill('#signin-email', VICTIM.email);
  await page.fill('#signin-password', VICTIM.password);
  await page.click('#signin-submit');
  await page.waitForURL((url) => url.href.startsWith(APP_URL), { timeout: TIMEOUT_MS });
  const s = await state(page);
  check(s.result === VICTIM.email && s.current === VICTIM.email, `the genuine redirect failed: ${JSON.stringify(s)}`);
  check(s.hash === '', `the fragment should be stripped: ${JSON.stringify(s)}`);
  const left = await page.evaluate(() => Object.keys(sessionStorage).filter((k) => k.startsWith('gatehouse:')));
  check(left.length === 0, `the nonce should be used up: ${left}`);

  // The same delivered URL again (e.g. from history or a leaked link): the nonce is spent.
  check(delivered, 'the delivery URL was not seen');
  await page.evaluate(() => window.auth.signOut());
  await page.goto('about:blank');
  await page.goto(delivered);
  const replay = await state(page);
  check(replay.current === null && replay.result === null, `a replayed result was accepted: ${JSON.stringify(replay)}`);
  await context.close();
  return `signed in as ${VICTIM.email} by redirect; a replay of the delivery ignored`;
}

async function forgedPopupMessage(browser) {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(APP_URL);
  await page.waitForFunction(() => window.auth, null, { timeout: TIMEOUT_MS });
  const popupOpened = context.waitForEvent('page');
  await page.evaluate(() => {
    window.popupOutcome = window.auth.signInWithPopup().then(
      (r) => `signed in as ${r.user.email}`,
      (err) => err.code,
    );
  });
  const popup = await popupOpened;
  // A message of the right shape, but from the app's own window rather than the popup.
  await page.evaluate((result) => {
    window.postMessage({ type: 'gatehouse:auth-result', result }, '*');
  }, ATTACKER);
  await page.waitForTimeout(500);
  const current = await page.evaluate(() => window.auth.currentUser?.email ?? null);
  check(current === null, `a message from outside the popup signed in ${current}`);
  await popup.close();
  const outcome = await page.evaluate(() => window.popupOutcome);
  check(outcome === 'auth/popup-closed-by-user', `the popup sign-in ended with ${outcome}`);
  await context.close();
  return 'a look-alike message from outside the popup ignored';
}

const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || '/usr/bin/chromium' });
try {
  console.log(`PASS forged: ${await forgedLinks(browser)}`);
  console.log(`PASS genuine: ${await genuineRedirect(browser)}`);
  console.log(`PASS popup: ${await forgedPopupMessage(browser)}`);
} catch (err) {
  console.error(err instanceof Failure ? `FAIL: ${err.message}` : err);
  process.exitCode = 1;
} finally {
  await browser.close();
}
