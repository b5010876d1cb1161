// The conversation list: each conv with its name, presence (direct convs),
// last message and unread count, newest activity first.

import { h, formatTime, presenceDot } from '../dom.js';

export function convListView(aside, { chat, dir, me }) {
  let selected = null;
  const list = h('ul', { class: 'conv-list', id: 'conv-list' });
  const empty = h('p', { class: 'muted', id: 'conv-list-empty' }, 'No conversations yet.');
  aside.replaceChildren(
    h('div', { class: 'sidebar-head' },
      h('h2', {}, 'Conversations'),
      h('a', { class: 'button small primary', href: '#/new', id: 'new-conv' }, 'New')),
    list,
    empty,
  );

  function render() {
    const convs = [...chat.convs.values()].sort(
      (a, b) => (b.lastMsg ? b.lastMsg.ts : 0) - (a.lastMsg ? a.lastMsg.ts : 0) || b.lastSeq - a.lastSeq,
    );
    empty.hidden = convs.length > 0 || !chat.listed;
    list.replaceChildren(...convs.map((c) => item(c)));
  }

  function item(c) {
    const peer = c.peer;
    const last = c.lastMsg;
    const preview = last
      ? `${last.from === me.user_id ? 'You' : dir.label(last.from)}: ${last.body}`
      : 'No messages yet';
    const unread = c.unread;
    const title = chat.title(c.conv);
    return h('li', {},
      h('a', {
        class: `conv${c.conv === selected ? ' selected' : ''}`,
        href: `#/c/${encodeURIComponent(c.conv)}`,
        'aria-current': c.conv === selected ? 'page' : false,
        dataset: { conv: c.conv, unread: String(unread) },
      },
        peer ? presenceDot(chat.presence.get(peer)) : h('span', { class: 'dot group', 'aria-hidden': 'true' }),
        h('span', { class: 'conv-main' },
          h('span', { class: 'conv-title' }, title, c.kind === 'group' ? h('span', { class: 'sr-only' }, ' (group)') : null),
          h('span', { class: 'conv-preview' }, preview)),
        h('span', { class: 'conv-side' },
          last ? h('time', { datetime: new Date(last.ts).toISOString() }, formatTime(last.ts)) : null,
          unread > 0 ? h('span', { class: 'badge', 'aria-label': `${unread} unread` }, String(unread)) : null)));
  }

  for (const type of ['convs', 'presence', 'removed']) chat.addEventListener(type, render);
  dir.addEventListener('change', render);
  render();

  return {
    select(conv) {
      selected = conv;
      render();
    },
  };
}
