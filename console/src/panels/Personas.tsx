/**
 * Personas: list, create, edit, delete, import and export Character Cards.
 *
 * Admins change personas; everyone else sees them read-only (the form's
 * fieldset is disabled) and may export cards. The selected persona is in the
 * URL (``/console/personas/<id>``) so a link opens it.
 */
import { useEffect, useState } from 'preact/hooks';
import { api, seg } from '../api';
import type { Session } from '../auth';
import { AvatarPreview } from '../components/AvatarPreview';
import { ConfirmDialog } from '../components/Dialog';
import { ErrorAlert } from '../components/ErrorAlert';
import { useApiList } from '../hooks';
import { can } from '../roles';
import { href, navigate } from '../router';
import type { ClonedVoice, ListResponse, Persona, PersonaVoice } from '../types';

interface Props {
  session: Session;
  personaId: string | null;
}

const NEW = 'new';

export function PersonasPanel({ session, personaId }: Props) {
  const { items: personas, setItems: setPersonas, loading, error, reload: load } = useApiList<Persona>('/v1/personas');
  const [importing, setImporting] = useState(false);
  const [importError, setImportError] = useState<unknown>(null);
  const [notice, setNotice] = useState('');
  const admin = can(session.role, 'manage_personas');

  const onImport = async (event: Event) => {
    const input = event.currentTarget as HTMLInputElement;
    const file = input.files?.[0];
    if (!file) return;
    setImporting(true);
    setImportError(null);
    setNotice('');
    try {
      const created = await importCard(file);
      await load();
      setNotice(`Imported ${created.name}.`);
      navigate(href('personas', created.id));
    } catch (exc) {
      setImportError(exc);
    } finally {
      setImporting(false);
      input.value = '';
    }
  };

  const selected = personaId && personaId !== NEW ? personas.find((p) => p.id === personaId || p.slug === personaId) ?? null : null;

  return (
    <section class="panel" aria-labelledby="personas-title">
      <h1 id="personas-title">Personas</h1>
      <ErrorAlert error={error} context="Could not load personas" />
      <div class="split">
        <div class="split-list">
          {admin ? (
            <div class="toolbar">
              <button type="button" class="btn btn-primary" onClick={() => navigate(href('personas', NEW))}>
                New persona
              </button>
              <div class="field file-field">
                <label for="persona-import">Import Character Card</label>
                <input
                  id="persona-import"
                  type="file"
                  accept=".json,.png,application/json,image/png"
                  onChange={onImport}
                  disabled={importing}
                  aria-describedby="persona-import-hint"
                />
                <p class="hint" id="persona-import-hint">
                  A Character Card V1, V2 or V3: JSON, or a PNG with the card inside.
                </p>
              </div>
            </div>
          ) : null}
          <ErrorAlert error={importError} context="Import failed" onDismiss={() => setImportError(null)} />
          {notice ? (
            <p class="note" role="status">
              {notice}
            </p>
          ) : null}
          {loading ? (
            <p class="muted" role="status">
              Loading personas…
            </p>
          ) : personas.length === 0 ? (
            <p class="muted">No personas yet.</p>
          ) : null}
          <ul class="item-list" aria-label="Personas">
            {personas.map((p) => (
              <li key={p.id}>
                <button
                  type="button"
                  class={`item${selected?.id === p.id ? ' item-selected' : ''}`}
                  data-persona-id={p.id}
                  aria-current={selected?.id === p.id ? 'true' : undefined}
                  onClick={() => navigate(href('personas', p.id))}
                >
                  <span class="item-title">{p.name}</span>
                  <span class="item-sub">{p.slug}</span>
                </button>
              </li>
            ))}
          </ul>
        </div>
        <div class="split-detail">
          {personaId === NEW && admin ? (
            <PersonaEditor
              key="new"
              persona={null}
              admin={admin}
              onSaved={async (p) => {
                await load();
                setNotice(`Created ${p.name}.`);
                navigate(href('personas', p.id), { replace: true });
              }}
              onDeleted={() => undefined}
            />
          ) : selected ? (
            <PersonaEditor
              key={selected.id}
              persona={selected}
              admin={admin}
              onSaved={async (p) => {
                setPersonas((list) => list.map((x) => (x.id === p.id ? p : x)));
                setNotice(`Saved ${p.name}.`);
              }}
              onDeleted={async (p) => {
                setPersonas((list) => list.filter((x) => x.id !== p.id));
                setNotice(`Deleted ${p.name}.`);
                navigate(href('personas'), { replace: true });
              }}
            />
          ) : personaId && !loading ? (
            <p class="muted">This persona does not exist (any more).</p>
          ) : (
            <p class="muted empty-detail">Choose a persona{admin ? ', or create one' : ''}.</p>
          )}
        </div>
      </div>
    </section>
  );
}

