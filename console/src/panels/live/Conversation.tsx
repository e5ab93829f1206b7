/**
 * One conversation, live: its transcript and the takeover controls.
 *
 * Loads history, then watches the conversation on the operator socket from
 * the history's ``last_seq`` (ops.ts re-watches after a reconnect from the
 * last seq seen). A person's message typed on a channel whose socket the
 * operator cannot see (the API, a platform) still arrives as
 * ``conversation.activity`` on the operator channel: it is appended from the
 * preview and the full text fetched from history shortly after.
 */
import { useEffect, useReducer, useRef, useState } from 'preact/hooks';
import { api, seg } from '../../api';
import type { Session } from '../../auth';
import { ErrorAlert } from '../../components/ErrorAlert';
import { SentimentBadge } from '../../components/SentimentBadge';
import { formatTime } from '../../format';
import { useMounted, useOpsEvents } from '../../hooks';
import { ops, type OpsEvent } from '../../ops';
import type { ConversationSummary, MessagePreview, MessagesPage, Takeover, TakeoverStatus } from '../../types';
import { TakeoverControls } from './TakeoverControls';
import { EMPTY_TRANSCRIPT, transcriptReducer, type TranscriptItem } from './transcript';

interface Props {
  conversationId: string;
  summary: ConversationSummary | null;
  session: Session;
}

const HISTORY_LIMIT = 100;

export function Conversation({ conversationId, summary, session }: Props) {
  const [transcript, dispatch] = useReducer(transcriptReducer, EMPTY_TRANSCRIPT);
  const transcriptRef = useRef(transcript);
  transcriptRef.current = transcript;
  const [hasOlder, setHasOlder] = useState(false);
  const [loadingOlder, setLoadingOlder] = useState(false);
  const [loading, setLoading] = useState(true);
  const [loadError, setLoadError] = useState<unknown>(null);
  const [streamError, setStreamError] = useState<OpsEvent | null>(null);
  const [takeover, setTakeover] = useState<Takeover | null>(null);
  const [announcement, setAnnouncement] = useState('');
  const mounted = useMounted();
  const listRef = useRef<HTMLOListElement>(null);
  const stickToBottom = useRef(true);
  const refetchTimer = useRef<ReturnType<typeof setTimeout> | undefined>(undefined);

  const personaName = summary?.persona.name ?? 'Persona';
  const userName = summary ? summary.user.name || summary.user.id : 'User';

  const fetchHistory = () =>
    api.get<MessagesPage>(`/v1/conversations/${seg(conversationId)}/messages`, { limit: HISTORY_LIMIT });

  // Load history + takeover state, then follow the live stream.
  useEffect(() => {
    let cancelled = false;
    let unwatch: (() => void) | null = null;
    setLoading(true);
    setLoadError(null);
    setStreamError(null);
    setTakeover(null);

    const onStream = (event: OpsEvent) => {
      if (cancelled) return;
      switch (event.type) {
        case 'watch.ready':
          return;
        case 'takeover.started':
        case 'takeover.ended':
          applyTakeover(event);
          return;
        case 'error':
          if (event.code === 'resume_gap') {
            void fetchHistory().then((page) => !cancelled && dispatch({ type: 'load', messages: page.data }));
            return;
          }
          if (typeof event.response_id !== 'string') {
            setStreamError(event);
            return;
          }
          break;
        case 'message.accepted':
          setAnnouncement(`New message from ${userName}`);
          break;
        case 'response.done': {
          const speaker = event.speaker as { type?: string; name?: string } | undefined;
          setAnnouncement(speaker?.type === 'operator' ? `Operator ${speaker.name ?? ''} replied` : `${personaName} replied`);
          break;
        }
      }
      dispatch({ type: 'event', event });
    };

    (async () => {
      try {
        const [page, status] = await Promise.all([
          fetchHistory(),
          api.get<TakeoverStatus>(`/v1/conversations/${seg(conversationId)}/takeover`),
        ]);
        if (cancelled) return;
        dispatch({ type: 'load', messages: page.data });
        setHasOlder(page.data.length >= HISTORY_LIMIT);
        setTakeover(status.active ?? null);
        setLoading(false);
        stickToBottom.current = true;
        unwatch = ops.watch(conversationId, page.last_seq ?? 0, onStream);
      } catch (exc) {
        if (cancelled) return;
        setLoadError(exc);
        setLoading(false);
      }
    })();
    return () => {
      cancelled = true;
      clearTimeout(refetchTimer.current);
      unwatch?.();
    };
  }, [conversationId]);

  function applyTakeover(event: OpsEvent) {
    const record = event.takeover as Takeover | undefined;
    if (!record || (record.conversation_id && record.conversation_id !== conversationId)) return;
    setTakeover(event.type === 'takeover.started' && !record.ended_at ? record : null);
  }

  // The operator channel: takeovers by others, and messages the watch cannot show.
  useOpsEvents(['conversation.activity', 'takeover.started', 'takeover.ended', 'ops.resync'], (event) => {
    if (event.type === 'ops.resync') {
      scheduleMerge(0);
      return;
    }
    if (event.type.startsWith('takeover.')) {
      const record = event.takeover as Takeover | undefined;
      if (record?.conversation_id === conversationId) applyTakeover(event);
      return;
    }
    if (event.conversation_id !== conversationId) return;
    const message = event.message as MessagePreview | undefined;
    if (!message?.id || transcriptHas(transcriptRef.current.items, message.id)) return;
    if (message.role === 'user') {
      // Show it at once; the full text comes with message.accepted, or from history below.
      dispatch({ type: 'preview', message });
      setAnnouncement(`New message from ${userName}`);
    }
    // A message the watched stream does not carry (another channel's, a stored
    // reply): if it is still missing or only a preview shortly, read history.
    setTimeout(() => {
      if (!mounted.current) return;
      const item = transcriptRef.current.items.find((i) => i.id === message.id);
      if (!item || item.fromPreview) scheduleMerge(0);
    }, 800);
  });

  function scheduleMerge(delay: number) {
    clearTimeout(refetchTimer.current);
    refetchTimer.current = setTimeout(() => {
      fetchHistory()
        .then((page) => mounted.current && dispatch({ type: 'merge', messages: page.data }))
        .catch((exc) => mounted.current && setLoadError(exc));
    }, delay);
  }

  const loadOlder = async () => {
    const first = transcript.items.find((i) => i.id);
    if (!first?.id) return;
    setLoadingOlder(true);
    try {
      const page = await api.get<MessagesPage>(`/v1/conversations/${seg(conversationId)}/messages`, {
        limit: HISTORY_LIMIT,
        before: first.id,
      });
      stickToBottom.current = false;
      dispatch({ type: 'prepend', messages: page.data });
      setHasOlder(page.data.length >= HISTORY_LIMIT);
    } catch (exc) {
      setLoadError(exc);
    } finally {
      setLoadingOlder(false);
    }
  };

  // Keep the newest message in view unless the operator scrolled up to read.
  useEffect(() => {
    const list = listRef.current;
    if (list && stickToBottom.current) list.scrollTop = list.scrollHeight;
  }, [transcript.items]);

  const onScroll = () => {
    const list = listRef.current;
    if (!list) return;
    stickToBottom.current = list.scrollHeight - list.scrollTop - list.clientHeight < 48;
  };

  const title = summary ? `${userName} with ${personaName}` : `Conversation ${conversationId}`;

  return (
    <section class="conversation" aria-labelledby="conversation-title" data-conversation-id={conversationId}>
      <div class="conversation-head">
        <h2 id="conversation-title">{title}</h2>
        {summary ? (
          <p class="muted small">
            {summary.channel} · {conversationId}
            {summary.connected ? ` · ${summary.connected} connected` : ''}
          </p>
        ) : null}
      </div>
      <TakeoverControls
        conversationId={conversationId}
        session={session}
        takeover={takeover}
        onTakeover={setTakeover}
        onSent={(event) => dispatch({ type: 'event', event })}
      />
      <ErrorAlert error={loadError} context="Could not load the conversation" />
      {streamError ? (
        <div class="alert alert-error" role="alert">
          <p>
            {String(streamError.message ?? 'The live stream reported an error')}
            {streamError.code ? <span class="alert-code"> ({String(streamError.code)})</span> : null}
          </p>
          <button type="button" class="btn btn-small btn-ghost" onClick={() => setStreamError(null)}>
            Dismiss
          </button>
        </div>
      ) : null}
      <section class="transcript" aria-label="Transcript" aria-busy={loading ? 'true' : 'false'}>
        {loading ? (
          <p class="muted" role="status">
            Loading messages…
          </p>
        ) : transcript.items.length === 0 ? (
          <p class="muted">No messages yet.</p>
        ) : null}
        {hasOlder ? (
          <button type="button" class="btn btn-small load-older" onClick={loadOlder} disabled={loadingOlder}>
            Load earlier messages
          </button>
        ) : null}
        <ol class="messages" ref={listRef} onScroll={onScroll}>
          {transcript.items.map((item) => (
            <MessageItem key={item.key} item={item} userName={userName} personaName={personaName} />
          ))}
        </ol>
      </section>
      <div class="sr-only" aria-live="polite" data-testid="live-announcer">
        {announcement}
      </div>
    </section>
  );
}

