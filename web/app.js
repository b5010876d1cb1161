// OceanChat's web client: plain ES modules, served as they are by the
// backend (no build step). This module logs in, opens the connection and
// routes between the views by the URL's hash:
//   #/            the conversation list
//   #/c/<conv>    a conversation
//   #/new         a new direct conversation or group
//   #/g/<group>   a group's settings (under the group's edit lock)

import { gatewayUrl, logout } from './api.js';
import { Connection } from './protocol.js';
import { Chat } from './state.js';
import { Directory } from './names.js';
import { h } from './dom.js';
import { loginView } from './views/login.js';
import { convListView } from './views/convlist.js';
import { chatView } from './views/chat.js';
import { newConvView } from './views/newconv.js';
import { settingsView } from './views/settings.js';

const SESSION_KEY = 'oc.session';

function loadSession() {
  try {
    const s = JSON.parse(localStorage.getItem(SESSION_KEY) || 'null');
    return s && s.token && s.user_id && s.username ? s : null;
  } catch {
    return null;
  }
}

function saveSession(session) {
  localStorage.setItem(SESSION_KEY, JSON.stringify(session));
}

function clearSession() {
  localStorage.removeItem(SESSION_KEY);
}

const root = document.getElementById('app');

function showLogin(notice) {
  loginView(root, (session) => {
    saveSession({
      token: session.token,
      user_id: session.user_id,
      session_id: session.session_id,
      username: session.username,
    });
    start(loadSession());
  });
  if (notice) {
    const p = h('p', { class: 'notice', role: 'status' }, notice);
    root.querySelector('form').prepend(p);
  }
}

async function start(session) {
  let url;
  try {
    url = await gatewayUrl();
  } catch (e) {
    root.replaceChildren(
      h('main', { id: 'main', class: 'login-page' },
        h('div', { class: 'card' },
          h('p', { role: 'alert' }, 'The server cannot be reached.'),
          h('button', { type: 'button', class: 'primary', onclick: () => start(session) }, 'Try again'))),
    );
    return;
  }
  const conn = new Connection(url, session.token);
  const dir = new Directory(conn, session);
  const chat = new Chat(conn, session, dir);
  const ctx = { conn, chat, dir, me: session, navigate };

  const status = h('div', { id: 'conn-status', class: 'conn-status', role: 'status', 'aria-live': 'polite', dataset: { state: 'connecting' } });
  // Others find this user by username now; the id stays in the page for
  // whoever needs it (support, tests), unseen.
  const myId = h('code', { id: 'my-id', hidden: true }, session.user_id);
  const logoutButton = h('button', { type: 'button', class: 'small', id: 'logout' }, 'Log out');
  logoutButton.addEventListener('click', async () => {
    conn.stop();
    try {
      await logout(session.token);
    } catch {
      // the session ends on the server when it expires anyway
    }
    clearSession();
    location.hash = '';
    location.reload();
  });

  const header = h('header', { class: 'topbar' },
    h('a', { class: 'brand', href: '#/' }, 'OceanChat'),
    h('div', { class: 'me' },
      h('span', { class: 'me-name', id: 'me-name', title: 'Others open a conversation with you by your username' }, `@${session.username}`),
      myId,
      logoutButton));
  const aside = h('aside', { class: 'sidebar', 'aria-label': 'Conversations' });
  const main = h('main', { id: 'main', class: 'pane', tabindex: '-1' });
  root.replaceChildren(header, status, h('div', { class: 'layout' }, aside, main));

  conn.addEventListener('state', (e) => showState(status, conn, e.detail));
  conn.addEventListener('unauthenticated', () => {
    conn.stop();
    clearSession();
    if (current) current.destroy();
    showLogin('Your session ended; please log in again.');
  });

  const list = convListView(aside, ctx);
  let current = null;

  function route() {
    const hash = decodeURIComponent(location.hash.replace(/^#\/?/, ''));
    if (current) current.destroy();
    current = null;
    const [kind, ...rest] = hash.split('/');
    const arg = rest.join('/');
    document.body.classList.toggle('show-pane', Boolean(kind));
    if (kind === 'c' && arg) current = chatView(main, ctx, arg);
    else if (kind === 'g' && arg) current = settingsView(main, ctx, arg);
    else if (kind === 'new') current = newConvView(main, ctx);
    else current = emptyView(main);
    list.select(kind === 'c' ? arg : null);
  }

  function navigate(path) {
    location.hash = `#/${path}`;
  }

  window.addEventListener('hashchange', route);
  conn.start();
  route();
}

function emptyView(main) {
  main.replaceChildren(
    h('div', { class: 'empty' },
      h('h2', {}, 'No conversation open'),
      h('p', {}, 'Choose one from the list, or start a new one.'),
      h('a', { class: 'button primary', href: '#/new' }, 'New conversation')),
  );
  return { destroy() {} };
}

function showState(el, conn, { state, retryInMs }) {
  el.dataset.state = state;
  el.replaceChildren();
  clearInterval(el.countdown);
  if (state === 'open' || state === 'stopped') {
    el.hidden = state === 'stopped';
    el.append(h('span', { class: 'sr-only' }, 'Connected'));
    return;
  }
  el.hidden = false;
  if (state === 'connecting') {
    el.append(conn.authCount ? 'Connection lost. Reconnecting…' : 'Connecting…');
    return;
  }
  // waiting: count down to the next try
  const until = Date.now() + retryInMs;
  const text = h('span', {});
  const tick = () => {
    const s = Math.max(0, Math.ceil((until - Date.now()) / 1000));
    text.textContent = `Connection lost. Reconnecting in ${s} s…`;
  };
  tick();
  el.countdown = setInterval(tick, 1000);
  el.append(text, ' ', h('button', { type: 'button', class: 'small', onclick: () => conn.connectNow() }, 'Reconnect now'));
}

const session = loadSession();
if (session) start(session);
else showLogin();
