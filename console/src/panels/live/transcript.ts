/**
 * The transcript of a watched conversation as a pure reducer.
 *
 * History (``GET .../messages``) seeds it; the conversation's protocol events
 * (docs/protocol.md) then grow it: ``message.accepted`` adds the person's
 * message, ``response.created`` starts a streaming reply that
 * ``response.text.delta`` extends and ``response.done`` / ``response.cancelled``
 * / ``error{response_id}`` finish, ``message.analysis`` attaches a sentiment.
 * Every step is keyed by message id or response id, so the same fact arriving
 * twice (history and live, the takeover POST's answer and its event) is
 * applied once.
 */
import type { Analysis, Message, MessagePreview } from '../../types';
import type { OpsEvent } from '../../ops';

export interface Speaker {
  type: string;
  name?: string;
}

export interface TranscriptItem {
  /** Stable render key: the message id, or ``resp:<response id>`` while streaming. */
  key: string;
  id: string | null;
  responseId: string | null;
  role: string;
  content: string;
  status: string;
  createdAt: string;
  analysis: Analysis | null;
  streaming: boolean;
  speaker: Speaker | null;
  /** Filled from a ``conversation.activity`` preview, not the full text (yet). */
  fromPreview?: boolean;
}

export interface TranscriptState {
  items: TranscriptItem[];
  /** Analyses that arrived before their message did. */
  pendingAnalysis: Record<string, Analysis>;
}

export type TranscriptAction =
  | { type: 'load'; messages: Message[] }
  | { type: 'prepend'; messages: Message[] }
  | { type: 'merge'; messages: Message[] }
  | { type: 'event'; event: OpsEvent }
  | { type: 'preview'; message: MessagePreview };

export const EMPTY_TRANSCRIPT: TranscriptState = { items: [], pendingAnalysis: {} };

function fromMessage(m: Message): TranscriptItem {
  return {
    key: m.id,
    id: m.id,
    responseId: m.response_id ?? null,
    role: m.role,
    content: m.content,
    status: m.status,
    createdAt: m.created_at,
    analysis: m.analysis ?? null,
    streaming: false,
    speaker: null,
  };
}

function str(value: unknown): string | null {
  return typeof value === 'string' ? value : null;
}

function speakerOf(value: unknown): Speaker | null {
  if (value && typeof value === 'object' && typeof (value as Speaker).type === 'string') {
    const s = value as Speaker;
    return { type: s.type, name: typeof s.name === 'string' ? s.name : undefined };
  }
  return null;
}

function nowIso(): string {
  return new Date().toISOString();
}

/** Attach a pending analysis to a message that just got its id. */
function withPending(state: TranscriptState, items: TranscriptItem[]): TranscriptState {
  const pending = { ...state.pendingAnalysis };
  let changed = false;
  const next = items.map((item) => {
    if (item.id && pending[item.id] && !item.analysis) {
      const analysis = pending[item.id];
      delete pending[item.id];
      changed = true;
      return { ...item, analysis };
    }
    return item;
  });
  return changed ? { items: next, pendingAnalysis: pending } : { ...state, items };
}

function finish(
  state: TranscriptState,
  responseId: string | null,
  messageId: string | null,
  text: string | null,
  status: string,
  speaker: Speaker | null,
): TranscriptState {
  let items = state.items;
  const byResponse = responseId ? items.findIndex((i) => i.responseId === responseId) : -1;
  const byId = messageId ? items.findIndex((i) => i.id === messageId) : -1;
  if (byResponse >= 0 && byId >= 0 && byResponse !== byId) {
    // History already had the stored reply: drop the streaming copy.
    items = items.filter((_, index) => index !== byResponse);
    const at = items.findIndex((i) => i.id === messageId);
    items = items.map((item, index) =>
      index === at ? { ...item, content: text ?? item.content, status, streaming: false, responseId } : item,
    );
    return withPending(state, items);
  }
  const index = byResponse >= 0 ? byResponse : byId;
  if (index >= 0) {
    const item = items[index];
    const content = text ?? item.content;
    if (!messageId && !item.id && content === '') {
      return { ...state, items: items.filter((_, i) => i !== index) }; // withdrawn before any word
    }
    const updated: TranscriptItem = {
      ...item,
      id: messageId ?? item.id,
      key: messageId ?? item.key,
      content,
      status,
      streaming: false,
      speaker: item.speaker ?? speaker,
    };
    items = items.map((it, i) => (i === index ? updated : it));
    return withPending(state, items);
  }
  if (!messageId && !text) return state;
  const item: TranscriptItem = {
    key: messageId ?? `resp:${responseId}`,
    id: messageId,
    responseId,
    role: 'assistant',
    content: text ?? '',
    status,
    createdAt: nowIso(),
    analysis: null,
    streaming: false,
    speaker,
  };
  return withPending(state, [...items, item]);
}

