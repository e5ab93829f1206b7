/**
 * Hooks shared by the panels.
 */
import { useEffect, useRef } from 'preact/hooks';
import { ops, type OpsEvent } from './ops';

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
