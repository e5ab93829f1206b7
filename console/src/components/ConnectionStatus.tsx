/**
 * The operator socket's state in the header: "Live" or "Reconnecting…".
 */
import { ops } from '../ops';
import { useStore } from '../store';

const LABELS = {
  idle: 'Offline',
  connecting: 'Connecting…',
  live: 'Live',
  reconnecting: 'Reconnecting…',
} as const;

export function ConnectionStatus() {
  const status = useStore(ops.status);
  return (
    <span class={`conn conn-${status}`} role="status" data-testid="connection-status" data-status={status}>
      <span class="conn-dot" aria-hidden="true" />
      {LABELS[status]}
    </span>
  );
}
