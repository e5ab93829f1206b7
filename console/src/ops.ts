/**
 * The operator socket (``/v1/ops/ws``): tenant-wide events plus watched conversations.
 *
 * One socket per signed-in tab. It reconnects by itself with exponential
 * backoff (0.5 s doubling to 10 s) and, once the server says ``ops.ready``
 * again, re-sends every ``watch`` with ``resume_after`` = the last seq this
 * tab processed for that conversation, so a watched transcript has no gap and
 * no duplicate. Tenant-wide events cannot be resumed; after a reconnect the
 * socket emits a local ``ops.resync`` event so panels refetch their lists.
 *
 * Panels subscribe with :meth:`OpsSocket.on` (by event type, or ``*``) and
 * :meth:`OpsSocket.watch` (one conversation's stream); both return the
 * function that undoes them, which fits ``useEffect`` cleanups.
 */
import { api } from './api';
import { createStore } from './store';

export type OpsStatus = 'idle' | 'connecting' | 'live' | 'reconnecting';

export interface OpsEvent {
  type: string;
  seq?: number;
  channel?: string;
  conversation_id?: string;
  [key: string]: unknown;
}

export type OpsHandler = (event: OpsEvent) => void;

interface Watch {
  lastSeq: number;
  handlers: Set<OpsHandler>;
}

const MIN_DELAY_MS = 500;
const MAX_DELAY_MS = 10_000;
const PING_MS = 25_000;

/**
 * Types that only ever come on the tenant-wide operator channel. They are
 * recognised by type too: ``conversation.activity`` carries a real
 * ``conversation_id`` and may use ``channel`` for the conversation's channel.
 */
const OPS_TYPES = /^(conversation\.activity|moderation\.flagged|reply\.|comment\.)/;

export function isOpsEvent(event: OpsEvent): boolean {
  if (event.channel === 'ops') return true;
  if (typeof event.conversation_id === 'string' && event.conversation_id.startsWith('ops:')) return true;
  return OPS_TYPES.test(event.type);
}

