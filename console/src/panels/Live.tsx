/**
 * Live: the tenant's active conversations and, beside them, the one opened.
 *
 * The list comes from ``GET /v1/conversations?active=true`` and is kept
 * current by the operator channel: ``conversation.activity`` moves a
 * conversation to the top with its newest message (adding it if new),
 * ``takeover.*`` marks it. After a reconnect (``ops.resync``) it is refetched,
 * since tenant-wide events cannot be replayed.
 */
import type { Session } from '../auth';
import { ErrorAlert } from '../components/ErrorAlert';
import { formatTime } from '../format';
import { useApiList, useOpsEvents } from '../hooks';
import type { OpsEvent } from '../ops';
import { href, navigate } from '../router';
import type { ConversationSummary, MessagePreview, PersonaRef, Takeover, UserRef } from '../types';
import { Conversation } from './live/Conversation';

const ACTIVE_QUERY = { active: 'true', limit: 100 };

interface Props {
  session: Session;
  conversationId: string | null;
}

export function LivePanel({ session, conversationId }: Props) {
  const {
    items: conversations,
    setItems: setConversations,
    loading,
    error,
    reload: load,
  } = useApiList<ConversationSummary>('/v1/conversations', ACTIVE_QUERY);

  useOpsEvents(['conversation.activity', 'takeover.started', 'takeover.ended', 'ops.resync'], (event) => {
    if (event.type === 'ops.resync') {
      void load();
      return;
    }
    if (event.type === 'conversation.activity') {
      setConversations((list) => applyActivity(list, event));
      return;
    }
    const record = event.takeover as Takeover | undefined;
    if (!record?.conversation_id) return;
    const active = event.type === 'takeover.started' && !record.ended_at ? record : null;
    setConversations((list) => list.map((c) => (c.id === record.conversation_id ? { ...c, takeover: active } : c)));
  });

  const selected = conversationId ? conversations.find((c) => c.id === conversationId) ?? null : null;

  return (
    <section class="panel panel-live" aria-labelledby="live-title">
      <h1 id="live-title">Live</h1>
      <ErrorAlert error={error} context="Could not load conversations" />
      <div class="split">
        <div class="split-list">
          <h2 class="list-heading">
            Active conversations <span class="count" data-testid="conversation-count">{conversations.length}</span>
          </h2>
          {loading ? (
            <p class="muted" role="status">
              Loading conversations…
            </p>
          ) : conversations.length === 0 ? (
            <p class="muted" data-testid="no-conversations">
              No active conversations right now. New ones appear here as they start.
            </p>
          ) : null}
          <ul class="conv-list" aria-label="Active conversations">
            {conversations.map((c) => (
              <li key={c.id}>
                <ConversationButton
                  conversation={c}
                  selected={c.id === conversationId}
                  onOpen={() => navigate(href('live', c.id))}
                />
              </li>
            ))}
          </ul>
        </div>
        <div class="split-detail">
          {conversationId ? (
            <Conversation key={conversationId} conversationId={conversationId} summary={selected} session={session} />
          ) : (
            <p class="muted empty-detail">Choose a conversation to watch it live.</p>
          )}
        </div>
      </div>
    </section>
  );
}

function ConversationButton({
  conversation: c,
  selected,
  onOpen,
}: {
  conversation: ConversationSummary;
  selected: boolean;
  onOpen: () => void;
}) {
  const user = c.user.name || c.user.id;
  return (
    <button
      type="button"
      class={`conv${selected ? ' conv-selected' : ''}`}
      data-conversation-id={c.id}
      aria-current={selected ? 'true' : undefined}
      onClick={onOpen}
    >
      <span class="conv-title">
        <span class="conv-user">{user}</span> <span class="conv-with">with</span>{' '}
        <span class="conv-persona">{c.persona.name}</span>
      </span>
      {c.last_message ? (
        <span class="conv-preview">
          {c.last_message.role === 'user' ? '' : `${c.persona.name}: `}
          {c.last_message.preview}
        </span>
      ) : null}
      <span class="conv-meta">
        <span>{c.channel}</span>
        {c.last_message ? <time dateTime={c.last_message.created_at}>{formatTime(c.last_message.created_at)}</time> : null}
        {c.takeover ? <span class="badge badge-warn">Taken over</span> : null}
      </span>
    </button>
  );
}

/** The list after one ``conversation.activity``: that conversation first, with its new message. */
export function applyActivity(list: ConversationSummary[], event: OpsEvent): ConversationSummary[] {
  const id = event.conversation_id;
  if (typeof id !== 'string' || id.startsWith('ops:')) return list;
  const message = (event.message as MessagePreview | undefined) ?? null;
  const existing = list.find((c) => c.id === id);
  const persona = (event.persona as PersonaRef | undefined) ?? existing?.persona ?? { id: '', slug: '', name: 'Persona' };
  const user = (event.user as UserRef | undefined) ?? existing?.user ?? { id: 'unknown', name: null };
  const at = message?.created_at ?? new Date().toISOString();
  const updated: ConversationSummary = existing
    ? {
        ...existing,
        persona,
        user,
        channel: conversationChannel(event) || existing.channel,
        last_message: message ?? existing.last_message,
        updated_at: at,
      }
    : {
        id,
        persona,
        user,
        channel: conversationChannel(event),
        created_at: at,
        updated_at: at,
        last_seq: 0,
        last_message: message,
        connected: 0,
        takeover: null,
      };
  return [updated, ...list.filter((c) => c.id !== id)];
}

/** The conversation's channel (ws, instagram, ...) from an activity event. */
function conversationChannel(event: OpsEvent): string {
  const channel = event.conversation_channel;
  return typeof channel === 'string' ? channel : '';
}