/** JSON cards are sent as they are; PNG cards as the raw bytes (the server reads the chunks). */
async function importCard(file: File): Promise<Persona> {
  const isPng = file.type === 'image/png' || /\.png$/i.test(file.name);
  if (isPng) return api.postRaw<Persona>('/v1/personas', file, 'image/png');
  let card: unknown;
  try {
    card = JSON.parse(await file.text());
  } catch {
    throw new Error(`${file.name} is not valid JSON.`);
  }
  return api.post<Persona>('/v1/personas', card);
}

// -- the editor -------------------------------------------------------------------------

interface VoiceForm {
  cloned: string;
  name: string;
  language: string;
  speed: string;
}

/** The persona's ``voice`` (a string or an object) as form fields. */
export function voiceToForm(voice: PersonaVoice | undefined, cloned: ClonedVoice[]): VoiceForm {
  const form: VoiceForm = { cloned: '', name: '', language: '', speed: '' };
  if (!voice) return form;
  const id = typeof voice === 'string' ? voice : (voice.voice ?? voice.id ?? '');
  if (typeof id === 'string' && id) {
    if (id.startsWith('voice_') || cloned.some((v) => v.id === id)) form.cloned = id;
    else form.name = id;
  }
  if (typeof voice === 'object') {
    if (typeof voice.language === 'string') form.language = voice.language;
    if (typeof voice.speed === 'number') form.speed = String(voice.speed);
  }
  return form;
}

/** Form fields back into ``voice``, keeping keys the form does not show (provider, emotion...). */
export function formToVoice(form: VoiceForm, original: PersonaVoice | undefined): PersonaVoice {
  const out: Record<string, unknown> = typeof original === 'object' && original ? { ...original } : {};
  delete out.voice;
  delete out.id;
  delete out.language;
  delete out.speed;
  const id = form.cloned || form.name.trim();
  if (id) out.voice = id;
  if (form.language.trim()) out.language = form.language.trim();
  if (form.speed.trim() !== '') out.speed = Number(form.speed);
  return Object.keys(out).length ? (out as PersonaVoice) : null;
}

const TEXT_FIELDS = [
  { key: 'description', label: 'Description', rows: 3 },
  { key: 'personality', label: 'Personality', rows: 3 },
  { key: 'scenario', label: 'Scenario', rows: 3 },
  { key: 'first_mes', label: 'First message', rows: 3 },
  { key: 'system_prompt', label: 'System prompt', rows: 4 },
] as const;

type TextKey = (typeof TEXT_FIELDS)[number]['key'];

interface EditorProps {
  persona: Persona | null;
  admin: boolean;
  onSaved: (persona: Persona) => void | Promise<void>;
  onDeleted: (persona: Persona) => void | Promise<void>;
}

