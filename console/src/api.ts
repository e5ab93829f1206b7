/**
 * The one door to Salon's HTTP API.
 *
 * Every call carries the console token as ``Authorization: Bearer``; every
 * failure becomes an :class:`ApiError` with Salon's ``{"error": {"code",
 * "message"}}`` fields, so panels can show the server's own words in an
 * alert instead of swallowing them. A 401 on an authenticated call means the
 * token is gone or expired: the registered handler sends the operator back to
 * sign-in (auth.ts registers it, which keeps this module free of UI state).
 */

export class ApiError extends Error {
  readonly status: number;
  readonly code: string;

  constructor(status: number, code: string, message: string) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
  }
}

interface ApiHooks {
  token: () => string | null;
  unauthorized: (message: string) => void;
}

let hooks: ApiHooks = { token: () => null, unauthorized: () => undefined };

/** Called once by auth.ts: where the token comes from and what a 401 does. */
export function configureApi(next: ApiHooks): void {
  hooks = next;
}

export type Query = Record<string, string | number | boolean | null | undefined>;

export interface RequestOptions {
  query?: Query;
  /** A JSON body (serialised here). */
  json?: unknown;
  /** A raw body (a File for a PNG card import); ``contentType`` says what it is. */
  body?: BodyInit;
  contentType?: string;
  /** false: no token, and a 401 is an ordinary error (the sign-in call). */
  auth?: boolean;
  signal?: AbortSignal;
}

/** ``/v1/x`` plus the query parameters that have a value. */
export function buildUrl(path: string, query?: Query): string {
  if (!query) return path;
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) {
    if (value === undefined || value === null || value === '') continue;
    params.set(key, String(value));
  }
  const qs = params.toString();
  return qs ? `${path}?${qs}` : path;
}

async function send(method: string, path: string, options: RequestOptions = {}): Promise<Response> {
  const headers: Record<string, string> = { Accept: 'application/json' };
  const auth = options.auth !== false;
  const token = auth ? hooks.token() : null;
  if (token) headers.Authorization = `Bearer ${token}`;
  let body: BodyInit | undefined;
  if (options.json !== undefined) {
    headers['Content-Type'] = 'application/json';
    body = JSON.stringify(options.json);
  } else if (options.body !== undefined) {
    body = options.body;
    if (options.contentType) headers['Content-Type'] = options.contentType;
  }
  let response: Response;
  try {
    response = await fetch(buildUrl(path, options.query), {
      method,
      headers,
      body,
      signal: options.signal,
      credentials: 'same-origin',
    });
  } catch (exc) {
    if (exc instanceof DOMException && exc.name === 'AbortError') throw exc;
    throw new ApiError(0, 'network_error', 'The server could not be reached. Check your connection and try again.');
  }
  if (response.ok) return response;
  const error = await readError(response);
  if (response.status === 401 && auth) {
    hooks.unauthorized(error.message || 'Your session has ended. Please sign in again.');
  }
  throw error;
}

async function readError(response: Response): Promise<ApiError> {
  let code = `http_${response.status}`;
  let message = response.statusText || `Request failed (HTTP ${response.status})`;
  try {
    const data: unknown = await response.json();
    const err = (data as { error?: { code?: unknown; message?: unknown } } | null)?.error;
    if (err && typeof err.code === 'string') code = err.code;
    if (err && typeof err.message === 'string') message = err.message;
  } catch {
    // Not JSON (a proxy's error page): the status line is all there is.
  }
  return new ApiError(response.status, code, message);
}

async function jsonOf<T>(response: Response): Promise<T> {
  if (response.status === 204) return undefined as T;
  const text = await response.text();
  return (text ? JSON.parse(text) : undefined) as T;
}

export const api = {
  async get<T>(path: string, query?: Query, signal?: AbortSignal): Promise<T> {
    return jsonOf<T>(await send('GET', path, { query, signal }));
  },
  async post<T>(path: string, json?: unknown, options: RequestOptions = {}): Promise<T> {
    return jsonOf<T>(await send('POST', path, { ...options, json }));
  },
  async patch<T>(path: string, json: unknown): Promise<T> {
    return jsonOf<T>(await send('PATCH', path, { json }));
  },
  async put<T>(path: string, json: unknown): Promise<T> {
    return jsonOf<T>(await send('PUT', path, { json }));
  },
  async del<T>(path: string, json?: unknown): Promise<T> {
    return jsonOf<T>(await send('DELETE', path, { json }));
  },
  /** A raw body (e.g. PNG bytes) with its own content type. */
  async postRaw<T>(path: string, body: BodyInit, contentType: string): Promise<T> {
    return jsonOf<T>(await send('POST', path, { body, contentType }));
  },
  /** A file the server sends (a card export), fetched with the token. */
  async blob(path: string, query?: Query): Promise<Blob> {
    return (await send('GET', path, { query })).blob();
  },
  /** The sign-in call: no token, and a 401 is just "wrong credentials". */
  async anonymous<T>(method: string, path: string, json?: unknown): Promise<T> {
    return jsonOf<T>(await send(method, path, { json, auth: false }));
  },
};

/** What to show for any thrown value: the API's message, or the error's. */
export function errorMessage(error: unknown): string {
  if (error instanceof ApiError) return error.message;
  if (error instanceof Error) return error.message;
  return String(error);
}

/** Is this the server saying a feature is switched off (``*_disabled``)? */
export function isDisabled(error: unknown): error is ApiError {
  return error instanceof ApiError && error.status === 404 && error.code.endsWith('_disabled');
}

/** Percent-encode one path segment (ids are usually safe, user ids may not be). */
export function seg(value: string): string {
  return encodeURIComponent(value);
}
