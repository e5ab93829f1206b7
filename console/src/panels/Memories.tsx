/**
 * Memories: what a persona remembers about a person; pin, edit, forget.
 *
 * Moderators edit, pin and forget single memories; forgetting a person
 * entirely (``DELETE /v1/users/{id}/data``) is an admin's, behind a dialog
 * that asks for the user id to be typed, since it cannot be undone.
 */
import { useEffect, useRef, useState } from 'preact/hooks';
import { api, seg } from '../api';
import type { Session } from '../auth';
import { Dialog } from '../components/Dialog';
import { ErrorAlert } from '../components/ErrorAlert';
import { formatDateTime } from '../format';
import { can } from '../roles';
import type { ListResponse, Memory, Persona } from '../types';

const PAGE = 50;

export function MemoriesPanel({ session }: { session: Session }) {
  const [personas, setPersonas] = useState<Persona[]>([]);
  const [persona, setPersona] = useState('');
  const [user, setUser] = useState('');
  const [memories, setMemories] = useState<Memory[] | null>(null);
  const [loaded, setLoaded] = useState<{ persona: string; user: string } | null>(null);
  const [more, setMore] = useState(false);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const [forgetting, setForgetting] = useState(false);
  const canEdit = can(session.role, 'edit_memory');
  const canForget = can(session.role, 'forget_user');

  useEffect(() => {
    api
      .get<ListResponse<Persona>>('/v1/personas')
      .then((page) => setPersonas(page.data ?? []))
      .catch(setError);
  }, []);

  const fetchPage = async (offset: number) => {
    const query = { persona, user: user.trim(), limit: PAGE, offset };
    return (await api.get<ListResponse<Memory>>('/v1/memories', query)).data ?? [];
  };

  const load = async (event?: Event) => {
    event?.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const page = await fetchPage(0);
      setMemories(page);
      setMore(page.length === PAGE);
      setLoaded({ persona, user: user.trim() });
    } catch (exc) {
      setError(exc);
    } finally {
      setBusy(false);
    }
  };

  const loadMore = async () => {
    if (!memories) return;
    setBusy(true);
    try {
      const page = await fetchPage(memories.length);
      setMemories([...memories, ...page.filter((m) => !memories.some((x) => x.id === m.id))]);
      setMore(page.length === PAGE);
    } catch (exc) {
      setError(exc);
    } finally {
      setBusy(false);
    }
  };

  const replace = (memory: Memory) => setMemories((list) => list?.map((m) => (m.id === memory.id ? memory : m)) ?? null);
  const remove = (id: string) => setMemories((list) => list?.filter((m) => m.id !== id) ?? null);
  const personaName = (id: string) => personas.find((p) => p.id === id)?.name ?? id;

  return (
    <section class="panel" aria-labelledby="memories-title">
      <h1 id="memories-title">Memories</h1>
      <form class="form filters" onSubmit={load}>
        <div class="field">
          <label for="memories-persona">Persona</label>
          <select id="memories-persona" value={persona} onChange={(e) => setPersona(e.currentTarget.value)}>
            <option value="">All personas</option>
            {personas.map((p) => (
              <option key={p.id} value={p.id}>
                {p.name}
              </option>
            ))}
          </select>
        </div>
        <div class="field">
          <label for="memories-user">User id</label>
          <input
            id="memories-user"
            value={user}
            autoComplete="off"
            spellcheck={false}
            onInput={(e) => setUser(e.currentTarget.value)}
          />
        </div>
        <div class="field field-actions">
          <button type="submit" class="btn btn-primary" disabled={busy}>
            Load
          </button>
          {canForget ? (
            <button
              type="button"
              class="btn btn-danger-ghost"
              disabled={!user.trim()}
              onClick={() => setForgetting(true)}
            >
              Forget this user
            </button>
          ) : null}
        </div>
      </form>
      <ErrorAlert error={error} context="Memories" onDismiss={() => setError(null)} />
      {memories === null ? (
        <p class="muted">Choose a persona and/or a user, then Load.</p>
      ) : memories.length === 0 ? (
        <p class="muted" data-testid="no-memories">
          No memories{loaded?.user ? ` about ${loaded.user}` : ''}.
        </p>
      ) : (
        <p class="muted small" role="status">
          {memories.length}
          {more ? '+' : ''} memories
        </p>
      )}
      {memories && memories.length ? (
        <ul class="memory-list" aria-label="Memories">
          {memories.map((m) => (
            <MemoryRow
              key={m.id}
              memory={m}
              personaName={personaName(m.persona_id)}
              canEdit={canEdit}
              onChanged={replace}
              onForgotten={() => remove(m.id)}
            />
          ))}
        </ul>
      ) : null}
      {more ? (
        <button type="button" class="btn" onClick={loadMore} disabled={busy}>
          Load more
        </button>
      ) : null}
      {forgetting ? (
        <ForgetUserDialog
          userId={user.trim()}
          onClose={() => setForgetting(false)}
          onForgotten={() => {
            if (loaded?.user === user.trim()) setMemories([]);
          }}
        />
      ) : null}
    </section>
  );
}

interface RowProps {
  memory: Memory;
  personaName: string;
  canEdit: boolean;
  onChanged: (memory: Memory) => void;
  onForgotten: () => void;
}

