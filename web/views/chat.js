// One conversation: its messages (older ones load when scrolled to the
// top), live messages, the composer, typing, read receipts, presence.

import { h, formatTime, listen, presenceDot, reconcile } from '../dom.js';
import { PAGE } from '../state.js';

const MAX_BODY_BYTES = 16 * 1024;
const NEAR_TOP_PX = 80;
const NEAR_BOTTOM_PX = 40;

export function chatView(main, { conn, chat, dir, me }, conv) {
  // A direct conv's other user, a group conv's group: from conv.list,
  // which may answer after this view opens (a reload on a chat's URL).
  let peer = null;
  let gid = null;
  const title = h('h1', { id: 'chat-title' });
  const dot = h('span', { class: 'head-dot' });
  const headLinks = h('span', { class: 'head-links' });
  const olderButton = h('button', { type: 'button', class: 'small older', id: 'load-older' }, 'Load older messages');
  const olderState = h('p', { class: 'muted older-state', id: 'older-state', role: 'status' });
  const log = h('ol', { class: 'messages', id: 'messages', role: 'log', 'aria-label': 'Messages' });
  const scroller = h('div', { class: 'scroller', id: 'scroller', tabindex: '0', 'aria-label': 'Message history' },
    h('div', { class: 'older-bar' }, olderButton, olderState), log);
  const typingLine = h('p', { class: 'typing', id: 'typing', 'aria-live': 'polite' });
  const input = h('textarea', {
    id: 'composer',
    rows: 1,
    placeholder: 'Write a message',
    'aria-label': 'Message',
    'aria-describedby': 'composer-hint',
  });
  const sendButton = h('button', { type: 'submit', class: 'primary', id: 'send' }, 'Send');
  const formError = h('p', { class: 'error', role: 'alert', id: 'composer-error' });
  const form = h('form', { class: 'composer' },
    input, sendButton,
    h('small', { id: 'composer-hint', class: 'sr-only' }, 'Enter sends; Shift+Enter starts a new line.'),
    formError);

  main.replaceChildren(
    h('div', { class: 'pane-head' },
      h('a', { class: 'back', href: '#/' }, h('span', { 'aria-hidden': 'true' }, '← '), 'Conversations'),
      h('div', { class: 'chat-title' }, dot, title),
      headLinks),
    scroller,
    typingLine,
    form,
  );

  let firstRender = true;
  let stickToBottom = true;

  function renderHead() {
    const c = chat.conv(conv);
    if (c && c.peer && c.peer !== peer) {
      peer = c.peer;
      chat.watch([peer]);
    }
    if (c && c.groupId && c.groupId !== gid) {
      gid = c.groupId;
      headLinks.replaceChildren(
        h('a', { class: 'button small', href: `#/g/${encodeURIComponent(gid)}`, id: 'open-settings' }, 'Group settings'));
      // senders' names go on the messages of a group
      if (log.querySelector('.msg')) renderMessages();
    }
    title.textContent = chat.title(conv);
    document.title = `${title.textContent} – OceanChat`;
    if (peer) {
      const p = chat.presence.get(peer);
      dot.replaceChildren(presenceDot(p), h('span', { class: 'presence-text', id: 'peer-presence' }, p && p.online ? 'online' : 'offline'));
    }
  }

  function messageItem(m, receipt) {
    const mine = m.from === me.user_id;
    return h('li', {
      class: `msg ${mine ? 'mine' : 'theirs'}`,
      dataset: { seq: String(m.seq), clientMsgId: m.client_msg_id, from: m.from },
    },
      h('div', { class: 'bubble' },
        !mine && gid ? h('span', { class: 'from' }, dir.label(m.from)) : null,
        h('span', { class: 'sr-only' }, mine ? 'You: ' : `${dir.label(m.from)}: `),
        h('span', { class: 'body' }, m.body),
        h('span', { class: 'meta' },
          h('time', { datetime: new Date(m.ts).toISOString() }, formatTime(m.ts)),
          receipt ? h('span', { class: 'receipt', dataset: { receipt: 'seen' } }, receipt) : null)));
  }

  function pendingItem(item) {
    const text = {
      queued: 'Waiting to be sent…',
      retrying: 'The server is busy; trying again…',
      sending: 'Sending…',
      failed: `Not sent: ${item.error || 'refused'}`,
    }[item.state];
    return h('li', { class: `msg mine pending ${item.state}`, dataset: { clientMsgId: item.client_msg_id, pending: item.state } },
      h('div', { class: 'bubble' },
        h('span', { class: 'sr-only' }, 'You: '),
        h('span', { class: 'body' }, item.body),
        h('span', { class: 'meta' }, text,
          item.state === 'failed'
            ? [
                ' ',
                h('button', { type: 'button', class: 'small', onclick: () => chat.retry(item.client_msg_id) }, 'Retry'),
                ' ',
                h('button', { type: 'button', class: 'small', onclick: () => chat.discard(item.client_msg_id) }, 'Discard'),
              ]
            : null)));
  }

  /** The seq of my latest message that others have read, and the words for it. */
  function receiptFor(c, messages) {
    const reads = peer ? [c.peerRead.get(peer) || 0] : [...c.peerRead.values()];
    if (!reads.length) return null;
    for (let i = messages.length - 1; i >= 0; i -= 1) {
      const m = messages[i];
      if (m.from !== me.user_id) continue;
      const readers = reads.filter((seq) => seq >= m.seq).length;
      if (!readers) continue;
      return { seq: m.seq, text: peer ? 'Seen' : `Seen by ${readers}` };
    }
    return null;
  }

  function renderMessages({ older = false } = {}) {
    const c = chat.conv(conv);
    if (!c) {
      log.replaceChildren(h('li', { class: 'muted' }, chat.listed ? 'This conversation is not in your list.' : 'Loading…'));
      return;
    }
    const fromBottom = scroller.scrollHeight - scroller.scrollTop;
    const messages = c.sorted();
    const stored = new Set(messages.filter((m) => m.from === me.user_id).map((m) => m.client_msg_id));
    const pending = chat.pendingOf(conv).filter((item) => !stored.has(item.client_msg_id));
    const receipt = receiptFor(c, messages);
    const muted = log.querySelector(':scope > .muted');
    if (muted) muted.remove();
    reconcile(log, [
      ...messages.map((m) => {
        const seen = receipt && receipt.seq === m.seq ? receipt.text : '';
        return {
          key: `s${m.seq}`,
          sig: `${seen}|${dir.label(m.from)}|${gid ? 'group' : ''}`,
          build: () => messageItem(m, seen),
        };
      }),
      ...pending.map((item) => ({
        key: `p${item.client_msg_id}`,
        sig: `${item.state}|${item.error || ''}`,
        build: () => pendingItem(item),
      })),
    ]);
    olderButton.hidden = c.olderDone;
    olderState.textContent = c.olderDone && messages.length ? 'This is the start of the conversation.' : '';
    if (older) {
      scroller.scrollTop = scroller.scrollHeight - fromBottom;
    } else if (stickToBottom || firstRender) {
      scroller.scrollTop = scroller.scrollHeight;
    }
    firstRender = false;
    markRead();
  }

  function renderTyping() {
    const typers = chat.typers(conv).map((u) => dir.label(u));
    typingLine.textContent = typers.length
      ? `${typers.join(', ')} ${typers.length === 1 ? 'is' : 'are'} typing…`
      : '';
  }

  function markRead() {
    if (document.visibilityState === 'visible' && stickToBottom) chat.markRead(conv);
  }

  async function loadOlder() {
    const c = chat.conv(conv);
    if (!c || c.olderDone || c.loadingOlder || !conn.isOpen) return;
    olderState.textContent = 'Loading older messages…';
    try {
      await chat.loadOlder(conv);
      olderState.textContent = '';
    } catch (e) {
      olderState.textContent = 'Older messages could not be loaded; scroll up to try again.';
    }
  }

  /** Loads pages until the view is filled (or the start is reached). */
  async function fill() {
    const c = chat.conv(conv);
    if (!c || !conn.isOpen) return;
    if (c.messages.size < PAGE && !c.olderDone) await loadOlder();
    const again = chat.conv(conv);
    if (again && !again.olderDone && scroller.scrollHeight <= scroller.clientHeight && again.messages.size) {
      await loadOlder();
    }
  }

  scroller.addEventListener('scroll', () => {
    stickToBottom = scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < NEAR_BOTTOM_PX;
    if (scroller.scrollTop < NEAR_TOP_PX) loadOlder();
    if (stickToBottom) markRead();
  });
  olderButton.addEventListener('click', loadOlder);

  input.addEventListener('input', () => {
    if (input.value.trim()) chat.typing(conv);
    formError.textContent = '';
  });
  input.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      form.requestSubmit();
    }
  });
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const body = input.value.trim();
    if (!body) return;
    if (new TextEncoder().encode(body).length > MAX_BODY_BYTES) {
      formError.textContent = 'That message is too long (16 KiB at most).';
      return;
    }
    input.value = '';
    stickToBottom = true;
    chat.send(conv, body);
    input.focus();
  });

  const onMessages = (e) => {
    if (e.detail.conv === conv) renderMessages({ older: Boolean(e.detail.older) });
  };
  const onRead = (e) => {
    if (e.detail.conv === conv) renderMessages();
  };
  const onTyping = (e) => {
    if (e.detail.conv === conv) renderTyping();
  };
  const onConvs = () => {
    renderHead();
    if (!log.querySelector('.msg')) {
      renderMessages();
      fill();
    }
  };
  const onPresence = () => renderHead();
  const onReady = () => fill();
  const onVisible = () => markRead();
  const onRemoved = (e) => {
    if (e.detail.conv === conv) {
      log.replaceChildren(h('li', { class: 'muted' }, 'You are no longer a member of this conversation.'));
      form.hidden = true;
    }
  };

  const unlisten = listen([
    [chat, 'messages', onMessages],
    [chat, 'read', onRead],
    [chat, 'typing', onTyping],
    [chat, 'convs', onConvs],
    [chat, 'presence', onPresence],
    [chat, 'removed', onRemoved],
    [dir, 'change', onConvs],
    [conn, 'ready', onReady],
    [document, 'visibilitychange', onVisible],
  ]);

  renderHead();
  renderMessages();
  renderTyping();
  fill();
  input.focus();

  return {
    destroy() {
      unlisten();
      document.title = 'OceanChat';
    },
  };
}
