// The HTTP API of docs/protocol.md section 1: register, login, logout,
// served by the backend on the page's own origin (nginx routes /v1/ there
// too), and /config.json, which says where the gateway's WebSocket is.

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message || code);
    this.status = status;
    this.code = code;
  }
}

async function call(method, path, body, token) {
  const headers = {};
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (token) headers.Authorization = `Bearer ${token}`;
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: 'omit',
    });
  } catch (e) {
    throw new ApiError(0, 'unavailable', 'The server cannot be reached. Try again in a moment.');
  }
  if (response.status === 204) return null;
  let json = null;
  try {
    json = await response.json();
  } catch {
    // not JSON: handled below
  }
  if (!response.ok) {
    const error = (json && json.error) || {};
    throw new ApiError(response.status, error.code || 'internal', error.message || response.statusText);
  }
  return json;
}

/** `201 {user_id}`; 409 `username_taken`. */
export function register(username, password, displayName) {
  const body = { username, password };
  if (displayName) body.display_name = displayName;
  return call('POST', '/v1/auth/register', body);
}

/** `{token, user_id, session_id, expires_at}`; 401 `bad_credentials`. */
export function login(username, password) {
  return call('POST', '/v1/auth/login', { username, password, device: 'web' });
}

export function logout(token) {
  return call('POST', '/v1/auth/logout', undefined, token);
}

/**
 * The WebSocket URL to use: `ws_url` of /config.json, a `ws(s)://` URL or
 * a path on this page's host (`/ws` by default).
 */
export async function gatewayUrl() {
  const config = await call('GET', '/config.json');
  const configured = (config && config.ws_url) || '/ws';
  if (/^wss?:\/\//.test(configured)) return configured;
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${location.host}${configured}`;
}
