// Start a direct conversation with a user id, or create a group.

import { h } from '../dom.js';
import { parseIds } from '../names.js';

export function newConvView(main, { conn, chat, dir, me, navigate }) {
  const dmError = h('p', { class: 'error', role: 'alert', id: 'dm-error' });
  const peerId = h('input', { id: 'dm-user-id', name: 'user_id', required: true, autocomplete: 'off', spellcheck: 'false' });
  const peerName = h('input', { id: 'dm-name', name: 'name', maxlength: 64, autocomplete: 'off' });
  const dmForm = h('form', { class: 'card', 'aria-labelledby': 'dm-heading' },
    h('h2', { id: 'dm-heading' }, 'Direct conversation'),
    h('div', { class: 'field' },
      h('label', { for: 'dm-user-id' }, 'Their user id'),
      peerId,
      h('small', {}, 'They find theirs at the top of their page, next to "Copy id".')),
    h('div', { class: 'field' },
      h('label', { for: 'dm-name' }, 'What to call them (optional, kept in this browser)'),
      peerName),
    dmError,
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary', id: 'dm-open' }, 'Open conversation')));

  dmForm.addEventListener('submit', async (e) => {
    e.preventDefault();
    dmError.textContent = '';
    const userId = peerId.value.trim();
    if (!userId) {
      dmError.textContent = 'Enter their user id.';
      peerId.focus();
      return;
    }
    if (userId === me.user_id) {
      dmError.textContent = 'That is your own id.';
      return;
    }
    try {
      const { conv } = await conn.request('dm.open', { user_id: userId });
      if (peerName.value.trim()) dir.learn(userId, peerName.value);
      await chat.refreshList().catch(() => {});
      navigate(`c/${encodeURIComponent(conv)}`);
    } catch (err) {
      dmError.textContent = err.code === 'not_found' ? 'No user has that id.' : err.message;
    }
  });

  const groupError = h('p', { class: 'error', role: 'alert', id: 'group-error' });
  const groupName = h('input', { id: 'group-name', name: 'name', required: true, maxlength: 100, autocomplete: 'off' });
  const members = h('textarea', { id: 'group-members', name: 'members', rows: 3, spellcheck: 'false' });
  const groupForm = h('form', { class: 'card', 'aria-labelledby': 'group-heading' },
    h('h2', { id: 'group-heading' }, 'New group'),
    h('div', { class: 'field' }, h('label', { for: 'group-name' }, 'Name'), groupName),
    h('div', { class: 'field' },
      h('label', { for: 'group-members' }, 'Members: user ids, separated by commas or new lines'),
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
      const ids = parseIds(members.value).filter((id) => id !== me.user_id);
      const { conv, group_id: gid } = await conn.request('group.create', { name, members: ids });
      await chat.loadGroup(gid).catch(() => {});
      await chat.refreshList().catch(() => {});
      navigate(`c/${encodeURIComponent(conv)}`);
    } catch (err) {
      groupError.textContent = err.code === 'not_found' ? 'One of those user ids belongs to nobody.' : err.message;
    }
  });

  main.replaceChildren(
    h('div', { class: 'pane-head' },
      h('a', { class: 'back', href: '#/' }, h('span', { 'aria-hidden': 'true' }, '← '), 'Conversations'),
      h('h1', {}, 'New conversation')),
    h('div', { class: 'pane-body forms' }, dmForm, groupForm),
  );
  peerId.focus();
  return { destroy() {} };
}
