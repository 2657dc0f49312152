// The admin API client. The admin token lives in sessionStorage (gone with the tab) and goes
// out as a Bearer header on every call: no cookie, so no cross-site request can use it.

const TOKEN = 'credentialflow.admin-token';

export const session = {
  get token() { return sessionStorage.getItem(TOKEN); },
  set(token) { sessionStorage.setItem(TOKEN, token); },
  clear() { sessionStorage.removeItem(TOKEN); },
};

/** An answer other than 2xx, with the API's error message. */
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** Listeners told when the API refuses the token (the app signs out). */
export const onUnauthorized = new Set();

/** Calls the admin API: `{data, headers}`, or throws an ApiError. */
export async function api(method, path, body, token = session.token) {
  const headers = { authorization: `Bearer ${token ?? ''}` };
  if (body !== undefined) headers['content-type'] = 'application/json';
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: 'no-store',
    credentials: 'omit',
  });
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (!response.ok) {
    const message = data?.error?.message ?? `${response.status} ${response.statusText}`;
    if (response.status === 401) onUnauthorized.forEach((f) => f(message));
    throw new ApiError(response.status, message);
  }
  return { data, headers: response.headers };
}

export const get = (path) => api('GET', path).then((r) => r.data);
