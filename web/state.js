// What the page knows about conversations, kept in step with the server:
// the conv list with unread counts and last messages, the messages held
// per conv (deduplicated by seq), an outbox of sends not yet acknowledged,
// typing, read positions and presence. After every reconnect it re-reads
// the conv list, `sync`s what it missed and resends the outbox with the same
// `client_msg_id`s, which the server stores once.
//
// Events: convs, messages {conv}, typing {conv}, read {conv}, presence,
// removed {conv} (no longer a member).

import { TRANSIENT } from './protocol.js';
import { randomId } from './dom.js';

export const PAGE = 30;
const SYNC_LIMIT = 200;
const SYNC_CONVS = 500;
const TYPING_SHOWN_MS = 6000;
const TYPING_SEND_EVERY_MS = 3000;
// A later seq may overtake an earlier one by a moment (docs/protocol.md):
// wait this long before asking for a gap.
const GAP_WAIT_MS = 400;
const LIST_REFRESH_MS = 30000;
// A send refused for now (busy server, rate limit) or left unanswered on
// a live connection is tried again after this pause, doubling up to the
// second.
const RETRY_FIRST_MS = 1000;
const RETRY_MAX_MS = 30000;
// A send with no answer this long is sent again (same client_msg_id): the
// backend that took it may have stopped after storing it, and the gateway
// says so only after 10 s (docs/protocol.md).
const SEND_ATTEMPT_MS = 4000;

export class Conv {
  constructor(conv, kind) {
    this.conv = conv;
    this.kind = kind; // dm | group, or null until conv.list tells
    this.groupId = null; // a group conv's group (conv.list)
    this.peer = null; // a direct conv's other user (conv.list)
    this.lastSeq = 0; // the highest seq known to be stored
    this.readSeq = 0; // this user's read position
    // Every message up to `top` is held or lies before the held window
    // (fetched with `history` when scrolled to); above it, `sync` fetches.
    this.top = 0;
    this.messages = new Map(); // seq -> message
    this.olderDone = false;
    this.loadingOlder = null;
    this.lastMsg = null;
    this.typing = new Map(); // user_id -> shown until (ms)
    this.peerRead = new Map(); // user_id -> seq they read up to
    this.gapTimer = null;
    this.typingSentAt = 0;
  }

  get unread() {
    return Math.max(0, this.lastSeq - this.readSeq);
  }

  get lowest() {
    let low = null;
    for (const seq of this.messages.keys()) if (low === null || seq < low) low = seq;
    return low;
  }

  sorted() {
    return [...this.messages.values()].sort((a, b) => a.seq - b.seq);
  }
}

export class Chat extends EventTarget {
  constructor(conn, me, directory) {
    super();
    this.conn = conn;
    this.me = me; // {user_id, username, session_id}
    this.dir = directory;
    this.convs = new Map();
    this.groups = new Map(); // group_id -> group (from group.get)
    this.presence = new Map(); // user_id -> {online, last_seen}
    this.watched = new Set();
    this.outboxKey = `oc.outbox.${me.user_id}`;
    this.outbox = this.loadOutbox();
    this.sendChain = Promise.resolve();
    this.listed = false;
    this.refreshing = null;
    conn.addEventListener('ready', (e) => this.onReady(e.detail.reconnect));
    // Nothing announces a group to the members it was created with, until
    // its first message or change: look again now and then, and whenever
    // the page comes back into view.
    setInterval(() => this.refreshIfOpen(), LIST_REFRESH_MS);
    document.addEventListener('visibilitychange', () => {
      if (document.visibilityState === 'visible') this.refreshIfOpen();
    });
    conn.addEventListener('event', (e) => this.onEvent(e.detail));
    // Presence heard before a drop may be stale by the time it is back:
    // forget it; the reconnect asks again.
    conn.addEventListener('state', (e) => {
      if (e.detail.state !== 'open' && this.presence.size) {
        this.presence.clear();
        this.emit('presence');
      }
    });
  }

