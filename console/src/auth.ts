/**
 * Signing in and out, and who is signed in.
 *
 * The console token lives in sessionStorage (``salon.console.token``): it
 * survives a reload of the tab but not closing it, and other tabs do not
 * share it. Every request sends it (api.ts); a 401 anywhere signs the
 * operator out with the server's message.
 */
import { api, ApiError, configureApi, errorMessage } from './api';
import { applyBranding, loadBranding } from './branding';
import { createStore } from './store';
import type { CredentialKind, LoginResponse, MeResponse, Operator, Role, Tenant } from './types';

export const TOKEN_KEY = 'salon.console.token';
const EXPIRES_KEY = 'salon.console.expires_at';

export interface Session {
  token: string;
  expiresAt: number | null;
  kind: CredentialKind;
  role: Role;
  /** Display name: the operator's name, or the API key's. */
  name: string | null;
  /** The operator account's id (null for an API key). */
  operatorId: string | null;
  /** The full account, when the sign-in answer had it (not after a reload). */
  operator: Operator | null;
  tenant: Tenant;
}

export type AuthState =
  | { status: 'checking' }
  | { status: 'signed-out'; message?: string }
  | { status: 'signed-in'; session: Session };

export const authStore = createStore<AuthState>({ status: 'checking' });

export type Credentials = { email: string; password: string } | { api_key: string };

let expiryTimer: ReturnType<typeof setTimeout> | undefined;

function storedToken(): string | null {
  try {
    return sessionStorage.getItem(TOKEN_KEY);
  } catch {
    return null; // storage blocked: the operator signs in each time
  }
}

function remember(token: string | null, expiresAt: number | null): void {
  try {
    if (token) {
      sessionStorage.setItem(TOKEN_KEY, token);
      if (expiresAt) sessionStorage.setItem(EXPIRES_KEY, String(expiresAt));
      else sessionStorage.removeItem(EXPIRES_KEY);
    } else {
      sessionStorage.removeItem(TOKEN_KEY);
      sessionStorage.removeItem(EXPIRES_KEY);
    }
  } catch {
    // Storage blocked: the session lasts as long as the page.
  }
}

function currentToken(): string | null {
  const state = authStore.get();
  if (state.status === 'signed-in') return state.session.token;
  return storedToken();
}

configureApi({
  token: currentToken,
  unauthorized: (message) => signOut(`Signed out: ${message}`),
});

function scheduleExpiry(expiresAt: number | null): void {
  clearTimeout(expiryTimer);
  if (!expiresAt) return;
  const ms = expiresAt * 1000 - Date.now();
  // setTimeout cannot wait longer than ~24.8 days; such a token outlives the tab anyway.
  if (ms > 2 ** 31 - 1) return;
  expiryTimer = setTimeout(() => signOut('Your session expired. Please sign in again.'), Math.max(0, ms));
}

function establish(token: string, expiresAt: number | null, me: MeResponse): Session {
  const operator = me.operator ?? null;
  const session: Session = {
    token,
    expiresAt,
    kind: me.kind,
    role: me.role,
    name: me.name ?? operator?.name ?? null,
    operatorId: me.operator_id ?? operator?.id ?? null,
    operator,
    tenant: me.tenant,
  };
  remember(token, expiresAt);
  scheduleExpiry(expiresAt);
  authStore.set({ status: 'signed-in', session });
  return session;
}

async function applyTenantBranding(me: MeResponse): Promise<void> {
  if (me.branding) {
    applyBranding(me.branding);
    return;
  }
  try {
    await loadBranding();
  } catch {
    // Branding is cosmetic; the defaults stay. (Real API errors surface in Settings.)
  }
}

/** Sign in with an operator account or a tenant API key (``POST /v1/console/login``). */
export async function signIn(credentials: Credentials): Promise<Session> {
  const login = await api.anonymous<LoginResponse>('POST', '/v1/console/login', credentials);
  remember(login.token, login.expires_at ?? null);
  let me: MeResponse = {
    tenant: login.tenant,
    role: login.role,
    kind: login.kind,
    name: login.name,
    operator_id: login.operator_id,
    operator: login.operator,
    branding: null,
  };
  try {
    const fresh = await api.get<MeResponse>('/v1/console/me');
    me = { ...me, ...fresh, operator: fresh.operator ?? login.operator };
  } catch (exc) {
    if (exc instanceof ApiError && exc.status === 401) throw exc;
    // The login answer already says who this is; /me only adds the branding.
  }
  const session = establish(login.token, login.expires_at ?? null, me);
  await applyTenantBranding(me);
  return session;
}

/** On page load: pick up a token this tab already has (``GET /v1/console/me``). */
export async function restoreSession(): Promise<void> {
  const token = storedToken();
  if (!token) {
    // Branding needs a credential, so the sign-in page uses the last one this
    // browser saw (branding.ts caches it) rather than a request that would fail.
    authStore.set({ status: 'signed-out' });
    return;
  }
  const raw = Number(sessionStorage.getItem(EXPIRES_KEY));
  const expiresAt = Number.isFinite(raw) && raw > 0 ? raw : null;
  if (expiresAt && expiresAt * 1000 <= Date.now()) {
    signOut('Your session expired. Please sign in again.');
    return;
  }
  try {
    const me = await api.get<MeResponse>('/v1/console/me');
    establish(token, expiresAt, me);
    await applyTenantBranding(me);
  } catch (exc) {
    if (authStore.get().status === 'signed-out') return; // a 401: already signed out with its message
    remember(null, null);
    authStore.set({ status: 'signed-out', message: `Could not restore your session: ${errorMessage(exc)}` });
  }
}

/** Forget the token and show the sign-in page (with ``message``, if any). */
export function signOut(message?: string): void {
  clearTimeout(expiryTimer);
  remember(null, null);
  authStore.set({ status: 'signed-out', message });
}

/** The name an operator acts under (takeovers record it; the server defaults to the same). */
export function actorName(session: Session): string {
  return session.name?.trim() || session.operator?.name?.trim() || 'operator';
}

/** What the header shows for who is signed in. */
export function displayName(session: Session): string {
  if (session.kind === 'api_key') return session.name?.trim() || 'API key';
  return session.name?.trim() || session.operator?.email || 'Operator';
}