function onEvent(state: TranscriptState, event: OpsEvent): TranscriptState {
  const responseId = str(event.response_id);
  switch (event.type) {
    case 'message.accepted': {
      const messageId = str(event.message_id);
      if (!messageId) return state;
      const text = str(event.text);
      const index = state.items.findIndex((i) => i.id === messageId);
      if (index >= 0) {
        if (text === null) return state;
        const items = state.items.map((it, i) => (i === index ? { ...it, content: text, fromPreview: false } : it));
        return { ...state, items };
      }
      const item: TranscriptItem = {
        key: messageId,
        id: messageId,
        responseId: null,
        role: 'user',
        content: text ?? '',
        status: 'complete',
        createdAt: nowIso(),
        analysis: null,
        streaming: false,
        speaker: null,
      };
      return withPending(state, [...state.items, item]);
    }
    case 'response.created': {
      if (!responseId || state.items.some((i) => i.responseId === responseId)) return state;
      const item: TranscriptItem = {
        key: `resp:${responseId}`,
        id: null,
        responseId,
        role: 'assistant',
        content: '',
        status: 'streaming',
        createdAt: nowIso(),
        analysis: null,
        streaming: true,
        speaker: speakerOf(event.speaker),
      };
      return { ...state, items: [...state.items, item] };
    }
    case 'response.text.delta': {
      const delta = str(event.delta);
      if (!responseId || delta === null) return state;
      const index = state.items.findIndex((i) => i.responseId === responseId);
      if (index < 0) {
        // Joined mid-reply: its start is before the history we loaded.
        const item: TranscriptItem = {
          key: `resp:${responseId}`,
          id: null,
          responseId,
          role: 'assistant',
          content: delta,
          status: 'streaming',
          createdAt: nowIso(),
          analysis: null,
          streaming: true,
          speaker: speakerOf(event.speaker),
        };
        return { ...state, items: [...state.items, item] };
      }
      if (!state.items[index].streaming) return state;
      const items = state.items.map((it, i) => (i === index ? { ...it, content: it.content + delta } : it));
      return { ...state, items };
    }
    case 'response.done':
      return finish(state, responseId, str(event.message_id), str(event.text), 'complete', speakerOf(event.speaker));
    case 'response.cancelled':
      return finish(state, responseId, str(event.message_id), str(event.text), 'cancelled', speakerOf(event.speaker));
    case 'error': {
      if (!responseId) return state;
      return finish(state, responseId, str(event.message_id), str(event.text), 'error', null);
    }
    case 'message.analysis': {
      const messageId = str(event.message_id);
      const analysis = event.analysis as Analysis | undefined;
      if (!messageId || !analysis) return state;
      const index = state.items.findIndex((i) => i.id === messageId);
      if (index < 0) return { ...state, pendingAnalysis: { ...state.pendingAnalysis, [messageId]: analysis } };
      const items = state.items.map((it, i) => (i === index ? { ...it, analysis } : it));
      return { ...state, items };
    }
    default:
      return state;
  }
}

export function transcriptReducer(state: TranscriptState, action: TranscriptAction): TranscriptState {
  switch (action.type) {
    case 'load':
      return withPending({ items: [], pendingAnalysis: state.pendingAnalysis }, action.messages.map(fromMessage));
    case 'prepend': {
      // An older page of history, above what is shown.
      const known = new Set(state.items.map((i) => i.id));
      const older = action.messages.filter((m) => !known.has(m.id)).map(fromMessage);
      return withPending(state, [...older, ...state.items]);
    }
    case 'merge': {
      // Fill in full texts and analyses from history; add what the stream never showed.
      const byId = new Map(action.messages.map((m) => [m.id, m]));
      let items = state.items.map((item) => {
        const m = item.id ? byId.get(item.id) : undefined;
        if (!m) return item;
        byId.delete(m.id);
        return { ...item, content: m.content, status: m.status, analysis: item.analysis ?? m.analysis ?? null, fromPreview: false };
      });
      const missing = [...byId.values()]
        .filter((m) => !items.some((i) => i.responseId && i.responseId === m.response_id))
        .map(fromMessage);
      if (missing.length) {
        const time = (item: TranscriptItem) => Date.parse(item.createdAt) || 0;
        items = [...items, ...missing].sort((a, b) => time(a) - time(b));
      }
      return withPending(state, items);
    }
    case 'preview': {
      const m = action.message;
      if (m.role !== 'user' || state.items.some((i) => i.id === m.id)) return state;
      const item: TranscriptItem = {
        key: m.id,
        id: m.id,
        responseId: null,
        role: 'user',
        content: m.preview,
        status: 'complete',
        createdAt: m.created_at || nowIso(),
        analysis: null,
        streaming: false,
        speaker: null,
        fromPreview: true,
      };
      return withPending(state, [...state.items, item]);
    }
    case 'event':
      return onEvent(state, action.event);
  }
}