  emit(type, detail = {}) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  // --- connection life -----------------------------------------------------

  async onReady(reconnect) {
    try {
      await this.refreshList();
      if (reconnect) await this.syncAll();
      this.flushOutbox();
      this.rewatch();
      this.emit('synced', { reconnect });
    } catch (e) {
      // A drop in the middle: the next `ready` does it all again.
      if (!TRANSIENT.has(e.code)) console.warn('after connecting:', e);
    }
  }

  refreshIfOpen() {
    if (this.conn.isOpen) this.refreshList().catch(() => {});
  }

  /** conv.list: new convs, unread counts; drops convs we were removed from. */
  refreshList() {
    if (!this.refreshing) {
      this.refreshing = this.doRefreshList().finally(() => {
        this.refreshing = null;
      });
    }
    return this.refreshing;
  }

  async doRefreshList() {
    const { convs } = await this.conn.request('conv.list');
    const present = new Set();
    const fresh = [];
    for (const summary of convs) {
      present.add(summary.conv);
      let c = this.convs.get(summary.conv);
      if (!c) {
        c = new Conv(summary.conv, summary.kind);
        c.top = summary.last_seq;
        this.convs.set(summary.conv, c);
        fresh.push(c);
      }
      c.kind = summary.kind;
      c.groupId = summary.group_id || null;
      c.peer = summary.peer || null;
      c.lastSeq = Math.max(c.lastSeq, summary.last_seq);
      c.readSeq = Math.max(c.readSeq, summary.read_seq);
    }
    for (const conv of [...this.convs.keys()]) {
      if (!present.has(conv)) this.forget(conv);
    }
    this.listed = true;
    this.emit('convs');
    await Promise.all([
      ...fresh.filter((c) => c.lastSeq > 0 && !c.lastMsg).map((c) => this.fetchLast(c)),
      ...[...this.convs.values()].map((c) => this.describe(c)),
    ]);
    const peers = [...this.convs.values()].map((c) => c.peer).filter(Boolean);
    this.dir.want(peers);
    this.watch(peers);
    this.emit('convs');
  }

  forget(conv) {
    const c = this.convs.get(conv);
    if (!c) return;
    clearTimeout(c.gapTimer);
    this.convs.delete(conv);
    this.emit('removed', { conv });
  }

  async fetchLast(c) {
    try {
      const { messages } = await this.conn.request('history', { conv: c.conv, limit: 1 });
      for (const m of messages) this.remember(c, m);
    } catch (e) {
      // shown without a preview
    }
  }

  /** Loads what the list shows about a conv: a group's name. */
  async describe(c) {
    const gid = c.groupId;
    if (!gid || this.groups.has(gid)) return;
    await this.loadGroup(gid).catch(() => {});
  }

  async loadGroup(gid) {
    const result = await this.conn.request('group.get', { group_id: gid });
    this.groups.set(gid, { ...result.group, group_id: gid });
    this.emit('convs');
    return result;
  }

  /** `sync` from each conv's `top` until nothing more is missing. */
  async syncAll() {
    await this.syncConvs([...this.convs.values()]);
  }

  /**
   * `sync` of `list` (at most SYNC_CONVS convs a request), again and again
   * from the highest seq held while any conv `has_more`: a reply is cut by
   * size as well as by count, and convs after a full reply get nothing.
   */
  async syncConvs(list) {
    let want = list.filter((c) => this.convs.has(c.conv));
    while (want.length) {
      const more = [];
      for (let i = 0; i < want.length; i += SYNC_CONVS) {
        const chunk = want.slice(i, i + SYNC_CONVS);
        const convs = {};
        const before = new Map();
        for (const c of chunk) {
          convs[c.conv] = c.top;
          before.set(c, c.top);
        }
        const result = await this.conn.request('sync', { convs, limit: SYNC_LIMIT });
        for (const m of result.messages) this.addMessage(m);
        const hasMore = result.has_more || {};
        for (const c of chunk) {
          if (!hasMore[c.conv] || !this.convs.has(c.conv)) continue;
          // A conv that has more but gained nothing contiguous (a hole the
          // server cannot fill) would be asked for the same page forever.
          if (c.top > before.get(c) || !result.messages.some((m) => m.conv === c.conv)) more.push(c);
        }
      }
      want = more;
    }
  }

