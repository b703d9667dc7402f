// CATS v DOGS page client: the Gatehouse counterpart of the idp-sql sample's static/firebase.js.
// Needs {authUrl}/__/auth/client.js (GatehouseAuth) and /config.js (`config`) loaded first.
/* global GatehouseAuth, config */
(() => {
  'use strict';

  const auth = GatehouseAuth.initialize(config);
  window.auth = auth; // for the browser end-to-end test

  function setStatus(text, kind = '') {
    const status = document.getElementById('status');
    status.textContent = text;
    status.className = kind;
  }

  async function signIn() {
    try {
      const { user } = await auth.signInWithPopup();
      console.log(`${user.displayName || user.email} logged in.`);
      setStatus(`Welcome ${user.displayName || user.email}!`, 'ok');
    } catch (err) {
      if (err.code === 'auth/cancelled-popup-request') return; // superseded by a newer attempt
      console.error(`Error during sign in: ${err.message}`);
      setStatus('Sign in failed. Retry or check your browser logs.', 'error');
    }
  }

  async function signOut() {
    try {
      await auth.signOut();
    } catch (err) {
      console.error(`Error during sign out: ${err.message}`);
      setStatus('Sign out failed. Retry or check your browser logs.', 'error');
    }
  }

  function toggle() {
    return auth.currentUser ? signOut() : signIn();
  }

  // Re-renders the tallies and recent votes from a fresh copy of the page.
  async function refreshResults() {
    const response = await fetch('/', { cache: 'no-store' });
    if (!response.ok) throw new Error(`GET / answered ${response.status}`);
    const page = new DOMParser().parseFromString(await response.text(), 'text/html');
    const fresh = page.getElementById('form');
    if (!fresh) throw new Error('GET / has no #form');
    document.getElementById('form').innerHTML = fresh.innerHTML;
  }

  async function vote(team) {
    const user = auth.currentUser;
    if (!user) {
      setStatus('User not signed in.', 'error');
      return;
    }
    try {
      const token = await user.getIdToken();
      const response = await fetch('/', {
        method: 'POST',
        headers: {
          'Content-Type': 'application/x-www-form-urlencoded',
          Authorization: `Bearer ${token}`,
        },
        body: `team=${team}`,
      });
      const text = await response.text();
      if (!response.ok) {
        setStatus(`Vote failed (${response.status}): ${text}`, 'error');
        return;
      }
      await refreshResults().catch((err) => console.error(`Error when refreshing the results: ${err}`));
      setStatus(text, 'ok');
    } catch (err) {
      console.error(`Error when submitting vote: ${err}`);
      setStatus('Something went wrong... Please try again!', 'error');
    }
  }

  function start() {
    const button = document.getElementById('signInButton');
    const form = document.getElementById('form');
    button.addEventListener('click', toggle);
    // Delegated, so the buttons keep working after refreshResults() replaces them.
    form.addEventListener('click', (event) => {
      const target = event.target.closest('#voteCats, #voteDogs');
      if (target) vote(target.id === 'voteCats' ? 'CATS' : 'DOGS');
    });
    auth.onAuthStateChanged((user) => {
      button.textContent = user ? 'Sign Out' : 'Sign In';
      form.style.display = user ? '' : 'none';
    });
    auth.getRedirectResult().then(
      (result) => {
        if (result) setStatus(`Welcome ${result.user.displayName || result.user.email}!`, 'ok');
      },
      (err) => {
        console.error(`Error during sign in: ${err.message}`);
        setStatus('Sign in failed. Retry or check your browser logs.', 'error');
      },
    );
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
