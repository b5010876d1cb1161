// The WebSocket side of docs/protocol.md: one logical connection that
// authenticates, matches replies to requests by id, keeps itself alive
// with `ping`, and reconnects with backoff whenever the socket drops.
//
// Events (an EventTarget):
//   state   {state: 'connecting'|'open'|'waiting'|'stopped', retryInMs, attempt, closeCode}
//   ready   {auth, reconnect}  after every successful `auth`; `reconnect`
//           is true from the second one on: time to `sync`.
//   event   {frame}            a server event (`msg`, `read`, `lock`, ...)
//   unauthenticated            the token was refused or the session revoked
//                              (4001): no reconnect; log in again.

export class ProtocolError extends Error {
  constructor(code, message, details = {}) {
    super(message || code);
    this.code = code;
    this.details = details;
  }
}

/** Error codes of requests that never reached an answer: worth retrying. */
export const TRANSIENT = new Set(['disconnected', 'offline', 'timeout', 'unavailable']);

const REQUEST_TIMEOUT_MS = 15000;
const BACKOFF_FIRST_MS = 500;
const BACKOFF_MAX_MS = 15000;
// How long a ping may stay unanswered before the socket counts as dead.
const PING_DEADLINE_MS = 10000;

export class Connection extends EventTarget {
  constructor(url, token) {
    super();
    this.url = url;
    this.token = token;
    this.ws = null;
    this.state = 'stopped';
    this.nextId = 1;
    this.pending = new Map(); // id -> {resolve, reject, timer}
    this.attempt = 0;
    this.authCount = 0;
    this.retryTimer = null;
    this.pingTimer = null;
    this.auth = null;
    this.stopped = true;
    this.onOnline = () => {
      if (this.state === 'waiting') this.connectNow();
    };
  }

  start() {
    if (!this.stopped) return;
    this.stopped = false;
    window.addEventListener('online', this.onOnline);
    this.open();
  }

