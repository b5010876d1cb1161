// Small DOM helpers. Text always goes in as text (never as HTML), so
// nothing a user typed can become markup.

/**
 * h('button', {class: 'x', onclick: f, disabled: true}, 'text', child...)
 * Attributes: `class`, `dataset` (object), `on<event>` (listener), booleans
 * (set when true, left out when false), anything else as an attribute.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') el.className = value;
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2), value);
    } else if (key === 'value') el.value = value;
    else if (value === true) el.setAttribute(key, '');
    else el.setAttribute(key, String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else if (child instanceof Node) el.appendChild(child);
    else el.appendChild(document.createTextNode(String(child)));
  }
}

/**
 * Adds each `[target, type, listener]` and returns the function that
 * removes them all again, for a view's `destroy`.
 */
export function listen(bindings) {
  for (const [target, type, listener] of bindings) target.addEventListener(type, listener);
  return () => {
    for (const [target, type, listener] of bindings) target.removeEventListener(type, listener);
  };
}

/** Replaces the children of `el`. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** "14:05", or "3 Mar 14:05" for another day. */
export function formatTime(ms) {
  const d = new Date(ms);
  const time = d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  const today = new Date();
  if (d.toDateString() === today.toDateString()) return time;
  return `${d.toLocaleDateString([], { day: 'numeric', month: 'short' })} ${time}`;
}

/** A random id of 128 bits in hex (also outside secure contexts). */
export function randomId() {
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

/** A presence dot with its meaning in words for screen readers. */
export function presenceDot(presence) {
  const online = Boolean(presence && presence.online);
  const label = online ? 'online' : 'offline';
  return h('span', { class: `dot ${label}`, role: 'img', 'aria-label': label, title: label });
}

/**
 * Brings `parent`'s children in line with `items` ({key, sig, build}) in
 * place: an element whose key and sig are unchanged stays where it is, so
 * live regions announce only what is new, and scroll positions hold.
 */
export function reconcile(parent, items) {
  const existing = new Map();
  for (const el of [...parent.children]) {
    if (el.dataset.key) existing.set(el.dataset.key, el);
    else el.remove();
  }
  const wanted = new Set(items.map((item) => item.key));
  for (const [key, el] of existing) {
    if (!wanted.has(key)) {
      el.remove();
      existing.delete(key);
    }
  }
  const make = (item) => {
    const el = item.build();
    el.dataset.key = item.key;
    el.dataset.sig = item.sig;
    return el;
  };
  let cursor = parent.firstElementChild;
  for (const item of items) {
    let el = existing.get(item.key);
    if (el && el.dataset.sig !== item.sig) {
      const fresh = make(item);
      if (cursor === el) cursor = fresh;
      el.replaceWith(fresh);
      el = fresh;
    } else if (!el) {
      el = make(item);
    }
    if (el === cursor) cursor = cursor.nextElementSibling;
    else parent.insertBefore(el, cursor);
  }
}