function transcriptHas(items: TranscriptItem[], id: string): boolean {
  return items.some((i) => i.id === id);
}

function authorOf(item: TranscriptItem, userName: string, personaName: string): string {
  if (item.speaker?.type === 'operator') return `Operator${item.speaker.name ? ` ${item.speaker.name}` : ''}`;
  if (item.role === 'user') return userName;
  if (item.role === 'assistant') return personaName;
  return item.role;
}

const STATUS_NOTES: Record<string, string> = {
  cancelled: 'Cancelled',
  error: 'Failed',
  streaming: 'Typing…',
};

function MessageItem({ item, userName, personaName }: { item: TranscriptItem; userName: string; personaName: string }) {
  const note = STATUS_NOTES[item.status];
  return (
    <li
      class={`msg msg-${item.role}${item.speaker?.type === 'operator' ? ' msg-operator' : ''}${item.streaming ? ' msg-streaming' : ''}`}
      data-message-id={item.id ?? undefined}
      data-response-id={item.streaming && item.responseId ? item.responseId : undefined}
      data-role={item.role}
      data-status={item.status}
    >
      <div class="msg-meta">
        <span class="msg-author">{authorOf(item, userName, personaName)}</span>
        {item.createdAt ? <time dateTime={item.createdAt}>{formatTime(item.createdAt)}</time> : null}
        {note ? <span class={`badge status-${item.status}`}>{note}</span> : null}
        <SentimentBadge analysis={item.analysis} />
      </div>
      <p class="msg-text">{item.content}</p>
    </li>
  );
}
