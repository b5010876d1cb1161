// Who a user id is: names from the server, kept in memory for this page.
//
// Views ask `label(userId)` while rendering; an id not yet known shows as
// a short form of itself and is fetched with `users.get` (batched, at most
// 1000 ids a request), after which `change` is dispatched and the views
// render again. `lookup(username)` finds a user by username
// (`user.lookup`), for opening a direct conversation or adding members.

const BATCH = 1000;
// A connection may have only so many requests awaiting their reply.
const LOOKUPS_AT_ONCE = 16;

export class Directory extends EventTarget {
  constructor(conn, me) {
    super();
    this.conn = conn;
    this.me = me; // {user_id, username}
    this.users = new Map(); // user_id -> {user_id, username, display_name}
    this.asked = new Set(); // ids asked for (or being asked for)
    this.queue = new Set(); // ids to ask for at the next flush
    this.flushTimer = null;
    // Names asked for while offline, or lost with a drop: asked again.
    conn.addEventListener('ready', () => this.retry());
    // Names of an earlier version of this page, kept in the browser.
    try {
      localStorage.removeItem('oc.names');
    } catch {
      // storage disabled: nothing was kept
    }
    this.want([me.user_id]);
  }

  /** What to call `userId` on screen: the display name, else the username. */
  label(userId) {
    const user = this.users.get(userId);
    if (user) return user.display_name || user.username;
    if (userId === this.me.user_id) return this.me.username;
    this.want([userId]);
    return shortId(userId);
  }

  /** The username of `userId`, if known. */
  username(userId) {
    const user = this.users.get(userId);
    return user ? user.username : userId === this.me.user_id ? this.me.username : null;
  }

  /** Fetches the names of `userIds` not known yet (soon, in one batch). */
  want(userIds) {
    for (const id of userIds) {
      if (id && !this.users.has(id) && !this.asked.has(id)) this.queue.add(id);
    }
    if (this.queue.size && !this.flushTimer) {
      this.flushTimer = setTimeout(() => this.flush(), 0);
    }
  }

  async flush() {
    this.flushTimer = null;
    if (!this.conn.isOpen) return; // asked again on `ready`
    const ids = [...this.queue];
    this.queue.clear();
    for (const id of ids) this.asked.add(id);
    for (let i = 0; i < ids.length; i += BATCH) {
      const chunk = ids.slice(i, i + BATCH);
      try {
        const { users } = await this.conn.request('users.get', { user_ids: chunk });
        this.add(users);
      } catch (e) {
        // Unknown ids are left out of the reply and stay asked; a refused
        // or lost request is asked again after the next `ready`.
        for (const id of chunk) this.asked.delete(id);
        this.failed = true;
      }
    }
  }

  retry() {
    for (const id of this.queue) this.asked.delete(id);
    if (this.failed || this.queue.size) {
      this.failed = false;
      this.flushTimer = this.flushTimer || setTimeout(() => this.flush(), 0);
    }
  }

  /** Holds what the server said about some users; `change` if anything is new. */
  add(users) {
    let changed = false;
    for (const u of users) {
      if (!u || !u.user_id) continue;
      const known = this.users.get(u.user_id);
      if (known && known.username === u.username && known.display_name === u.display_name) continue;
      this.users.set(u.user_id, { user_id: u.user_id, username: u.username, display_name: u.display_name });
      changed = true;
    }
    if (changed) this.dispatchEvent(new CustomEvent('change'));
  }

  /**
   * The user named `username` (`user.lookup`), or null if nobody is;
   * other errors are thrown.
   */
  async lookup(username) {
    const name = String(username).trim().replace(/^@/, '').toLowerCase();
    for (const u of this.users.values()) if (u.username === name) return u;
    try {
      const user = await this.conn.request('user.lookup', { username: name });
      this.add([user]);
      return user;
    } catch (e) {
      if (e.code === 'not_found') return null;
      throw e;
    }
  }
}

/** "user 5f3a2c": the last six characters of an id. */
export function shortId(userId) {
  return `user ${String(userId).slice(-6)}`;
}

/** Splits a typed list of usernames (commas, spaces or new lines). */
export function parseNames(text) {
  return [...new Set(String(text).split(/[\s,;]+/).map((s) => s.replace(/^@/, '').toLowerCase()).filter(Boolean))];
}

/**
 * The users named in `names` (`user.lookup` each): `{users}`, or
 * `{unknown}` listing the names nobody has.
 */
export async function lookupAll(dir, names) {
  // A few at a time: a connection may have only so many requests awaiting.
  const found = [];
  for (let i = 0; i < names.length; i += LOOKUPS_AT_ONCE) {
    found.push(...(await Promise.all(names.slice(i, i + LOOKUPS_AT_ONCE).map((name) => dir.lookup(name)))));
  }
  const unknown = names.filter((_, i) => !found[i]);
  return unknown.length ? { unknown } : { users: found };
}

/** "No user is called @x." / "No users are called @x, @y." */
export function unknownNames(unknown) {
  const list = unknown.map((n) => `@${n}`).join(', ');
  return unknown.length === 1 ? `No user is called ${list}.` : `No users are called ${list}.`;
}