function MemoryRow({ memory, personaName, canEdit, onChanged, onForgotten }: RowProps) {
  const [editing, setEditing] = useState(false);
  const [text, setText] = useState(memory.text);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const path = `/v1/memories/${seg(memory.id)}`;

  const act = async (fn: () => Promise<void>) => {
    setBusy(true);
    setError(null);
    try {
      await fn();
    } catch (exc) {
      setError(exc);
    } finally {
      setBusy(false);
    }
  };
  const togglePin = () => act(async () => onChanged(await api.patch<Memory>(path, { pinned: !memory.pinned })));
  const save = (event: Event) => {
    event.preventDefault();
    return act(async () => {
      onChanged(await api.patch<Memory>(path, { text }));
      setEditing(false);
    });
  };
  const forget = () =>
    act(async () => {
      await api.del(path);
      onForgotten();
    });

  const editId = `memory-${memory.id}-text`;
  return (
    <li class={`memory card${memory.pinned ? ' memory-pinned' : ''}`} data-memory-id={memory.id} data-pinned={String(memory.pinned)}>
      <div class="memory-meta">
        <span class="badge">{memory.kind}</span>
        {memory.pinned ? <span class="badge badge-accent">Pinned</span> : null}
        {memory.superseded_by ? <span class="badge">Superseded</span> : null}
        <span class="muted small">
          {personaName} · importance {memory.importance.toFixed(2)} · {formatDateTime(memory.valid_from)}
        </span>
      </div>
      {editing ? (
        <form class="form" onSubmit={save}>
          <div class="field">
            <label for={editId}>Memory text</label>
            <textarea id={editId} rows={3} value={text} onInput={(e) => setText(e.currentTarget.value)} data-autofocus />
          </div>
          <div class="actions">
            <button type="submit" class="btn btn-primary" disabled={busy || !text.trim()}>
              Save
            </button>
            <button
              type="button"
              class="btn"
              onClick={() => {
                setEditing(false);
                setText(memory.text);
              }}
            >
              Cancel
            </button>
          </div>
        </form>
      ) : (
        <p class="memory-text">{memory.text}</p>
      )}
      <ErrorAlert error={error} context="Memory" />
      {canEdit && !editing ? (
        <div class="actions">
          <button type="button" class="btn btn-small" disabled={busy} onClick={togglePin} aria-pressed={memory.pinned ? 'true' : 'false'}>
            {memory.pinned ? 'Unpin' : 'Pin'}
          </button>
          <button
            type="button"
            class="btn btn-small"
            disabled={busy}
            onClick={() => {
              setText(memory.text);
              setEditing(true);
            }}
          >
            Edit
          </button>
          <button type="button" class="btn btn-small btn-danger-ghost" disabled={busy} onClick={forget}>
            Forget
          </button>
        </div>
      ) : null}
    </li>
  );
}

interface Deleted {
  users?: number;
  conversations?: number;
  messages?: number;
  memories?: number;
  export_files?: number;
  [key: string]: number | undefined;
}

function ForgetUserDialog({ userId, onClose, onForgotten }: { userId: string; onClose: () => void; onForgotten: () => void }) {
  const [typed, setTyped] = useState('');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const [deleted, setDeleted] = useState<Deleted | null>(null);
  const closeRef = useRef<HTMLButtonElement>(null);

  // The form (and its focused button) is replaced by the result: focus its Close button.
  useEffect(() => {
    if (deleted) closeRef.current?.focus();
  }, [deleted]);

  const forget = async (event: Event) => {
    event.preventDefault();
    if (typed !== userId) return;
    setBusy(true);
    setError(null);
    try {
      const result = await api.del<{ deleted: Deleted }>(`/v1/users/${seg(userId)}/data`);
      setDeleted(result?.deleted ?? {});
      onForgotten();
    } catch (exc) {
      setError(exc);
    } finally {
      setBusy(false);
    }
  };

  return (
    <Dialog title="Forget this user" onClose={onClose} class="dialog-danger">
      {deleted ? (
        <div role="status" data-testid="forget-result">
          <p>
            Everything stored about <strong>{userId}</strong> was deleted:
          </p>
          <ul class="deleted-list">
            {Object.entries(deleted).map(([key, count]) => (
              <li key={key} data-deleted={key}>
                {key.replace(/_/g, ' ')}: {count ?? 0}
              </li>
            ))}
          </ul>
          <div class="actions">
            <button type="button" class="btn btn-primary" onClick={onClose} ref={closeRef}>
              Close
            </button>
          </div>
        </div>
      ) : (
        <form class="form" onSubmit={forget}>
          <p>
            This deletes <strong>{userId}</strong>’s messages, conversations and memories for every persona. It cannot be
            undone.
          </p>
          <div class="field">
            <label for="forget-confirm">Type the user id to confirm</label>
            <input
              id="forget-confirm"
              value={typed}
              autoComplete="off"
              spellcheck={false}
              onInput={(e) => setTyped(e.currentTarget.value)}
              data-autofocus
            />
          </div>
          <ErrorAlert error={error} context="Could not forget the user" />
          <div class="actions">
            <button type="button" class="btn" onClick={onClose}>
              Cancel
            </button>
            <button type="submit" class="btn btn-danger" disabled={busy || typed !== userId}>
              Forget user
            </button>
          </div>
        </form>
      )}
    </Dialog>
  );
}
