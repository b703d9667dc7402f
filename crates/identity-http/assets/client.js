// Gatehouse browser auth client, served at {authUrl}/__/auth/client.js.
//
// A small, dependency-free stand-in for the Firebase Auth JS SDK: sign-in through the hosted
// page at {authUrl}/__/auth/signin (popup or redirect), persistence in localStorage shared
// across tabs, and ID-token refresh through the Secure Token endpoint.
(() => {
  'use strict';

  const REFRESH_MARGIN_MS = 5 * 60 * 1000; // refresh tokens that expire within 5 minutes
  const REFRESH_RETRY_MS = 30 * 1000; // retry a failed background refresh after this
  const MAX_TIMER_MS = 2 ** 31 - 1;
  const POPUP_POLL_MS = 500;
  const POPUP_CLOSE_GRACE_MS = 1000; // the result may still be in flight when the popup closes
  const MESSAGE_TYPE = 'gatehouse:auth-result';
  const HASH_PREFIX = '#__gatehouse_auth=';
  const NONCE_BYTES = 24;
  const FATAL_REFRESH_ERRORS = {
    TOKEN_EXPIRED: 'auth/user-token-expired',
    USER_DISABLED: 'auth/user-disabled',
    USER_NOT_FOUND: 'auth/user-token-expired',
    INVALID_REFRESH_TOKEN: 'auth/invalid-user-token',
  };

  // Where this script was loaded from: the default authUrl.
  const scriptBase = (() => {
    const src = document.currentScript?.src;
    return src ? src.replace(/\/__\/auth\/client\.js(?:[?#].*)?$/, '') : location.origin;
  })();

  const instances = new Map();

  const authError = (code, message = code) => Object.assign(new Error(message), { code });

  // A fresh random nonce, base64url (32 characters).
  function randomNonce() {
    const bytes = crypto.getRandomValues(new Uint8Array(NONCE_BYTES));
    return btoa(String.fromCharCode(...bytes)).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
  }

  function decodeJwtPayload(jwt) {
    const part = String(jwt).split('.')[1] || '';
    const base64 = part.replace(/-/g, '+').replace(/_/g, '/');
    const binary = atob(base64.padEnd(Math.ceil(base64.length / 4) * 4, '='));
    const bytes = Uint8Array.from(binary, (c) => c.charCodeAt(0));
    return JSON.parse(new TextDecoder().decode(bytes));
  }

  function initialize({ apiKey, authUrl = scriptBase, projectId } = {}) {
    if (!apiKey) throw authError('auth/invalid-api-key', 'GatehouseAuth.initialize needs an apiKey');
    authUrl = new URL(authUrl, location.href).href.replace(/\/+$/, '');
    const id = `${apiKey}@${authUrl}`;
    if (!instances.has(id)) instances.set(id, createAuth(apiKey, authUrl, projectId));
    return instances.get(id);
  }

  function createAuth(apiKey, authUrl, projectId) {
    const authOrigin = new URL(authUrl).origin;
    const storageKey = `gatehouse:authUser:${apiKey}`;
    // The nonce of the redirect sign-in this tab started (sessionStorage: this tab only).
    const nonceKey = `gatehouse:redirectNonce:${apiKey}`;
    const sessions = new WeakMap(); // User -> {tokens, refreshing}
    const listeners = new Set();
    let current = null;
    let timer = null;
    let pendingPopup = null;

    // --- users and tokens -------------------------------------------------------------

    function setTokens(user, tokens) {
      const claims = decodeJwtPayload(tokens.idToken);
      const session = sessions.get(user) || { refreshing: null };
      sessions.set(user, Object.assign(session, { tokens }));
      Object.assign(user, {
        uid: claims.sub,
        email: claims.email ?? null,
        emailVerified: Boolean(claims.email_verified),
        displayName: claims.name ?? null,
        photoURL: claims.picture ?? null,
        providerId: claims.firebase?.sign_in_provider ?? null,
      });
    }

    function makeUser(tokens) {
      const user = { getIdToken: (forceRefresh = false) => getIdToken(user, forceRefresh) };
      Object.defineProperty(user, 'refreshToken', {
        get: () => sessions.get(user).tokens.refreshToken,
        enumerable: true,
      });
      setTokens(user, tokens);
      return user;
    }

    function getIdToken(user, forceRefresh) {
      const session = sessions.get(user);
      if (!forceRefresh && session.tokens.expirationTime - Date.now() > REFRESH_MARGIN_MS) {
        return Promise.resolve(session.tokens.idToken);
      }
      if (!session.refreshing) {
        session.refreshing = refresh(user, session).finally(() => {
          session.refreshing = null;
        });
      }
      return session.refreshing;
    }

    async function refresh(user, session) {
      let response;
      let body;
      try {
        response = await fetch(
          `${authUrl}/securetoken.googleapis.com/v1/token?key=${encodeURIComponent(apiKey)}`,
          {
            method: 'POST',
            headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
            body: new URLSearchParams({
              grant_type: 'refresh_token',
              refresh_token: session.tokens.refreshToken,
            }).toString(),
          },
        );
        body = await response.json().catch(() => ({}));
      } catch (err) {
        throw authError('auth/network-request-failed', `Token refresh failed: ${err.message}`);
      }
      if (!response.ok) {
        const message = body?.error?.message || `HTTP ${response.status}`;
        const fatal = response.status === 400 && FATAL_REFRESH_ERRORS[message.split(/[\s:]/)[0]];
        if (fatal) {
          if (user === current) setCurrent(null);
          throw authError(fatal, message);
        }
        throw authError('auth/internal-error', `Token refresh failed: ${message}`);
      }
      setTokens(user, {
        idToken: body.id_token,
        refreshToken: body.refresh_token || session.tokens.refreshToken,
        expirationTime: Date.now() + Number(body.expires_in) * 1000,
      });
      if (user === current) {
        save(session.tokens);
        schedule();
      }
      return body.id_token;
    }

    // Proactive refresh while signed in, at expiry minus the margin.
    function schedule(delay) {
      clearTimeout(timer);
      timer = null;
      if (!current) return;
      const user = current;
      const due = delay ?? sessions.get(user).tokens.expirationTime - REFRESH_MARGIN_MS - Date.now();
      timer = setTimeout(() => {
        getIdToken(user, true).catch(() => {
          if (user === current) schedule(REFRESH_RETRY_MS);
        });
      }, Math.min(Math.max(due, 0), MAX_TIMER_MS));
    }

    // --- state, persistence and listeners ----------------------------------------------

    function save(tokens) {
      try {
        if (tokens) localStorage.setItem(storageKey, JSON.stringify(tokens));
        else localStorage.removeItem(storageKey);
      } catch (err) {
        console.warn('GatehouseAuth: cannot write localStorage', err);
      }
    }

    function load() {
      try {
        const tokens = JSON.parse(localStorage.getItem(storageKey));
        if (tokens?.idToken && tokens.refreshToken) {
          return { ...tokens, expirationTime: Number(tokens.expirationTime) || 0 };
        }
      } catch {
        // unreadable or unavailable: signed out
      }
      return null;
    }

    function notify() {
      for (const listener of [...listeners]) {
        try {
          listener.next(current);
        } catch (err) {
          console.error(err);
        }
      }
    }

    function setCurrent(user, { persist = true } = {}) {
      current = user;
      if (persist) save(user && sessions.get(user).tokens);
      schedule();
      notify();
    }

    function completeSignIn(result) {
      if (!result?.idToken || !result.refreshToken) {
        throw authError('auth/internal-error', 'Malformed sign-in result');
      }
      const user = makeUser({
        idToken: result.idToken,
        refreshToken: result.refreshToken,
        expirationTime: Date.now() + (Number(result.expiresIn) || 3600) * 1000,
      });
      setCurrent(user);
      return { user, isNewUser: Boolean(result.isNewUser) };
    }

    // Another tab signed in, refreshed or signed out.
    window.addEventListener('storage', (event) => {
      if (event.key !== storageKey && event.key !== null) return;
      const tokens = load();
      if (!tokens) {
        if (current) setCurrent(null, { persist: false });
        return;
      }
      let uid;
      try {
        uid = decodeJwtPayload(tokens.idToken).sub;
      } catch {
        return;
      }
      if (current && current.uid === uid) {
        setTokens(current, tokens);
        schedule();
      } else {
        setCurrent(makeUser(tokens), { persist: false });
      }
    });

    // --- hosted sign-in page -----------------------------------------------------------

    function signinUrl(mode, options, extra = {}) {
      const params = new URLSearchParams({ apiKey, mode, origin: location.origin, ...extra });
      if (options?.providerId) params.set('providerId', options.providerId);
      return `${authUrl}/__/auth/signin?${params}`;
    }

    // The result comes back in this page's fragment with the nonce stored here; a result
    // without it (planted in a link: login CSRF) is ignored.
    function signInWithRedirect(options = {}) {
      const redirectUrl = location.href.split('#')[0];
      const nonce = randomNonce();
      try {
        sessionStorage.setItem(nonceKey, nonce);
      } catch {
        return Promise.reject(
          authError('auth/web-storage-unsupported', 'Redirect sign-in needs sessionStorage.'),
        );
      }
      location.assign(signinUrl('redirect', options, { redirectUrl, nonce }));
      return new Promise(() => {}); // the page is navigating away
    }

    // The redirect result in `raw` (the fragment after HASH_PREFIX), if this tab is waiting for
    // it: its nonce must be the one stored when the redirect started, and works once.
    function takeRedirectResult(raw) {
      let expected = null;
      try {
        expected = sessionStorage.getItem(nonceKey);
        sessionStorage.removeItem(nonceKey);
      } catch {
        // no sessionStorage: no redirect was started here
      }
      let payload = null;
      try {
        payload = JSON.parse(decodeURIComponent(raw));
      } catch {
        // not a result
      }
      if (!expected || typeof payload?.nonce !== 'string' || payload.nonce !== expected) {
        console.warn('GatehouseAuth: ignored a sign-in result that this page did not ask for');
        return null;
      }
      return completeSignIn(payload.result);
    }

    function signInWithPopup(options = {}) {
      if (pendingPopup) pendingPopup.cancel();
      const width = 480;
      const height = 640;
      const left = Math.round(window.screenX + Math.max(0, (window.outerWidth - width) / 2));
      const top = Math.round(window.screenY + Math.max(0, (window.outerHeight - height) / 2));
      const popup = window.open(
        signinUrl('popup', options),
        'gatehouse-signin',
        `popup,width=${width},height=${height},left=${left},top=${top}`,
      );
      if (!popup) return signInWithRedirect(options);

      return new Promise((resolve, reject) => {
        let closeTimer = null;
        const finish = (settle, value) => {
          window.removeEventListener('message', onMessage);
          clearInterval(poll);
          clearTimeout(closeTimer);
          pendingPopup = null;
          settle(value);
        };
        const onMessage = (event) => {
          if (event.origin !== authOrigin || event.source !== popup) return;
          if (event.data?.type !== MESSAGE_TYPE) return;
          try {
            finish(resolve, completeSignIn(event.data.result));
          } catch (err) {
            finish(reject, err);
          }
        };
        const poll = setInterval(() => {
          if (popup.closed && closeTimer === null) {
            closeTimer = setTimeout(
              () =>
                finish(
                  reject,
                  authError('auth/popup-closed-by-user', 'The popup was closed before sign-in finished.'),
                ),
              POPUP_CLOSE_GRACE_MS,
            );
          }
        }, POPUP_POLL_MS);
        window.addEventListener('message', onMessage);
        pendingPopup = {
          cancel: () =>
            finish(reject, authError('auth/cancelled-popup-request', 'A newer popup sign-in replaced this one.')),
        };
      });
    }

    // --- start-up: stored session, then any redirect result in the URL ---------------------

    const stored = load();
    if (stored) {
      try {
        current = makeUser(stored);
      } catch {
        save(null);
      }
    }

    let redirectResult = Promise.resolve(null);
    if (location.hash.startsWith(HASH_PREFIX)) {
      const raw = location.hash.slice(HASH_PREFIX.length);
      history.replaceState(history.state, '', location.pathname + location.search);
      try {
        redirectResult = Promise.resolve(takeRedirectResult(raw));
      } catch (err) {
        redirectResult = Promise.reject(err.code ? err : authError('auth/internal-error', err.message));
        redirectResult.catch(() => {}); // reported through getRedirectResult()
      }
    }
    schedule();

    return {
      get currentUser() {
        return current;
      },
      get config() {
        return { apiKey, authUrl, projectId };
      },
      onAuthStateChanged(observer) {
        const listener = { next: typeof observer === 'function' ? observer : (u) => observer.next(u) };
        listeners.add(listener);
        redirectResult
          .catch(() => {})
          .then(() => {
            if (listeners.has(listener)) listener.next(current);
          });
        return () => listeners.delete(listener);
      },
      signInWithPopup,
      signInWithRedirect,
      getRedirectResult: () => redirectResult,
      signOut: async () => setCurrent(null),
    };
  }

  window.GatehouseAuth = Object.freeze({ initialize });
})();
