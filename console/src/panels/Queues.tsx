/**
 * Queues: flagged messages to review and social replies waiting for approval.
 *
 * Both lists load over HTTP and then follow the operator channel:
 * ``moderation.flagged`` adds a flag; ``reply.pending`` adds (or refreshes) a
 * reply, every other ``reply.*`` means it was decided and it leaves the
 * queue. Counts sit on the tabs so the other queue's backlog stays visible.
 */
import { useEffect, useState } from 'preact/hooks';
import { api, isDisabled, seg } from '../api';
import type { Session } from '../auth';
import { ErrorAlert } from '../components/ErrorAlert';
import { Tabs, tabPanelProps } from '../components/Tabs';
import { formatTime } from '../format';
import { useApiList, useOpsEvents } from '../hooks';
import { can } from '../roles';
import { href, Link } from '../router';
import type { Flag, SocialComment } from '../types';

type Tab = 'flags' | 'replies';

export function QueuesPanel({ session }: { session: Session }) {
  const [tab, setTab] = useState<Tab>('flags');
  const flags = useFlags(can(session.role, 'resolve_flag'));
  const replies = useReplies();

  return (
    <section class="panel" aria-labelledby="queues-title">
      <h1 id="queues-title">Queues</h1>
      <Tabs
        label="Queues"
        idPrefix="queues"
        selected={tab}
        onSelect={(id) => setTab(id as Tab)}
        tabs={[
          {
            id: 'flags',
            label: (
              <>
                Flagged messages{' '}
                <span class="count" data-testid="flag-count">
                  {flags.items.length}
                </span>
              </>
            ),
          },
          {
            id: 'replies',
            label: (
              <>
                Pending replies{' '}
                <span class="count" data-testid="reply-count">
                  {replies.items.length}
                </span>
              </>
            ),
          },
        ]}
      />
      {/* Both panels stay mounted (each tab controls an existing panel); the other is hidden. */}
      <div {...tabPanelProps('queues', 'flags')} class="tabpanel" hidden={tab !== 'flags'}>
        <FlagQueue state={flags} session={session} />
      </div>
      <div {...tabPanelProps('queues', 'replies')} class="tabpanel" hidden={tab !== 'replies'}>
        <ReplyQueue state={replies} session={session} />
      </div>
    </section>
  );
}

// -- flags ------------------------------------------------------------------------------

interface QueueState<T> {
  items: T[];
  loading: boolean;
  error: unknown;
  remove: (id: string) => void;
  replace: (item: T) => void;
}

function useFlags(allowed: boolean): QueueState<Flag> {
  // The flag queue needs the moderator role on the server too: a viewer asks for nothing.
  const {
    items,
    setItems,
    loading,
    error,
    reload: load,
  } = useApiList<Flag>('/v1/flags', { status: 'open', limit: 200 }, allowed);

  useOpsEvents(['moderation.flagged', 'ops.resync'], (event) => {
    if (event.type === 'ops.resync') {
      void load();
      return;
    }
    const flag = event.flag as Flag | undefined;
    if (!allowed || !flag?.id || (flag.status && flag.status !== 'open')) return;
    setItems((list) => [flag, ...list.filter((f) => f.id !== flag.id)]);
  });

  return {
    items,
    loading,
    error,
    remove: (id) => setItems((list) => list.filter((f) => f.id !== id)),
    replace: (flag) => setItems((list) => list.map((f) => (f.id === flag.id ? flag : f))),
  };
}

function FlagQueue({ state, session }: { state: QueueState<Flag>; session: Session }) {
  const allowed = can(session.role, 'resolve_flag');
  if (!allowed) {
    return <p class="note">Reviewing flagged messages needs the moderator or admin role.</p>;
  }
  return (
    <div>
      <ErrorAlert error={state.error} context="Could not load flags" />
      {state.loading ? (
        <p class="muted" role="status">
          Loading flags…
        </p>
      ) : state.items.length === 0 && !state.error ? (
        <p class="muted empty">No open flags. Messages the moderation policy flags appear here.</p>
      ) : null}
      <ul class="cards" aria-label="Flagged messages">
        {state.items.map((flag) => (
          <li key={flag.id}>
            <FlagCard flag={flag} onResolved={() => state.remove(flag.id)} />
          </li>
        ))}
      </ul>
    </div>
  );
}

function FlagCard({ flag, onResolved }: { flag: Flag; onResolved: () => void }) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const resolve = async (status: 'reviewed' | 'dismissed') => {
    setBusy(true);
    setError(null);
    try {
      await api.patch<Flag>(`/v1/flags/${seg(flag.id)}`, { status });
      onResolved();
    } catch (exc) {
      setError(exc);
      setBusy(false);
    }
  };
  const headingId = `flag-${flag.id}-title`;
  return (
    <article class="card queue-card" data-flag-id={flag.id} aria-labelledby={headingId}>
      <header class="card-head">
        <h3 id={headingId} class="card-title">
          {flag.direction === 'output' ? 'Reply' : 'Message'} {flag.action === 'block' ? 'blocked' : 'flagged'}:{' '}
          {flag.categories.join(', ') || 'policy'}
        </h3>
        <time class="muted small" dateTime={flag.created_at}>
          {formatTime(flag.created_at)}
        </time>
      </header>
      <blockquote class="excerpt">{flag.excerpt || <em>(no excerpt)</em>}</blockquote>
      <p class="muted small">
        {flag.direction === 'output' ? 'Persona output' : 'User input'} · action {flag.action}
        {flag.user_id ? ` · user ${flag.user_id}` : ''}
        {flag.conversation_id ? (
          <>
            {' · '}
            <Link href={href('live', flag.conversation_id)}>Open conversation</Link>
          </>
        ) : null}
      </p>
      <ErrorAlert error={error} context="Could not resolve the flag" />
      <div class="actions">
        <button type="button" class="btn btn-primary" disabled={busy} onClick={() => resolve('reviewed')}>
          Mark reviewed
        </button>
        <button type="button" class="btn" disabled={busy} onClick={() => resolve('dismissed')}>
          Dismiss
        </button>
      </div>
    </article>
  );
}