function PersonaEditor({ persona, admin, onSaved, onDeleted }: EditorProps) {
  const [name, setName] = useState(persona?.name ?? '');
  const [texts, setTexts] = useState<Record<TextKey, string>>(() => ({
    description: String(persona?.description ?? ''),
    personality: String(persona?.personality ?? ''),
    scenario: String(persona?.scenario ?? ''),
    first_mes: String(persona?.first_mes ?? ''),
    system_prompt: String(persona?.system_prompt ?? ''),
  }));
  const [voices, setVoices] = useState<ClonedVoice[]>([]);
  const [voicesError, setVoicesError] = useState<unknown>(null);
  const [voice, setVoice] = useState<VoiceForm>(() => voiceToForm(persona?.voice, []));
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const [confirmDelete, setConfirmDelete] = useState(false);
  const [deleteError, setDeleteError] = useState<unknown>(null);
  const [exportError, setExportError] = useState<unknown>(null);

  useEffect(() => {
    let cancelled = false;
    api
      .get<ListResponse<ClonedVoice>>('/v1/voices', { status: 'active' })
      .then((page) => {
        if (cancelled) return;
        const list = page.data ?? [];
        setVoices(list);
        setVoice(voiceToForm(persona?.voice, list));
      })
      .catch((exc) => !cancelled && setVoicesError(exc));
    return () => {
      cancelled = true;
    };
  }, []);

  const save = async (event: Event) => {
    event.preventDefault();
    if (!name.trim()) {
      setError(new Error('A persona needs a name.'));
      return;
    }
    const speed = voice.speed.trim();
    if (speed !== '' && !(Number(speed) >= 0.25 && Number(speed) <= 4)) {
      setError(new Error('Speed must be between 0.25 and 4.'));
      return;
    }
    setBusy(true);
    setError(null);
    const body = { name: name.trim(), ...texts, voice: formToVoice(voice, persona?.voice) };
    try {
      const saved = persona
        ? await api.patch<Persona>(`/v1/personas/${seg(persona.id)}`, body)
        : await api.post<Persona>('/v1/personas', body);
      await onSaved(saved);
    } catch (exc) {
      setError(exc);
    } finally {
      setBusy(false);
    }
  };

  const remove = async () => {
    if (!persona) return;
    setBusy(true);
    setDeleteError(null);
    try {
      await api.del(`/v1/personas/${seg(persona.id)}`);
      setConfirmDelete(false);
      await onDeleted(persona);
    } catch (exc) {
      setDeleteError(exc);
      setBusy(false);
    }
  };

  const exportCard = async (format: 'v2' | 'v3' | 'png') => {
    if (!persona) return;
    setExportError(null);
    try {
      const blob = await api.blob(`/v1/personas/${seg(persona.id)}/card`, { format });
      const stem = persona.slug || persona.id;
      download(blob, format === 'png' ? `${stem}.png` : `${stem}.card-${format}.json`);
    } catch (exc) {
      setExportError(exc);
    }
  };

  const title = persona ? persona.name : 'New persona';
  return (
    <div class="editor" data-testid="persona-editor" data-persona-id={persona?.id}>
      <h2>{title}</h2>
      {!admin ? <p class="note">Only admins can change personas.</p> : null}
      <form class="form" onSubmit={save}>
        <fieldset disabled={!admin || busy} class="plain">
          <legend class="sr-only">Persona</legend>
          <div class="field">
            <label for="persona-name">Name</label>
            <input id="persona-name" required maxLength={200} value={name} onInput={(e) => setName(e.currentTarget.value)} />
          </div>
          {TEXT_FIELDS.map((f) => (
            <div class="field" key={f.key}>
              <label for={`persona-${f.key}`}>{f.label}</label>
              <textarea
                id={`persona-${f.key}`}
                rows={f.rows}
                value={texts[f.key]}
                onInput={(e) => {
                  const value = e.currentTarget.value;
                  setTexts((t) => ({ ...t, [f.key]: value }));
                }}
              />
            </div>
          ))}
          <fieldset class="group">
            <legend>Voice</legend>
            <div class="grid-2">
              <div class="field">
                <label for="persona-voice-cloned">Cloned voice</label>
                <select
                  id="persona-voice-cloned"
                  value={voice.cloned}
                  onChange={(e) => setVoice({ ...voice, cloned: e.currentTarget.value })}
                >
                  <option value="">None</option>
                  {voices.map((v) => (
                    <option key={v.id} value={v.id}>
                      {v.name}
                    </option>
                  ))}
                  {voice.cloned && !voices.some((v) => v.id === voice.cloned) ? (
                    <option value={voice.cloned}>{voice.cloned}</option>
                  ) : null}
                </select>
              </div>
              <div class="field">
                <label for="persona-voice-name">Voice name</label>
                <input
                  id="persona-voice-name"
                  value={voice.name}
                  placeholder="e.g. en-us, alloy"
                  disabled={!!voice.cloned}
                  aria-describedby="persona-voice-hint"
                  onInput={(e) => setVoice({ ...voice, name: e.currentTarget.value })}
                />
              </div>
              <div class="field">
                <label for="persona-voice-language">Language</label>
                <input
                  id="persona-voice-language"
                  value={voice.language}
                  placeholder="e.g. en, de"
                  maxLength={20}
                  onInput={(e) => setVoice({ ...voice, language: e.currentTarget.value })}
                />
              </div>
              <div class="field">
                <label for="persona-voice-speed">Speed</label>
                <input
                  id="persona-voice-speed"
                  type="number"
                  min={0.25}
                  max={4}
                  step={0.05}
                  value={voice.speed}
                  placeholder="1"
                  onInput={(e) => setVoice({ ...voice, speed: e.currentTarget.value })}
                />
              </div>
            </div>
            <p class="hint" id="persona-voice-hint">
              A cloned voice wins over the voice name (the TTS provider’s own voice id). Empty fields use the
              server’s default voice.
            </p>
          </fieldset>
        </fieldset>
        {voicesError ? <ErrorAlert error={voicesError} context="Cloned voices could not be listed" /> : null}
        <ErrorAlert error={error} context="Could not save the persona" />
        {admin ? (
          <div class="actions">
            <button type="submit" class="btn btn-primary" disabled={busy}>
              Save
            </button>
            {persona ? (
              <button type="button" class="btn btn-danger-ghost" disabled={busy} onClick={() => setConfirmDelete(true)}>
                Delete
              </button>
            ) : null}
          </div>
        ) : null}
      </form>
      {persona ? (
        <>
          <section class="exports" aria-labelledby="persona-export-title">
            <h3 id="persona-export-title">Export Character Card</h3>
            <div class="actions">
              <button type="button" class="btn" onClick={() => exportCard('v2')}>
                Export V2
              </button>
              <button type="button" class="btn" onClick={() => exportCard('v3')}>
                Export V3
              </button>
              <button type="button" class="btn" onClick={() => exportCard('png')}>
                Export PNG
              </button>
            </div>
            <ErrorAlert error={exportError} context="Export failed" />
          </section>
          <AvatarPreview personaId={persona.id} personaName={persona.name} canGenerate={admin} />
        </>
      ) : null}
      {confirmDelete && persona ? (
        <ConfirmDialog
          title="Delete persona"
          message={
            <p>
              Delete <strong>{persona.name}</strong>? Its conversations are deleted with it. This cannot be undone.
            </p>
          }
          confirmLabel="Delete persona"
          busy={busy}
          error={<ErrorAlert error={deleteError} context="Could not delete" />}
          onConfirm={remove}
          onCancel={() => {
            setConfirmDelete(false);
            setBusy(false);
          }}
        />
      ) : null}
    </div>
  );
}

/** Save a blob as a file through a temporary link. */
export function download(blob: Blob, filename: string): void {
  const url = URL.createObjectURL(blob);
  const a = document.createElement('a');
  a.href = url;
  a.download = filename;
  a.style.display = 'none';
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}