  // --- messages ------------------------------------------------------------

  conv(conv) {
    return this.convs.get(conv);
  }

  /** Holds a stored message once; returns whether it was new. */
  addMessage(m) {
    let c = this.convs.get(m.conv);
    if (!c) {
      // A conv we did not know (someone opened a direct conv with us, or
      // added us to a group): hold it and ask the server about it.
      c = new Conv(m.conv, null);
      c.top = m.seq - 1;
      this.convs.set(m.conv, c);
      this.refreshList().catch(() => {});
    }
    if (m.from === this.me.user_id) this.settleOutbox(m.client_msg_id);
    if (c.messages.has(m.seq)) return false;
    c.messages.set(m.seq, m);
    this.remember(c, m);
    if (c.typing.delete(m.from)) this.emit('typing', { conv: c.conv });
    while (c.messages.has(c.top + 1)) c.top += 1;
    if (m.seq > c.top) this.gapSoon(c);
    this.emit('messages', { conv: c.conv });
    this.emit('convs');
    return true;
  }

  remember(c, m) {
    c.lastSeq = Math.max(c.lastSeq, m.seq);
    if (!c.lastMsg || m.seq >= c.lastMsg.seq) c.lastMsg = m;
  }

  gapSoon(c) {
    if (c.gapTimer) return;
    c.gapTimer = setTimeout(() => {
      c.gapTimer = null;
      if (this.conn.isOpen) this.syncConvs([c]).catch(() => {});
    }, GAP_WAIT_MS);
  }

  /** The newest page, or the page before the oldest held message. */
  loadOlder(conv) {
    const c = this.convs.get(conv);
    if (!c || c.olderDone) return Promise.resolve(0);
    if (c.loadingOlder) return c.loadingOlder;
    const args = { conv, limit: PAGE };
    const lowest = c.lowest;
    if (lowest !== null) args.before_seq = lowest;
    else if (c.top > 0) args.before_seq = c.top + 1;
    if (args.before_seq === 1) {
      c.olderDone = true;
      return Promise.resolve(0);
    }
    c.loadingOlder = this.conn
      .request('history', args)
      .then(({ messages, has_more: hasMore }) => {
        let added = 0;
        for (const m of messages) {
          if (!c.messages.has(m.seq)) {
            c.messages.set(m.seq, m);
            this.remember(c, m);
            added += 1;
          }
        }
        while (c.messages.has(c.top + 1)) c.top += 1;
        if (!hasMore || c.lowest === 1) c.olderDone = true;
        this.emit('messages', { conv, older: true });
        return added;
      })
      .finally(() => {
        c.loadingOlder = null;
      });
    return c.loadingOlder;
  }

  // --- sending -------------------------------------------------------------

  loadOutbox() {
    try {
      const items = JSON.parse(localStorage.getItem(this.outboxKey) || '[]');
      return items.map((item) => ({
        ...item,
        state: item.state === 'failed' ? 'failed' : 'queued',
      }));
    } catch {
      return [];
    }
  }

  saveOutbox() {
    try {
      const items = this.outbox.map(({ inflight, ...item }) => item);
      localStorage.setItem(this.outboxKey, JSON.stringify(items));
    } catch {
      // storage disabled: the outbox lasts for this page
    }
  }

  /** The sends of `conv` not yet acknowledged, oldest first. */
  pendingOf(conv) {
    return this.outbox.filter((item) => item.conv === conv);
  }