export function opsUrl(token: string, where: Location = window.location): string {
  const scheme = where.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${where.host}/v1/ops/ws?token=${encodeURIComponent(token)}`;
}

export class OpsSocket {
  readonly status = createStore<OpsStatus>('idle');
  private ws: WebSocket | null = null;
  private token: string | null = null;
  private attempt = 0;
  private failuresBeforeReady = 0;
  private retryTimer: ReturnType<typeof setTimeout> | undefined;
  private pingTimer: ReturnType<typeof setInterval> | undefined;
  private everReady = false;
  private readonly handlers = new Map<string, Set<OpsHandler>>();
  private readonly watches = new Map<string, Watch>();

  /** Open the socket for ``token`` (no-op when it is already open for it). */
  connect(token: string): void {
    if (this.token === token && this.ws) return;
    this.close();
    this.token = token;
    this.everReady = false;
    this.attempt = 0;
    this.open();
  }

  /** Close for good (sign-out): no reconnect. */
  close(): void {
    this.token = null;
    clearTimeout(this.retryTimer);
    clearInterval(this.pingTimer);
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      ws.onopen = ws.onclose = ws.onerror = ws.onmessage = null;
      if (ws.readyState === WebSocket.OPEN) ws.close(1000, 'signed out');
      else if (ws.readyState === WebSocket.CONNECTING) {
        // Closing a socket that is still connecting makes the browser log an
        // error; let it open and close it then.
        ws.onopen = () => ws.close(1000, 'signed out');
      }
    }
    this.status.set('idle');
  }

  /** Subscribe to tenant-wide events of ``type`` (``*``: all; ``ops.ready``/``ops.resync``: local). */
  on(type: string, handler: OpsHandler): () => void {
    let set = this.handlers.get(type);
    if (!set) this.handlers.set(type, (set = new Set()));
    set.add(handler);
    return () => {
      set.delete(handler);
    };
  }

  /**
   * Follow one conversation from ``resumeAfter`` (the ``last_seq`` of the
   * history just loaded). Events come to ``handler`` in seq order.
   */
  watch(conversationId: string, resumeAfter: number, handler: OpsHandler): () => void {
    let watch = this.watches.get(conversationId);
    if (!watch) {
      watch = { lastSeq: resumeAfter, handlers: new Set() };
      this.watches.set(conversationId, watch);
    } else {
      watch.lastSeq = resumeAfter;
    }
    watch.handlers.add(handler);
    this.sendWatch(conversationId, watch.lastSeq);
    return () => {
      const current = this.watches.get(conversationId);
      if (!current) return;
      current.handlers.delete(handler);
      if (current.handlers.size === 0) {
        this.watches.delete(conversationId);
        this.send({ type: 'unwatch', conversation_id: conversationId });
      }
    };
  }

  /** The last seq processed for a watched conversation (for a reload after ``resume_gap``). */
  setLastSeq(conversationId: string, seq: number): void {
    const watch = this.watches.get(conversationId);
    if (watch) watch.lastSeq = seq;
  }

  send(frame: Record<string, unknown>): boolean {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN || !this.everReadyOnThisSocket) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  // -- internals ---------------------------------------------------------------------

  private everReadyOnThisSocket = false;

  private sendWatch(conversationId: string, resumeAfter: number): void {
    this.send({ type: 'watch', conversation_id: conversationId, resume_after: resumeAfter });
  }

  private open(): void {
    const token = this.token;
    if (!token) return;
    this.status.set(this.everReady ? 'reconnecting' : 'connecting');
    this.everReadyOnThisSocket = false;
    let ws: WebSocket;
    try {
      ws = new WebSocket(opsUrl(token));
    } catch {
      this.scheduleReconnect();
      return;
    }
    this.ws = ws;
    ws.onmessage = (msg) => this.receive(msg.data);
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.ws = null;
      clearInterval(this.pingTimer);
      if (!this.everReadyOnThisSocket) this.failuresBeforeReady += 1;
      this.scheduleReconnect();
    };
  }

  private scheduleReconnect(): void {
    if (!this.token) return;
    this.status.set('reconnecting');
    const delay = Math.min(MAX_DELAY_MS, MIN_DELAY_MS * 2 ** this.attempt);
    this.attempt += 1;
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.open(), delay);
    if (this.failuresBeforeReady >= 2) {
      // Refused twice before ready: maybe the token is gone. A 401 here signs out (api.ts).
      this.failuresBeforeReady = 0;
      api.get('/v1/console/me').catch(() => undefined);
    }
  }

  private receive(data: unknown): void {
    if (typeof data !== 'string') return;
    let event: OpsEvent;
    try {
      event = JSON.parse(data) as OpsEvent;
    } catch {
      return;
    }
    if (!event || typeof event.type !== 'string') return;
    if (event.type === 'ops.ready') {
      this.onReady(event);
      return;
    }
    if (event.type === 'pong') return;
    if (isOpsEvent(event)) {
      this.emit(event.type, event);
      return;
    }
    const cid = event.conversation_id;
    const watch = typeof cid === 'string' ? this.watches.get(cid) : undefined;
    if (watch) {
      if (typeof event.seq === 'number' && event.type !== 'watch.ready') {
        if (event.seq <= watch.lastSeq) return; // already seen (a resume overlaps)
        watch.lastSeq = event.seq;
      }
      for (const handler of [...watch.handlers]) handler(event);
      return;
    }
    if (event.type === 'error') this.emit('error', event);
  }

  private onReady(event: OpsEvent): void {
    const resync = this.everReady;
    this.everReady = true;
    this.everReadyOnThisSocket = true;
    this.attempt = 0;
    this.failuresBeforeReady = 0;
    this.status.set('live');
    clearInterval(this.pingTimer);
    this.pingTimer = setInterval(() => this.send({ type: 'ping' }), PING_MS);
    for (const [cid, watch] of this.watches) this.sendWatch(cid, watch.lastSeq);
    this.emit('ops.ready', event);
    if (resync) this.emit('ops.resync', { type: 'ops.resync' });
  }

  private emit(type: string, event: OpsEvent): void {
    for (const key of [type, '*']) {
      const set = this.handlers.get(key);
      if (set) for (const handler of [...set]) handler(event);
    }
  }
}

/** The tab's operator socket. */
export const ops = new OpsSocket();
