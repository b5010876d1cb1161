// A group's settings and members, one editor at a time
// (docs/concurrency.md): opening the page asks for the group's edit lock.
// Whoever holds it may rename the group, add and remove members, promote,
// demote and mute; everyone else sees the page read-only with a banner
// naming the holder, and gets the lock by themselves once it is released
// (the `lock` event). The lock is renewed every third of its lease while
// the page is open and released when it closes or the tab goes away; a
// lease that was lost turns the page read-only and says so. Any member
// but the owner may leave the group here, without the lock.

import { h, formatTime, listen } from '../dom.js';
import { lookupAll, parseNames, unknownNames } from '../names.js';
import { TRANSIENT } from '../protocol.js';

const RANK = { owner: 3, admin: 2, member: 1 };
// Until a lease length is known: the default of docs/protocol.md.
const DEFAULT_TTL_MS = 30000;

export function settingsView(main, { conn, chat, dir, me, navigate }, gid) {
  const resource = `group:${gid}`;
  // The group's chat, once conv.list has told which it is.
  const chatHref = () => {
    const c = chat.convOfGroup(gid);
    return c ? `#/c/${encodeURIComponent(c.conv)}` : '#/';
  };
  const s = {
    mode: 'loading', // loading | editing | locked | viewer | lost | offline | gone
    token: null,
    ttlMs: DEFAULT_TTL_MS,
    holder: null,
    group: null,
    members: [],
    acquiring: false,
  };
  let alive = true;
  let renewTimer = null;
  let waitTimer = null;
  let loadTimer = null;
  // Loads may overlap (an event arrives while one is under way) and their
  // answers may come back in either order: only the newest one counts.
  let loadsStarted = 0;

  // --- the page ------------------------------------------------------------

  const heading = h('h1', { id: 'settings-title' }, 'Group settings');
  const closeButton = h('button', { type: 'button', class: 'small', id: 'close-settings' }, 'Close settings');
  const banner = h('div', { class: 'banner', id: 'lock-banner', role: 'status', 'aria-live': 'polite' });
  const feedback = h('p', { class: 'feedback', id: 'settings-feedback', role: 'status' });
  const actionError = h('p', { class: 'error', id: 'settings-error', role: 'alert' });

  const nameInput = h('input', { id: 'group-name-input', maxlength: 100, required: true, autocomplete: 'off' });
  const announcementInput = h('textarea', { id: 'group-announcement', rows: 2, maxlength: 4000 });
  const saveButton = h('button', { type: 'submit', class: 'primary', id: 'save-group' }, 'Save');
  const detailsForm = h('form', { class: 'card', id: 'group-details', 'aria-labelledby': 'details-heading' },
    h('h2', { id: 'details-heading' }, 'Name and announcement'),
    h('div', { class: 'field' }, h('label', { for: 'group-name-input' }, 'Name'), nameInput),
    h('div', { class: 'field' }, h('label', { for: 'group-announcement' }, 'Announcement'), announcementInput),
    h('div', { class: 'actions' }, saveButton));

  const addInput = h('textarea', { id: 'add-members-input', rows: 2, spellcheck: 'false' });
  const addButton = h('button', { type: 'submit', class: 'primary', id: 'add-members' }, 'Add members');
  const addForm = h('form', { class: 'card', id: 'add-members-form', 'aria-labelledby': 'add-heading' },
    h('h2', { id: 'add-heading' }, 'Add members'),
    h('div', { class: 'field' },
      h('label', { for: 'add-members-input' }, 'Usernames, separated by commas or new lines'),
      addInput),
    h('div', { class: 'actions' }, addButton));

  const memberList = h('ul', { class: 'members', id: 'members', 'aria-labelledby': 'members-heading' });
  const membersCard = h('section', { class: 'card', 'aria-labelledby': 'members-heading' },
    h('h2', { id: 'members-heading' }, 'Members'),
    memberList);

  const leaveButton = h('button', { type: 'button', class: 'danger', id: 'leave-group' }, 'Leave group');
  const leaveCard = h('section', { class: 'card', id: 'leave-card', 'aria-labelledby': 'leave-heading', hidden: true },
    h('h2', { id: 'leave-heading' }, 'Leave the group'),
    h('p', {}, 'You stop receiving its messages; an admin can add you again.'),
    h('div', { class: 'actions' }, leaveButton));

  // Disabled as a whole while this page does not hold the lock.
  const editor = h('fieldset', { class: 'editor', id: 'editor', disabled: true },
    h('legend', { class: 'sr-only' }, 'Group settings'),
    h('div', { class: 'editor-forms' }, detailsForm, addForm),
    membersCard);

  const back = h('a', { class: 'back', href: chatHref() }, h('span', { 'aria-hidden': 'true' }, '← '), 'Back to the chat');
  main.replaceChildren(
    h('div', { class: 'pane-head' }, back, heading, closeButton),
    h('div', { class: 'pane-body settings', dataset: { mode: 'loading' }, id: 'settings' },
      banner, feedback, actionError, editor, leaveCard),
  );
  const body = main.querySelector('#settings');

  closeButton.addEventListener('click', () => {
    location.hash = chatHref();
  });

  leaveButton.addEventListener('click', async () => {
    if (!confirm(`Leave ${s.group ? s.group.name : 'this group'}?`)) return;
    actionError.textContent = '';
    try {
      await chat.leaveGroup(gid);
      alive = false;
      navigate('');
    } catch (e) {
      actionError.textContent = e.code === 'bad_request' && myRole() === 'owner'
        ? 'The owner cannot leave: hand the group on first.'
        : e.message || e.code;
    }
  });

  // --- rendering -------------------------------------------------------------

  function myRole() {
    const mine = s.members.find((m) => m.user_id === me.user_id);
    return mine ? mine.role : null;
  }

  function renderBanner() {
    const parts = [];
    let tone = 'info';
    switch (s.mode) {
      case 'loading':
        parts.push('Asking for the edit lock…');
        break;
      case 'editing':
        tone = 'ok';
        parts.push(h('strong', {}, 'You are editing this group.'),
          ' Other admins who open this page can only look until you close it.');
        break;
      case 'locked': {
        tone = 'warn';
        const holder = s.holder;
        if (holder && holder.session_id === me.session_id) {
          parts.push(h('strong', {}, 'This page is open for editing in another tab or window of yours.'),
            ' Here you can only look; it becomes editable when that one closes.');
        } else {
          parts.push('This page is being operated by ',
            h('strong', { id: 'lock-holder' }, holder ? holder.display_name : 'another admin'),
            holder && holder.since ? ` (since ${formatTime(holder.since)})` : '',
            '. You can only look; it becomes editable here as soon as they close it.');
        }
        break;
      }
      case 'viewer':
        parts.push('Only the owner and admins can change this group; you can look.');
        break;
      case 'lost':
        tone = 'warn';
        parts.push(h('strong', {}, 'Your edit lock expired,'),
          ' so this page is read-only now: someone else may be editing. ',
          h('button', { type: 'button', class: 'small', id: 'edit-again', onclick: () => retryAcquire() }, 'Edit again'));
        break;
      case 'offline':
        tone = 'warn';
        parts.push('Connection lost: read-only until it is back.');
        break;
      case 'gone':
        tone = 'warn';
        parts.push('You are not a member of this group.');
        break;
      default:
        break;
    }
    banner.className = `banner ${tone}`;
    banner.dataset.mode = s.mode;
    banner.replaceChildren(...parts);
  }

  function memberItem(m, role) {
    const mine = RANK[role] || 0;
    const editing = s.mode === 'editing';
    const outranks = mine > RANK[m.role] && m.user_id !== me.user_id;
    const name = dir.label(m.user_id);
    const button = (action, text, allowed, onclick) =>
      h('button', {
        type: 'button',
        class: 'small',
        dataset: { action },
        disabled: !(editing && allowed),
        'aria-label': `${text}: ${name}`,
        onclick,
      }, text);
    return h('li', { class: 'member', dataset: { userId: m.user_id, role: m.role, muted: String(m.muted) } },
      h('span', { class: 'member-name' },
        h('span', { class: 'name' }, name, m.user_id === me.user_id ? ' (you)' : ''),
        dir.username(m.user_id)
          ? h('span', { class: 'member-username', title: `user id ${m.user_id}` }, `@${dir.username(m.user_id)}`)
          : null),
      h('span', { class: `role role-${m.role}` }, m.role),
      m.muted ? h('span', { class: 'tag' }, 'muted') : null,
      m.user_id === me.user_id ? null : h('span', { class: 'member-actions' },
        m.role === 'member'
          ? button('promote', 'Make admin', mine >= RANK.admin, () =>
              write('group.members.set_role', { user_id: m.user_id, role: 'admin' }, `${name} is an admin now`))
          : null,
        m.role === 'admin'
          ? button('demote', 'Make member', role === 'owner', () =>
              write('group.members.set_role', { user_id: m.user_id, role: 'member' }, `${name} is a member now`))
          : null,
        m.role !== 'owner'
          ? button(m.muted ? 'unmute' : 'mute', m.muted ? 'Unmute' : 'Mute', outranks, () =>
              write('group.members.mute', { user_id: m.user_id, muted: !m.muted }, `${name} ${m.muted ? 'may write again' : 'is muted'}`))
          : null,
        m.role !== 'owner'
          ? button('remove', 'Remove', outranks, () =>
              write('group.members.remove', { user_ids: [m.user_id] }, `${name} was removed`))
          : null));
  }

  function render() {
    if (!alive) return;
    body.dataset.mode = s.mode;
    renderBanner();
    const editing = s.mode === 'editing';
    editor.disabled = !editing;
    if (s.group) {
      heading.textContent = `Settings of ${s.group.name}`;
      if (!editing || document.activeElement !== nameInput) nameInput.value = s.group.name;
      if (!editing || document.activeElement !== announcementInput) announcementInput.value = s.group.announcement;
    }
    back.href = chatHref();
    const role = myRole();
    leaveCard.hidden = !role || role === 'owner' || s.mode === 'gone';
    const order = (m) => -(RANK[m.role] || 0);
    const members = [...s.members].sort((a, b) => order(a) - order(b) || dir.label(a.user_id).localeCompare(dir.label(b.user_id)));
    memberList.replaceChildren(...members.map((m) => memberItem(m, role)));
  }

  function say(text) {
    feedback.textContent = text;
    actionError.textContent = '';
  }

  // --- the lock ----------------------------------------------------------------

  async function open() {
    stopTimers();
    s.token = null;
    s.mode = 'loading';
    render();
    try {
      const watched = await conn.request('lock.watch', { resource });
      s.holder = watched.holder;
      await load();
      await acquire();
    } catch (e) {
      fail(e);
    }
  }

  async function load() {
    const mine = ++loadsStarted;
    let members = [];
    let after;
    let result;
    do {
      const args = { group_id: gid };
      if (after) args.members_after = after;
      result = await conn.request('group.get', args);
      members = members.concat(result.members);
      after = result.members_next;
    } while (after);
    if (!alive || mine !== loadsStarted) return;
    s.group = result.group;
    s.members = members;
    const known = chat.groups.get(gid);
    if (!known || known.version <= result.group.version) chat.groups.set(gid, { ...result.group, group_id: gid });
    render();
  }

  function loadSoon() {
    clearTimeout(loadTimer);
    loadTimer = setTimeout(() => load().catch(fail), 100);
  }

  async function acquire() {
    s.acquiring = true;
    try {
      const lease = await conn.request('lock.acquire', { resource });
      if (!alive) {
        conn.request('lock.release', { resource, token: lease.token }).catch(() => {});
        return;
      }
      s.token = lease.token;
      s.ttlMs = lease.ttl_ms || DEFAULT_TTL_MS;
      s.holder = null;
      s.mode = 'editing';
      stopTimers();
      renewTimer = setInterval(renew, Math.max(100, Math.floor(s.ttlMs / 3)));
      render();
    } catch (e) {
      if (e.code === 'locked') {
        s.mode = 'locked';
        s.holder = e.details.holder || null;
        waitForRelease();
        render();
      } else if (e.code === 'forbidden') {
        s.mode = 'viewer';
        render();
      } else {
        throw e;
      }
    } finally {
      s.acquiring = false;
    }
  }

  /** Loads the group afresh, then asks for the lock again. */
  async function retryAcquire() {
    if (!alive || s.acquiring || !conn.isOpen) return;
    try {
      await load();
      await acquire();
    } catch (e) {
      fail(e);
    }
  }

  // A lapsed lease is not announced: a waiting page that heard nothing for
  // a lease's length asks again (docs/protocol.md).
  function waitForRelease() {
    clearTimeout(waitTimer);
    waitTimer = setTimeout(() => {
      if (s.mode === 'locked') retryAcquire();
    }, s.ttlMs + 500);
  }

  async function renew() {
    if (!s.token || !conn.isOpen) return;
    const token = s.token;
    try {
      const renewed = await conn.request('lock.renew', { resource, token });
      if (renewed.ttl_ms && renewed.ttl_ms !== s.ttlMs && s.token === token) {
        s.ttlMs = renewed.ttl_ms;
        clearInterval(renewTimer);
        renewTimer = setInterval(renew, Math.max(100, Math.floor(s.ttlMs / 3)));
      }
    } catch (e) {
      if (s.token !== token) return;
      if (e.code === 'lock_lost' || e.code === 'lock_required') lost();
      // anything else: try again at the next tick; a dropped connection
      // is handled by the connection's state change
    }
  }

  function lost() {
    s.token = null;
    stopTimers();
    s.mode = 'lost';
    render();
    load().catch(() => {});
  }

  function fail(e) {
    if (!alive) return;
    if (e.code === 'not_member' || e.code === 'not_found') {
      stopTimers();
      s.mode = 'gone';
      s.token = null;
      render();
    } else if (TRANSIENT.has(e.code)) {
      // the next `ready` opens the page again
      if (!conn.isOpen) {
        s.mode = 'offline';
        render();
      }
    } else {
      actionError.textContent = e.message || e.code;
    }
  }

  function stopTimers() {
    clearInterval(renewTimer);
    clearTimeout(waitTimer);
    renewTimer = null;
    waitTimer = null;
  }

  // --- writes --------------------------------------------------------------------

  async function write(op, args, done) {
    if (s.mode !== 'editing' || !s.token) return;
    feedback.textContent = '';
    actionError.textContent = '';
    try {
      await conn.request(op, { group_id: gid, lock_token: s.token, ...args });
      await load();
      say(`${done}.`);
      return true;
    } catch (e) {
      switch (e.code) {
        case 'lock_lost':
        case 'lock_required':
          lost();
          break;
        case 'version_conflict':
          await load().catch(() => {});
          actionError.textContent = 'The group changed meanwhile: check the settings and save again.';
          break;
        case 'forbidden':
          actionError.textContent = 'Your role does not allow that.';
          break;
        case 'not_found':
          actionError.textContent = 'One of those users no longer exists.';
          break;
        default:
          actionError.textContent = e.message || e.code;
      }
      return false;
    }
  }

  detailsForm.addEventListener('submit', async (e) => {
    e.preventDefault();
    if (!s.group) return;
    const patch = {};
    const name = nameInput.value.trim();
    const announcement = announcementInput.value;
    if (name && name !== s.group.name) patch.name = name;
    if (announcement !== s.group.announcement) patch.announcement = announcement;
    if (!Object.keys(patch).length) {
      say('Nothing to save.');
      return;
    }
    if (!name) {
      actionError.textContent = 'The name cannot be empty.';
      return;
    }
    await write('group.update', { patch, expected_version: s.group.version }, 'Saved');
  });

  addForm.addEventListener('submit', async (e) => {
    e.preventDefault();
    if (s.mode !== 'editing') return;
    const names = parseNames(addInput.value);
    if (!names.length) {
      actionError.textContent = 'Enter at least one username.';
      return;
    }
    feedback.textContent = '';
    actionError.textContent = '';
    let found;
    try {
      found = await lookupAll(dir, names);
    } catch (err) {
      fail(err);
      return;
    }
    if (found.unknown) {
      actionError.textContent = unknownNames(found.unknown);
      return;
    }
    const ids = found.users.map((u) => u.user_id);
    const who = found.users.map((u) => u.display_name || u.username).join(', ');
    if (await write('group.members.add', { user_ids: ids }, `Added ${who}`)) {
      addInput.value = '';
    }
  });

  // --- events ----------------------------------------------------------------------

  const onEvent = (e) => {
    const frame = e.detail;
    if (frame.ev === 'lock' && frame.resource === resource) {
      const holder = frame.holder;
      if (!holder) {
        s.holder = null;
        if (s.mode === 'locked') retryAcquire();
        else render();
      } else if (s.mode === 'editing') {
        // Our own acquire is announced to us too; another session taking
        // the lock means our lease lapsed.
        if (holder.session_id !== me.session_id) lost();
      } else if (!s.acquiring) {
        s.holder = holder;
        if (s.mode === 'locked') waitForRelease();
        render();
      }
    } else if (frame.ev === 'group' && frame.group_id === gid) {
      const removedMe = frame.change.kind === 'members_removed' && frame.change.user_ids.includes(me.user_id);
      if (removedMe) fail({ code: 'not_member' });
      // A change's version is written before its member documents, so a
      // load that overlapped the change can hold its version without all
      // of it; its event comes after every write: read again unless what
      // we hold is newer.
      else if (!s.group || frame.version >= s.group.version) loadSoon();
    }
  };
  const onState = (e) => {
    if (e.detail.state !== 'open' && alive && s.mode !== 'gone' && conn.authCount > 0) {
      // The server releases a connection's locks when it closes.
      s.token = null;
      stopTimers();
      s.mode = 'offline';
      render();
    }
  };
  const onReady = () => {
    if (alive && s.mode !== 'gone') open();
  };
  const onPageHide = () => {
    if (s.token) conn.fireAndForget('lock.release', { resource, token: s.token });
  };
  const onNames = () => render();

  const unlisten = listen([
    [conn, 'event', onEvent],
    [conn, 'state', onState],
    [conn, 'ready', onReady],
    [dir, 'change', onNames],
    [window, 'pagehide', onPageHide],
  ]);

  if (conn.isOpen) open();
  else {
    s.mode = conn.authCount ? 'offline' : 'loading';
    render();
  }

  return {
    destroy() {
      alive = false;
      stopTimers();
      clearTimeout(loadTimer);
      unlisten();
      if (s.token) conn.request('lock.release', { resource, token: s.token }).catch(() => {});
      s.token = null;
    },
  };
}