  send(conv, body) {
    const c = this.convs.get(conv);
    // The next message's typing is news again.
    if (c) c.typingSentAt = 0;
    const item = {
      client_msg_id: randomId(),
      conv,
      body,
      created: Date.now(),
      state: 'queued',
    };
    this.outbox.push(item);
    this.saveOutbox();
    this.emit('messages', { conv });
    this.enqueue(item);
  }

  /** Sends one at a time, so a conv's messages keep the order typed. */
  enqueue(item) {
    this.sendChain = this.sendChain.then(() => this.trySend(item));
  }

  async trySend(item) {
    for (let pause = RETRY_FIRST_MS; ; pause = Math.min(pause * 2, RETRY_MAX_MS)) {
      if (!this.outbox.includes(item) || item.state === 'failed') return;
      if (!this.conn.isOpen) {
        item.state = 'queued';
        this.emit('messages', { conv: item.conv });
        return;
      }
      item.state = 'sending';
      this.emit('messages', { conv: item.conv });
      try {
        const reply = await this.conn.request('send', {
          conv: item.conv,
          client_msg_id: item.client_msg_id,
          body: item.body,
        }, { timeoutMs: SEND_ATTEMPT_MS });
        this.addMessage({
          conv: reply.conv,
          seq: reply.seq,
          msg_id: reply.msg_id,
          from: this.me.user_id,
          ts: reply.ts,
          body: item.body,
          client_msg_id: item.client_msg_id,
        });
        this.settleOutbox(item.client_msg_id);
        return;
      } catch (e) {
        if (!TRANSIENT.has(e.code) && e.code !== 'rate_limited') {
          item.state = 'failed';
          item.error = e.message || e.code;
          this.saveOutbox();
          this.emit('messages', { conv: item.conv });
          return;
        }
        // Kept, and sent again with the same client_msg_id: if the first
        // one was stored, the server answers with it and stores nothing
        // new. Still connected (the server is busy, its store behind, we
        // sent too fast, or no answer came in SEND_ATTEMPT_MS): after a
        // pause that grows, holding back the
        // messages typed after it so they keep their order. Disconnected:
        // after the next reconnect.
        item.state = this.conn.isOpen ? 'retrying' : 'queued';
        this.saveOutbox();
        this.emit('messages', { conv: item.conv });
        if (!this.conn.isOpen) return;
        await new Promise((resolve) => setTimeout(resolve, pause));
      }
    }
  }

  settleOutbox(clientMsgId) {
    const i = this.outbox.findIndex((item) => item.client_msg_id === clientMsgId);
    if (i < 0) return;
    const [item] = this.outbox.splice(i, 1);
    this.saveOutbox();
    this.emit('messages', { conv: item.conv });
  }

  flushOutbox() {
    for (const item of this.outbox) {
      if (item.state !== 'failed' && this.convs.has(item.conv)) this.enqueue(item);
    }
  }

  retry(clientMsgId) {
    const item = this.outbox.find((i) => i.client_msg_id === clientMsgId);
    if (!item) return;
    item.state = 'queued';
    delete item.error;
    this.enqueue(item);
  }

  discard(clientMsgId) {
    this.settleOutbox(clientMsgId);
  }

  // --- typing, read, presence ------------------------------------------------

  typing(conv) {
    const c = this.convs.get(conv);
    const now = Date.now();
    if (!c || !this.conn.isOpen || now - c.typingSentAt < TYPING_SEND_EVERY_MS) return;
    c.typingSentAt = now;
    this.conn.request('typing', { conv }).catch(() => {});
  }

  typers(conv) {
    const c = this.convs.get(conv);
    if (!c) return [];
    const now = Date.now();
    return [...c.typing].filter(([, until]) => until > now).map(([user]) => user);
  }

  /** Marks everything held in `conv` as read. */
  markRead(conv) {
    const c = this.convs.get(conv);
    if (!c || !this.conn.isOpen) return;
    const seq = Math.max(0, ...c.messages.keys());
    if (seq <= c.readSeq) return;
    const before = c.readSeq;
    c.readSeq = seq;
    this.emit('convs');
    this.conn.request('read', { conv, seq }).catch(() => {
      // asked again the next time the view marks the conv read
      if (c.readSeq === seq) c.readSeq = before;
    });
  }