// -- replies ----------------------------------------------------------------------------

function useReplies(): QueueState<SocialComment> & { disabled: boolean } {
  const {
    items,
    setItems,
    loading,
    error,
    reload: load,
  } = useApiList<SocialComment>('/v1/replies', { status: 'pending', limit: 200 });

  useOpsEvents(['*'], (event) => {
    if (event.type === 'ops.resync') {
      void load();
      return;
    }
    if (!event.type.startsWith('reply.')) return;
    const comment = event.comment as SocialComment | undefined;
    if (!comment?.id) return;
    if (comment.status === 'pending' || (event.type === 'reply.pending' && !comment.status)) {
      setItems((list) =>
        list.some((c) => c.id === comment.id)
          ? list.map((c) => (c.id === comment.id ? comment : c))
          : [comment, ...list],
      );
    } else {
      setItems((list) => list.filter((c) => c.id !== comment.id));
    }
  });

  return {
    items,
    loading,
    error,
    disabled: isDisabled(error),
    remove: (id) => setItems((list) => list.filter((c) => c.id !== id)),
    replace: (comment) => setItems((list) => list.map((c) => (c.id === comment.id ? comment : c))),
  };
}

function ReplyQueue({ state, session }: { state: QueueState<SocialComment>; session: Session }) {
  return (
    <div>
      <ErrorAlert error={state.error} context="Could not load pending replies" />
      {state.loading ? (
        <p class="muted" role="status">
          Loading replies…
        </p>
      ) : state.items.length === 0 && !state.error ? (
        <p class="muted empty">No replies are waiting for approval.</p>
      ) : null}
      <ul class="cards" aria-label="Pending replies">
        {state.items.map((comment) => (
          <li key={comment.id}>
            <ReplyCard
              comment={comment}
              allowed={can(session.role, 'decide_reply')}
              onDecided={() => state.remove(comment.id)}
              onEdited={state.replace}
            />
          </li>
        ))}
      </ul>
    </div>
  );
}

const PLATFORMS: Record<string, string> = {
  x: 'X',
  instagram: 'Instagram',
  facebook: 'Facebook',
  youtube: 'YouTube',
};

interface ReplyCardProps {
  comment: SocialComment;
  allowed: boolean;
  onDecided: () => void;
  onEdited: (comment: SocialComment) => void;
}

function ReplyCard({ comment, allowed, onDecided, onEdited }: ReplyCardProps) {
  const proposed = comment.reply?.text ?? '';
  const [draft, setDraft] = useState(proposed);
  const [base, setBase] = useState(proposed);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const [saved, setSaved] = useState(false);

  // Another operator edited it: take their text unless this one is mid-edit.
  useEffect(() => {
    if (proposed !== base) {
      if (draft === base) setDraft(proposed);
      setBase(proposed);
    }
  }, [proposed]);

  const act = async (fn: () => Promise<void>) => {
    setBusy(true);
    setError(null);
    setSaved(false);
    try {
      await fn();
    } catch (exc) {
      setError(exc);
    } finally {
      setBusy(false);
    }
  };
  const path = `/v1/replies/${seg(comment.id)}`;
  const text = draft.trim();

  const save = () =>
    act(async () => {
      const updated = await api.patch<SocialComment>(path, { text });
      setBase(updated.reply?.text ?? text);
      onEdited(updated);
      setSaved(true);
    });
  const approve = () =>
    act(async () => {
      // An unsaved edit is approved as edited rather than lost.
      await api.post(`${path}/approve`, text && text !== base ? { text } : undefined);
      onDecided();
    });
  const reject = () =>
    act(async () => {
      await api.post(`${path}/reject`);
      onDecided();
    });

  const fieldId = `reply-${comment.id}-text`;
  const headingId = `reply-${comment.id}-title`;
  return (
    <article class="card queue-card" data-reply-id={comment.id} aria-labelledby={headingId}>
      <header class="card-head">
        <h3 id={headingId} class="card-title">
          <span class="badge platform" data-testid="reply-platform" data-platform={comment.platform}>
            {PLATFORMS[comment.platform] ?? comment.platform}
          </span>{' '}
          <span data-testid="reply-author">{comment.author?.name || comment.author?.id || 'Someone'}</span>
        </h3>
        <time class="muted small" dateTime={comment.received_at}>
          {formatTime(comment.received_at)}
        </time>
      </header>
      <blockquote class="excerpt" data-testid="reply-comment">
        {comment.text}
      </blockquote>
      <div class="field">
        <label for={fieldId}>Reply text</label>
        <textarea
          id={fieldId}
          rows={3}
          value={draft}
          readOnly={!allowed}
          maxLength={2000}
          onInput={(e) => {
            setDraft(e.currentTarget.value);
            setSaved(false);
          }}
        />
      </div>
      <ErrorAlert error={error} context="The reply could not be updated" />
      {saved ? (
        <p class="note small" role="status">
          Edit saved.
        </p>
      ) : null}
      {allowed ? (
        <div class="actions">
          <button type="button" class="btn" disabled={busy || !text || text === base} onClick={save}>
            Save edit
          </button>
          <button type="button" class="btn btn-primary" disabled={busy || !text} onClick={approve}>
            Approve
          </button>
          <button type="button" class="btn btn-danger-ghost" disabled={busy} onClick={reject}>
            Reject
          </button>
        </div>
      ) : null}
    </article>
  );
}
