/**
 * Hooks shared by the panels.
 */
import { useEffect, useRef, useState } from 'preact/hooks';
import { api } from './api';
import { ops, type OpsEvent } from './ops';
import type { ListResponse } from './types';

/**
 * Call ``handler`` for each tenant-wide operator event of the given types.
 * The handler may change between renders without resubscribing.
 */
export function useOpsEvents(types: readonly string[], handler: (event: OpsEvent) => void): void {
  const ref = useRef(handler);
  ref.current = handler;
  const key = types.join(',');
  useEffect(() => {
    const offs = key.split(',').map((type) => ops.on(type, (event) => ref.current(event)));
    return () => offs.forEach((off) => off());
  }, [key]);
}

/** A ref whose ``current`` is false once the component is gone (late async results are dropped). */
export function useMounted(): { current: boolean } {
  const mounted = useRef(true);
  useEffect(() => {
    mounted.current = true;
    return () => {
      mounted.current = false;
    };
  }, []);
  return mounted;
}

/** What :func:`useApiList` gives a panel: the items, their loading and error state, a reload. */
export interface ApiList<T> {
  items: T[];
  setItems: (update: T[] | ((items: T[]) => T[])) => void;
  loading: boolean;
  error: unknown;
  setError: (error: unknown) => void;
  reload: () => Promise<void>;
}

/**
 * A list endpoint (``{"data": [...]}``) loaded on mount and on ``reload()``; the
 * panels keep it live by editing ``items`` from operator events. With
 * ``enabled`` false nothing is requested (a role that may not read it).
 */
export function useApiList<T>(
  path: string,
  query?: Record<string, string | number>,
  enabled = true,
): ApiList<T> {
  const [items, setItems] = useState<T[]>([]);
  const [loading, setLoading] = useState(enabled);
  const [error, setError] = useState<unknown>(null);
  const reload = async () => {
    if (!enabled) return;
    try {
      const page = await api.get<ListResponse<T>>(path, query);
      setItems(page.data ?? []);
      setError(null);
    } catch (exc) {
      setError(exc);
    } finally {
      setLoading(false);
    }
  };
  const key = `${path}?${JSON.stringify(query ?? {})}`;
  useEffect(() => {
    void reload();
  }, [key]);
  return { items, setItems, loading, error, setError, reload };
}