  watch(userIds) {
    const fresh = userIds.filter((u) => u && u !== this.me.user_id && !this.watched.has(u));
    if (!fresh.length) return;
    for (const u of fresh) this.watched.add(u);
    if (this.conn.isOpen) this.watchNow(fresh).catch(() => {});
  }

  rewatch() {
    if (this.watched.size) this.watchNow([...this.watched]).catch(() => {});
  }

  async watchNow(userIds) {
    for (let i = 0; i < userIds.length; i += 1000) {
      const chunk = userIds.slice(i, i + 1000);
      // Watch first, then ask: a change in between is not missed.
      await this.conn.request('presence.watch', { user_ids: chunk });
      const { presence } = await this.conn.request('presence.query', { user_ids: chunk });
      for (const p of presence) this.presence.set(p.user_id, p);
    }
    this.emit('presence');
  }

  // --- events ------------------------------------------------------------------

  onEvent(frame) {
    switch (frame.ev) {
      case 'msg':
        this.addMessage(frame);
        break;
      case 'read': {
        const c = this.convs.get(frame.conv);
        if (!c) break;
        if (frame.user_id === this.me.user_id) {
          c.readSeq = Math.max(c.readSeq, frame.seq);
        } else {
          c.peerRead.set(frame.user_id, Math.max(c.peerRead.get(frame.user_id) || 0, frame.seq));
        }
        this.emit('read', { conv: frame.conv });
        this.emit('convs');
        break;
      }
      case 'typing': {
        const c = this.convs.get(frame.conv);
        if (!c || frame.user_id === this.me.user_id) break;
        c.typing.set(frame.user_id, Date.now() + TYPING_SHOWN_MS);
        this.emit('typing', { conv: frame.conv });
        setTimeout(() => this.emit('typing', { conv: frame.conv }), TYPING_SHOWN_MS + 50);
        break;
      }
      case 'presence':
        this.presence.set(frame.user_id, frame);
        this.emit('presence');
        break;
      case 'group':
        this.onGroupEvent(frame);
        break;
      default:
        break;
    }
  }

  onGroupEvent({ group_id: gid, version, change }) {
    const known = this.groups.get(gid);
    if (known && version <= known.version) return;
    const c = this.convOfGroup(gid);
    const me = this.me.user_id;
    if (change.kind === 'members_removed' && change.user_ids.includes(me)) {
      this.groups.delete(gid);
      if (c) this.forget(c.conv);
      this.emit('convs');
      return;
    }
    // An event of a group we did not know we were in (`group.create`
    // announces nothing to those it adds): conv.list tells.
    if (!c) this.refreshList().catch(() => {});
    if (known) {
      if (change.kind === 'updated' && change.patch) Object.assign(known, change.patch);
      if (version === known.version + 1) known.version = version;
      else this.loadGroup(gid).catch(() => {});
      this.emit('convs');
    }
  }

  /** The conv of group `gid`, if it is in the list. */
  convOfGroup(gid) {
    for (const c of this.convs.values()) if (c.groupId === gid) return c;
    return null;
  }

  /** `group.leave`: the group goes from the list at once. */
  async leaveGroup(gid) {
    await this.conn.request('group.leave', { group_id: gid });
    const c = this.convOfGroup(gid);
    this.groups.delete(gid);
    if (c) this.forget(c.conv);
    this.emit('convs');
  }

  /** What the list and the chat header call a conv. */
  title(conv) {
    const c = this.convs.get(conv);
    if (c && c.groupId) {
      const g = this.groups.get(c.groupId);
      return g ? g.name : 'Group';
    }
    if (c && c.peer) return this.dir.label(c.peer);
    return c && c.kind === 'group' ? 'Group' : 'Conversation';
  }
}
