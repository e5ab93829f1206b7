/**
 * Take a conversation over, write in it, hand it back (moderators and admins).
 *
 * The takeover is recorded under the operator's name; the server only lets
 * the same name write (``not_yours`` otherwise), so every call sends it.
 */
import { useState } from 'preact/hooks';
import { api, seg } from '../../api';
import { actorName, type Session } from '../../auth';
import { ErrorAlert } from '../../components/ErrorAlert';
import { formatTime } from '../../format';
import type { OpsEvent } from '../../ops';
import { can } from '../../roles';
import type { Takeover } from '../../types';

interface Props {
  conversationId: string;
  session: Session;
  takeover: Takeover | null;
  onTakeover: (takeover: Takeover | null) => void;
  /** The ``response.done`` the server answers a sent message with (shown before its event). */
  onSent: (event: OpsEvent) => void;
}

type Mode = 'persona' | 'operator';

export function TakeoverControls({ conversationId, session, takeover, onTakeover, onSent }: Props) {
  const [mode, setMode] = useState<Mode>('persona');
  const [text, setText] = useState('');
  const [busy, setBusy] = useState<'start' | 'send' | 'end' | null>(null);
  const [error, setError] = useState<unknown>(null);
  const allowed = can(session.role, 'takeover');
  const name = actorName(session);
  const base = `/v1/conversations/${seg(conversationId)}/takeover`;

  const run = async (what: 'start' | 'send' | 'end', fn: () => Promise<void>) => {
    setBusy(what);
    setError(null);
    try {
      await fn();
    } catch (exc) {
      setError(exc);
    } finally {
      setBusy(null);
    }
  };

  const start = () =>
    run('start', async () => {
      onTakeover(await api.post<Takeover>(base, { mode, name }));
    });

  const send = (event?: Event) => {
    event?.preventDefault();
    const message = text.trim();
    if (!message) return;
    return run('send', async () => {
      const done = await api.post<OpsEvent>(`${base}/messages`, { text: message, name });
      setText('');
      if (done && typeof done === 'object') onSent({ ...done, type: 'response.done' });
    });
  };

  const handBack = () =>
    run('end', async () => {
      await api.del<Takeover>(base, { name });
      onTakeover(null);
    });

  const mine = takeover ? takeover.operator === name : false;

  return (
    <div class="takeover">
      {takeover ? (
        <div class="banner banner-takeover" role="status" data-testid="takeover-banner">
          <strong>Taken over by {mine ? `${takeover.operator} (you)` : takeover.operator}</strong>
          <span class="muted small">
            {' '}
            · {takeover.mode === 'operator' ? 'visible operator' : 'speaking as the persona'} · since{' '}
            {formatTime(takeover.started_at)}
          </span>
        </div>
      ) : null}
      <ErrorAlert error={error} context="Takeover" onDismiss={() => setError(null)} />
      {!allowed ? null : takeover ? (
        <form class="takeover-form form" onSubmit={send}>
          <div class="field">
            <label for="takeover-message">Message</label>
            <textarea
              id="takeover-message"
              rows={3}
              value={text}
              onInput={(e) => setText(e.currentTarget.value)}
              onKeyDown={(e) => {
                if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) void send(e);
              }}
              aria-describedby="takeover-hint"
            />
            <p class="hint" id="takeover-hint">
              {takeover.mode === 'operator'
                ? 'The person sees this as a message from an operator.'
                : 'The person sees this as the persona’s reply.'}{' '}
              Ctrl+Enter sends.
            </p>
          </div>
          <div class="actions">
            <button type="submit" class="btn btn-primary" disabled={busy !== null || !text.trim()}>
              Send
            </button>
            <button type="button" class="btn" onClick={handBack} disabled={busy !== null}>
              Hand back
            </button>
          </div>
        </form>
      ) : (
        <div class="takeover-start">
          <div class="field field-inline">
            <label for="takeover-mode">Speak as</label>
            <select id="takeover-mode" value={mode} onChange={(e) => setMode(e.currentTarget.value as Mode)}>
              <option value="persona">Persona (the person cannot tell)</option>
              <option value="operator">Visible operator</option>
            </select>
          </div>
          <button type="button" class="btn btn-primary" onClick={start} disabled={busy !== null}>
            Take over
          </button>
        </div>
      )}
    </div>
  );
}
