// Start a direct conversation with a user by username, or create a group
// with members named by username.

import { h } from '../dom.js';
import { lookupAll, parseNames, unknownNames } from '../names.js';

export function newConvView(main, { conn, chat, dir, me, navigate }) {
  const dmError = h('p', { class: 'error', role: 'alert', id: 'dm-error' });
  const peerName = h('input', {
    id: 'dm-username',
    name: 'username',
    required: true,
    maxlength: 33,
    autocomplete: 'off',
    autocapitalize: 'none',
    spellcheck: 'false',
  });
  const dmForm = h('form', { class: 'card', 'aria-labelledby': 'dm-heading' },
    h('h2', { id: 'dm-heading' }, 'Direct conversation'),
    h('div', { class: 'field' },
      h('label', { for: 'dm-username' }, 'Their username'),
      peerName,
      h('small', {}, 'The name they log in with, shown at the top of their page.')),
    dmError,
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary', id: 'dm-open' }, 'Open conversation')));

  dmForm.addEventListener('submit', async (e) => {
    e.preventDefault();
    dmError.textContent = '';
    const [name] = parseNames(peerName.value);
    if (!name) {
      dmError.textContent = 'Enter their username.';
      peerName.focus();
      return;
    }
    if (name === me.username) {
      dmError.textContent = 'That is your own username.';
      return;
    }
    try {
      const user = await dir.lookup(name);
      if (!user) {
        dmError.textContent = unknownNames([name]);
        peerName.focus();
        return;
      }
      const { conv } = await conn.request('dm.open', { user_id: user.user_id });
      await chat.refreshList().catch(() => {});
      navigate(`c/${encodeURIComponent(conv)}`);
    } catch (err) {
      dmError.textContent = err.message || err.code;
    }
  });

  const groupError = h('p', { class: 'error', role: 'alert', id: 'group-error' });
  const groupName = h('input', { id: 'group-name', name: 'name', required: true, maxlength: 100, autocomplete: 'off' });
  const members = h('textarea', { id: 'group-members', name: 'members', rows: 3, spellcheck: 'false', autocapitalize: 'none' });
  const groupForm = h('form', { class: 'card', 'aria-labelledby': 'group-heading' },
    h('h2', { id: 'group-heading' }, 'New group'),
    h('div', { class: 'field' }, h('label', { for: 'group-name' }, 'Name'), groupName),
    h('div', { class: 'field' },
      h('label', { for: 'group-members' }, 'Members: usernames, separated by commas or new lines'),
      members,
      h('small', {}, 'You become its owner. You can add more members later in its settings.')),
    groupError,
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary', id: 'group-create' }, 'Create group')));

  groupForm.addEventListener('submit', async (e) => {
    e.preventDefault();
    groupError.textContent = '';
    const name = groupName.value.trim();
    if (!name) {
      groupError.textContent = 'Give the group a name.';
      groupName.focus();
      return;
    }
    try {
      const found = await lookupAll(dir, parseNames(members.value).filter((n) => n !== me.username));
      if (found.unknown) {
        groupError.textContent = unknownNames(found.unknown);
        return;
      }
      const ids = found.users.map((u) => u.user_id);
      const { conv, group_id: gid } = await conn.request('group.create', { name, members: ids });
      await chat.loadGroup(gid).catch(() => {});
      await chat.refreshList().catch(() => {});
      navigate(`c/${encodeURIComponent(conv)}`);
    } catch (err) {
      groupError.textContent = err.message || err.code;
    }
  });

  main.replaceChildren(
    h('div', { class: 'pane-head' },
      h('a', { class: 'back', href: '#/' }, h('span', { 'aria-hidden': 'true' }, '← '), 'Conversations'),
      h('h1', {}, 'New conversation')),
    h('div', { class: 'pane-body forms' }, dmForm, groupForm),
  );
  peerName.focus();
  return { destroy() {} };
}
