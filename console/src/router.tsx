/**
 * A tiny path router under the console's base (``/console/``).
 *
 * Salon serves index.html for every /console/* path that is not a file, so
 * real paths work on reload and can be shared (``/console/live/<conversation>``).
 * Six panels do not need a routing library: this is the History API and one
 * store.
 */
import type { ComponentChildren } from 'preact';
import { createStore, useStore } from './store';

export const BASE = import.meta.env.BASE_URL.replace(/\/$/, ''); // "/console"

export interface Route {
  /** First path segment after the base: "live", "queues", ... ("" at the root). */
  panel: string;
  /** The remaining segments, decoded. */
  params: string[];
  search: URLSearchParams;
}

export function parseLocation(pathname: string, search: string): Route {
  let rest = pathname.startsWith(BASE) ? pathname.slice(BASE.length) : pathname;
  rest = rest.replace(/^\/+|\/+$/g, '');
  const parts = rest ? rest.split('/').map((p) => decodeURIComponent(p)) : [];
  return { panel: parts[0] ?? '', params: parts.slice(1), search: new URLSearchParams(search) };
}

export const routeStore = createStore<Route>(parseLocation(window.location.pathname, window.location.search));

window.addEventListener('popstate', () => {
  routeStore.set(parseLocation(window.location.pathname, window.location.search));
});

/** ``href('live', id)`` → ``/console/live/<id>``. */
export function href(panel: string, ...params: string[]): string {
  const tail = params.map((p) => `/${encodeURIComponent(p)}`).join('');
  return `${BASE}/${panel}${tail}`;
}

export function navigate(to: string, options: { replace?: boolean } = {}): void {
  const url = new URL(to, window.location.href);
  if (url.pathname + url.search === window.location.pathname + window.location.search) return;
  if (options.replace) window.history.replaceState(null, '', url);
  else window.history.pushState(null, '', url);
  routeStore.set(parseLocation(url.pathname, url.search));
}

export function useRoute(): Route {
  return useStore(routeStore);
}

interface LinkProps {
  href: string;
  class?: string;
  'aria-current'?: 'page' | 'true';
  children?: ComponentChildren;
}

/** An ``<a>`` that navigates in-app on a plain click and behaves like a link otherwise. */
export function Link({ href: to, children, ...rest }: LinkProps) {
  const handle = (event: MouseEvent) => {
    if (event.defaultPrevented || event.button !== 0) return;
    if (event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
    event.preventDefault();
    navigate(to);
  };
  return (
    <a href={to} onClick={handle} {...rest}>
      {children}
    </a>
  );
}
