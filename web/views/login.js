// Log in, or register and then log in (docs/protocol.md section 1).

import { h } from '../dom.js';
import { login, register } from '../api.js';

const USERNAME_HINT = '3 to 32 characters: a-z, 0-9, _ . -';

/** Renders into `root`; calls `onLogin({token, user_id, session_id, username})`. */
export function loginView(root, onLogin) {
  const error = h('p', { class: 'error', role: 'alert', id: 'login-error' });
  let mode = 'login';

  const username = h('input', {
    id: 'username',
    name: 'username',
    autocomplete: 'username',
    required: true,
    minlength: 3,
    maxlength: 32,
    pattern: '[a-z0-9_.\\-]{3,32}',
    autocapitalize: 'none',
    spellcheck: 'false',
    'aria-describedby': 'username-hint',
  });
  const displayName = h('input', { id: 'display-name', name: 'display_name', maxlength: 64, autocomplete: 'nickname' });
  const password = h('input', {
    id: 'password',
    name: 'password',
    type: 'password',
    required: true,
    minlength: 8,
    autocomplete: 'current-password',
  });
  const displayRow = h('div', { class: 'field', hidden: true },
    h('label', { for: 'display-name' }, 'Display name (optional)'), displayName);
  const submit = h('button', { type: 'submit', class: 'primary', id: 'login-submit' }, 'Log in');
  const switchMode = h('button', { type: 'button', class: 'link', id: 'login-switch' }, 'New here? Create an account');
  const heading = h('h1', { id: 'login-heading' }, 'Log in to OceanChat');

  function setMode(next) {
    mode = next;
    const registering = mode === 'register';
    heading.textContent = registering ? 'Create an OceanChat account' : 'Log in to OceanChat';
    submit.textContent = registering ? 'Create account' : 'Log in';
    switchMode.textContent = registering ? 'Have an account? Log in' : 'New here? Create an account';
    displayRow.hidden = !registering;
    password.autocomplete = registering ? 'new-password' : 'current-password';
    error.textContent = '';
  }
  switchMode.addEventListener('click', () => setMode(mode === 'login' ? 'register' : 'login'));

  const form = h('form', { class: 'card login', 'aria-labelledby': 'login-heading', novalidate: true },
    heading,
    h('div', { class: 'field' },
      h('label', { for: 'username' }, 'Username'),
      username,
      h('small', { id: 'username-hint' }, USERNAME_HINT)),
    displayRow,
    h('div', { class: 'field' }, h('label', { for: 'password' }, 'Password (at least 8 characters)'), password),
    error,
    h('div', { class: 'actions' }, submit, switchMode));

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    error.textContent = '';
    const name = username.value.trim().toLowerCase();
    if (!/^[a-z0-9_.-]{3,32}$/.test(name)) {
      error.textContent = `Username: ${USERNAME_HINT}.`;
      username.focus();
      return;
    }
    if (new TextEncoder().encode(password.value).length < 8) {
      error.textContent = 'The password needs at least 8 characters.';
      password.focus();
      return;
    }
    submit.disabled = true;
    try {
      if (mode === 'register') await register(name, password.value, displayName.value.trim());
      const session = await login(name, password.value);
      onLogin({ ...session, username: name });
    } catch (err) {
      error.textContent = messageOf(err);
      submit.disabled = false;
    }
  });

  root.replaceChildren(h('main', { id: 'main', class: 'login-page' }, form));
  username.focus();
}

function messageOf(err) {
  switch (err.code) {
    case 'username_taken':
      return 'That username is taken; choose another.';
    case 'bad_credentials':
      return 'Wrong username or password.';
    case 'rate_limited':
      return 'Too many attempts; wait a moment.';
    default:
      return err.message || 'Something went wrong; try again.';
  }
}
