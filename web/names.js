// Who a user id is, and what a conv is about.
//
// docs/protocol.md names users by id only: no request finds a user by
// username or gives a user's name (only a lock holder comes with a
// `display_name`), and `conv.list` gives neither the group of a group conv
// nor the other user of a direct one. Until the protocol says, this module
// is the one place that works around it:
//   - names are the ones this browser was told (the name typed with a user
//     id, lock holders' display names), kept in localStorage; anyone else
//     shows as a short form of their id;
//   - a conv's group or peer is read from the conv id's form, `g:<group
//     id>` and `dm:<user id>:<user id>` (docs/internals.md).

const KEY = 'oc.names';

function load() {
  try {
    return JSON.parse(localStorage.getItem(KEY) || '{}') || {};
  } catch {
    return {};
  }
}

export class Directory extends EventTarget {
  constructor(me) {
    super();
    this.me = me; // {user_id, username}
    this.names = load();
  }

  /** What to call `userId` on screen. */
  label(userId) {
    if (userId === this.me.user_id) return this.me.username;
    return this.names[userId] || shortId(userId);
  }

  /** A name given by the user or by the server for `userId`. */
  learn(userId, name) {
    const clean = String(name || '').trim().slice(0, 64);
    if (!userId || !clean || this.names[userId] === clean || userId === this.me.user_id) return;
    this.names = { ...load(), [userId]: clean };
    try {
      localStorage.setItem(KEY, JSON.stringify(this.names));
    } catch {
      // storage full or disabled: the name lasts for this page only
    }
    this.dispatchEvent(new CustomEvent('change', { detail: { userId } }));
  }
}

/** "user 5f3a2c": the last six characters of an id. */
export function shortId(userId) {
  return `user ${String(userId).slice(-6)}`;
}

/** The group id of a group conv, else null. */
export function groupIdOf(conv) {
  return conv.startsWith('g:') ? conv.slice(2) : null;
}

/** The other user of a direct conv, else null. */
export function peerOf(conv, me) {
  if (!conv.startsWith('dm:')) return null;
  const [a, b] = conv.slice(3).split(':');
  return a === me ? b : a;
}

/** Splits a typed list of user ids (commas, spaces or new lines). */
export function parseIds(text) {
  return [...new Set(String(text).split(/[\s,;]+/).filter(Boolean))];
}