  stop() {
    this.stopped = true;
    window.removeEventListener('online', this.onOnline);
    clearTimeout(this.retryTimer);
    this.stopPings();
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      ws.close(1000);
    }
    this.failPending('disconnected', 'The connection was closed.');
    this.setState('stopped');
  }

  /** True between a successful `auth` and the next drop. */
  get isOpen() {
    return this.state === 'open';
  }

  /**
   * Sends `{id, op, ...args}` and resolves with the reply's fields (without
   * `id` and `ok`); rejects with a ProtocolError carrying the server's
   * `error.code`, or `offline`, `disconnected`, `timeout` when no reply can
   * come.
   */
  request(op, args = {}, { timeoutMs = REQUEST_TIMEOUT_MS } = {}) {
    if (!this.isOpen) {
      return Promise.reject(new ProtocolError('offline', 'Not connected right now.'));
    }
    return this.send(this.ws, op, args, timeoutMs);
  }

  /** Best effort, no reply awaited: for `lock.release` when the tab goes away. */
  fireAndForget(op, args = {}) {
    if (!this.isOpen) return;
    try {
      this.ws.send(JSON.stringify({ id: this.nextId++, op, ...args }));
    } catch {
      // the socket is going away; its close releases what it held anyway
    }
  }

  /** Skips the backoff wait (a "Reconnect now" button). */
  connectNow() {
    if (this.stopped || this.state !== 'waiting') return;
    clearTimeout(this.retryTimer);
    this.open();
  }

  // --- internals ---------------------------------------------------------

  send(ws, op, args, timeoutMs) {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new ProtocolError('timeout', `No answer to ${op} in time.`));
      }, timeoutMs);
      this.pending.set(id, { resolve, reject, timer, ws });
      try {
        ws.send(JSON.stringify({ id, op, ...args }));
      } catch (e) {
        clearTimeout(timer);
        this.pending.delete(id);
        reject(new ProtocolError('disconnected', 'The connection dropped.'));
      }
    });
  }

  setState(state, extra = {}) {
    this.state = state;
    this.dispatchEvent(new CustomEvent('state', { detail: { state, attempt: this.attempt, ...extra } }));
  }

  open() {
    if (this.stopped) return;
    this.setState('connecting');
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch (e) {
      this.scheduleRetry(null);
      return;
    }
    this.ws = ws;
    ws.onopen = () => this.authenticate(ws);
    ws.onmessage = (e) => this.onFrame(ws, e.data);
    ws.onclose = (e) => this.onClose(ws, e.code);
    ws.onerror = () => {
      // onclose follows and decides what to do
    };
  }

  async authenticate(ws) {
    try {
      const auth = await this.send(ws, 'auth', { token: this.token }, REQUEST_TIMEOUT_MS);
      if (ws !== this.ws) return;
      this.auth = auth;
      this.attempt = 0;
      this.authCount += 1;
      this.setState('open');
      this.startPings(ws, auth.heartbeat_s);
      this.dispatchEvent(
        new CustomEvent('ready', { detail: { auth, reconnect: this.authCount > 1 } }),
      );
    } catch (e) {
      if (ws !== this.ws) return;
      if (e.code === 'unauthenticated') {
        this.stopped = true;
        this.dispatchEvent(new CustomEvent('unauthenticated'));
        ws.close(1000);
        return;
      }
      // unavailable, timeout: drop this socket and try again later
      ws.close(1000);
    }
  }

  onFrame(ws, data) {
    if (ws !== this.ws) return;
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return;
    }
    this.lastFrameAt = Date.now();
    if (frame && frame.ev) {
      this.dispatchEvent(new CustomEvent('event', { detail: frame }));
      return;
    }
    const waiting = frame && frame.id != null ? this.pending.get(frame.id) : undefined;
    if (!waiting) return;
    this.pending.delete(frame.id);
    clearTimeout(waiting.timer);
    if (frame.ok) {
      const { id, ok, ...result } = frame;
      waiting.resolve(result);
    } else {
      const { code, message, ...details } = frame.error || {};
      waiting.reject(new ProtocolError(code || 'internal', message, details));
    }
  }

  onClose(ws, code) {
    if (ws !== this.ws) return;
    this.ws = null;
    this.stopPings();
    this.failPending('disconnected', 'The connection dropped.');
    if (this.stopped) return;
    if (code === 4001) {
      this.stopped = true;
      this.setState('stopped', { closeCode: code });
      this.dispatchEvent(new CustomEvent('unauthenticated'));
      return;
    }
    this.scheduleRetry(code);
  }

  scheduleRetry(closeCode) {
    // 1012: the gateway is restarting or draining; come back soon. Else
    // exponential backoff with jitter, so a restarted gateway is not hit by
    // every client in the same instant.
    const base =
      closeCode === 1012 && this.attempt === 0
        ? 250
        : Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** this.attempt);
    const retryInMs = Math.round(base * (0.8 + Math.random() * 0.4));
    this.attempt += 1;
    this.setState('waiting', { retryInMs, closeCode });
    this.retryTimer = setTimeout(() => this.open(), retryInMs);
  }

  failPending(code, message) {
    for (const [id, waiting] of this.pending) {
      clearTimeout(waiting.timer);
      waiting.reject(new ProtocolError(code, message));
      this.pending.delete(id);
    }
  }

  startPings(ws, heartbeatS) {
    this.stopPings();
    // At least every heartbeat_s (docs/protocol.md); half of it leaves room.
    const everyMs = Math.max(1000, Math.min(25000, (heartbeatS || 30) * 500));
    this.pingTimer = setInterval(async () => {
      if (ws !== this.ws) return;
      try {
        await this.send(ws, 'ping', {}, PING_DEADLINE_MS);
      } catch (e) {
        // No answer: the socket is dead even if the browser has not noticed
        // (a silent network loss). Closing it starts the reconnect.
        if (e.code === 'timeout' && ws === this.ws) {
          ws.close(4000);
          this.onClose(ws, 1006);
        }
      }
    }, everyMs);
  }

  stopPings() {
    clearInterval(this.pingTimer);
    this.pingTimer = null;
  }
}
