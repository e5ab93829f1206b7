/**
 * Settings: who you are; for admins also the branding and the operator accounts.
 */
import { useEffect, useState } from 'preact/hooks';
import { api, seg } from '../api';
import { displayName, type Session } from '../auth';
import {
  brandingStore,
  brandVariables,
  COLOR_KEYS,
  contrastRatio,
  MAX_LOGO_BYTES,
  readLogo,
  saveBranding,
} from '../branding';
import { ConfirmDialog, Dialog } from '../components/Dialog';
import { ErrorAlert } from '../components/ErrorAlert';
import { formatDateTime } from '../format';
import { useApiList } from '../hooks';
import { can, ROLE_LABELS } from '../roles';
import { useStore } from '../store';
import type { BrandColors, Branding, Operator, Role } from '../types';

const ROLES: Role[] = ['viewer', 'moderator', 'admin'];

export function SettingsPanel({ session }: { session: Session }) {
  return (
    <section class="panel" aria-labelledby="settings-title">
      <h1 id="settings-title">Settings</h1>
      <Identity session={session} />
      {can(session.role, 'branding') ? <BrandingForm /> : null}
      {can(session.role, 'operators') ? <Operators session={session} /> : null}
      {!can(session.role, 'branding') ? (
        <p class="note">Branding and operator accounts are managed by admins.</p>
      ) : null}
    </section>
  );
}

function Identity({ session }: { session: Session }) {
  return (
    <section class="card" aria-labelledby="identity-title" data-testid="identity-card">
      <h2 id="identity-title">You</h2>
      <dl class="facts">
        <dt>Signed in as</dt>
        <dd data-testid="identity-name">{displayName(session)}</dd>
        {session.operator?.email ? (
          <>
            <dt>Email</dt>
            <dd>{session.operator.email}</dd>
          </>
        ) : null}
        <dt>Signed in with</dt>
        <dd>{session.kind === 'api_key' ? 'An API key' : 'An operator account'}</dd>
        <dt>Role</dt>
        <dd data-testid="identity-role">{ROLE_LABELS[session.role] ?? session.role}</dd>
        <dt>Tenant</dt>
        <dd>{session.tenant?.name ?? session.tenant?.id}</dd>
        {session.expiresAt ? (
          <>
            <dt>Session ends</dt>
            <dd>{formatDateTime(session.expiresAt)}</dd>
          </>
        ) : null}
      </dl>
    </section>
  );
}

// -- branding ---------------------------------------------------------------------------

const COLOR_LABELS: Record<keyof BrandColors, string> = {
  primary: 'Primary color',
  accent: 'Accent color',
  background: 'Background color',
  surface: 'Surface color',
  text: 'Text color',
};

function BrandingForm() {
  const current = useStore(brandingStore);
  const [draft, setDraft] = useState<Branding>(current);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const [logoError, setLogoError] = useState<string | null>(null);
  const [saved, setSaved] = useState(false);
  // The form stays disabled until the server's branding is in: an edit made before
  // it arrived would be overwritten by it.
  const [loaded, setLoaded] = useState(false);

  // Start from the server's branding, not a stale cached one.
  useEffect(() => {
    api
      .get<Branding>('/v1/branding')
      .then((b) => {
        setDraft({ name: b.name, logo: b.logo ?? null, colors: { ...current.colors, ...b.colors } });
        setLoaded(true);
      })
      .catch(setError);
  }, []);

  const onLogo = async (event: Event) => {
    const input = event.currentTarget as HTMLInputElement;
    const file = input.files?.[0];
    setLogoError(null);
    if (!file) return;
    try {
      const logo = await readLogo(file);
      setDraft((d) => ({ ...d, logo }));
    } catch (exc) {
      setLogoError(exc instanceof Error ? exc.message : String(exc));
      input.value = '';
    }
  };

  const save = async (event: Event) => {
    event.preventDefault();
    if (!draft.name.trim()) {
      setError(new Error('The console needs a name.'));
      return;
    }
    setBusy(true);
    setError(null);
    setSaved(false);
    try {
      const result = await saveBranding({ ...draft, name: draft.name.trim() });
      setDraft(result);
      setSaved(true);
    } catch (exc) {
      setError(exc);
    } finally {
      setBusy(false);
    }
  };

  const contrast = contrastRatio(draft.colors.text, draft.colors.background);
  const surfaceContrast = contrastRatio(draft.colors.text, draft.colors.surface);
  const lowContrast = Math.min(contrast, surfaceContrast) < 4.5;

  return (
    <section class="card" aria-labelledby="branding-title">
      <h2 id="branding-title">Branding</h2>
      <div class="branding-layout">
        <form class="form" onSubmit={save} aria-busy={!loaded}>
          <fieldset class="plain" disabled={!loaded}>
          <div class="field">
            <label for="branding-name">Console name</label>
            <input
              id="branding-name"
              maxLength={100}
              required
              value={draft.name}
              onInput={(e) => {
                const name = e.currentTarget.value;
                setDraft((d) => ({ ...d, name }));
              }}
            />
          </div>
          <div class="field">
            <label for="branding-logo">Logo</label>
            <input
              id="branding-logo"
              type="file"
              accept="image/png,image/jpeg,image/webp,image/gif,image/svg+xml"
              onChange={onLogo}
              aria-describedby="branding-logo-hint"
            />
            <p class="hint" id="branding-logo-hint">
              PNG, JPEG, WebP, GIF or SVG, at most {MAX_LOGO_BYTES / 1024} KiB.
            </p>
            {logoError ? (
              <p class="alert alert-error" role="alert" data-testid="logo-error">
                {logoError}
              </p>
            ) : null}
            {draft.logo ? (
              <button type="button" class="btn btn-small" onClick={() => setDraft((d) => ({ ...d, logo: null }))}>
                Remove logo
              </button>
            ) : null}
          </div>
          <div class="grid-2">
            {COLOR_KEYS.map((key) => (
              <div class="field color-field" key={key}>
                <label for={`branding-${key}`}>{COLOR_LABELS[key]}</label>
                <input
                  id={`branding-${key}`}
                  type="color"
                  value={draft.colors[key]}
                  onInput={(e) => {
                    const value = e.currentTarget.value;
                    setDraft((d) => ({ ...d, colors: { ...d.colors, [key]: value } }));
                  }}
                />
                <code class="small">{draft.colors[key]}</code>
              </div>
            ))}
          </div>
          {lowContrast ? (
            <p class="note small" role="status">
              The text colour has a contrast of {Math.min(contrast, surfaceContrast).toFixed(1)}:1 on the background or
              surface; 4.5:1 or more is easier to read.
            </p>
          ) : null}
          <ErrorAlert error={error} context="Branding" />
          {saved ? (
            <p class="note" role="status">
              Branding saved.
            </p>
          ) : null}
          <div class="actions">
            <button type="submit" class="btn btn-primary" disabled={busy}>
              Save branding
            </button>
          </div>
          </fieldset>
        </form>
        <BrandingPreview branding={draft} />
      </div>
    </section>
  );
}

/** The draft branding applied to a miniature console (only inside the preview box). */
function BrandingPreview({ branding }: { branding: Branding }) {
  return (
    <figure class="brand-preview" style={brandVariables(branding.colors)} aria-labelledby="branding-preview-caption">
      <figcaption id="branding-preview-caption" class="small muted">
        Preview
      </figcaption>
      <div class="preview-frame" data-testid="branding-preview">
        <div class="preview-bar">
          {branding.logo ? <img class="brand-logo" src={branding.logo} alt="" /> : null}
          <span class="preview-name">{branding.name || 'Console'}</span>
        </div>
        <div class="preview-body">
          <div class="preview-card">
            <p>A persona’s reply looks like this.</p>
            <span class="preview-button">Primary action</span> <span class="preview-accent">Accent</span>
          </div>
        </div>
      </div>
    </figure>
  );
}

// -- operators --------------------------------------------------------------------------

function Operators({ session }: { session: Session }) {
  const { items: operators, setItems: setOperators, loading, error } = useApiList<Operator>('/v1/operators');

  const replace = (op: Operator) => setOperators((list) => list.map((o) => (o.id === op.id ? op : o)));

  return (
    <section class="card" aria-labelledby="operators-title">
      <h2 id="operators-title">Operators</h2>
      <ErrorAlert error={error} context="Could not load operators" />
      {loading ? (
        <p class="muted" role="status">
          Loading operators…
        </p>
      ) : operators.length === 0 ? (
        <p class="muted">No operator accounts yet. Add one below; they sign in with email and password.</p>
      ) : (
        <div class="table-wrap">
          <table class="operators">
            <caption class="sr-only">Operator accounts</caption>
            <thead>
              <tr>
                <th scope="col">Email</th>
                <th scope="col">Name</th>
                <th scope="col">Role</th>
                <th scope="col">Status</th>
                <th scope="col">Actions</th>
              </tr>
            </thead>
            <tbody>
              {operators.map((op) => (
                <OperatorRow
                  key={op.id}
                  operator={op}
                  self={op.id === session.operatorId}
                  onChanged={replace}
                  onRemoved={() => setOperators((list) => list.filter((o) => o.id !== op.id))}
                />
              ))}
            </tbody>
          </table>
        </div>
      )}
      <AddOperator onAdded={(op) => setOperators((list) => [...list.filter((o) => o.id !== op.id), op])} />
    </section>
  );
}

interface RowProps {
  operator: Operator;
  self: boolean;
  onChanged: (op: Operator) => void;
  onRemoved: () => void;
}

function OperatorRow({ operator: op, self, onChanged, onRemoved }: RowProps) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const [confirm, setConfirm] = useState(false);
  const [passwordFor, setPasswordFor] = useState(false);
  const path = `/v1/operators/${seg(op.id)}`;

  const patch = async (body: Partial<Pick<Operator, 'role' | 'disabled' | 'name'>> & { password?: string }) => {
    setBusy(true);
    setError(null);
    try {
      onChanged(await api.patch<Operator>(path, body));
      return true;
    } catch (exc) {
      setError(exc);
      return false;
    } finally {
      setBusy(false);
    }
  };
  const remove = async () => {
    setBusy(true);
    setError(null);
    try {
      await api.del(path);
      setConfirm(false);
      onRemoved();
    } catch (exc) {
      setError(exc);
      setBusy(false);
    }
  };

  const roleId = `operator-${op.id}-role`;
  return (
    <tr data-operator-id={op.id} data-disabled={String(!!op.disabled)}>
      <th scope="row">
        {op.email}
        {self ? <span class="muted small"> (you)</span> : null}
      </th>
      <td>{op.name}</td>
      <td>
        <label for={roleId} class="sr-only">
          Role for {op.email}
        </label>
        <select
          id={roleId}
          value={op.role}
          disabled={busy || self}
          onChange={(e) => void patch({ role: e.currentTarget.value as Role })}
        >
          {ROLES.map((r) => (
            <option key={r} value={r}>
              {ROLE_LABELS[r]}
            </option>
          ))}
        </select>
      </td>
      <td>{op.disabled ? <span class="badge badge-warn">Disabled</span> : <span class="badge">Active</span>}</td>
      <td>
        <div class="actions actions-tight">
          <button
            type="button"
            class="btn btn-small"
            disabled={busy || self}
            onClick={() => void patch({ disabled: !op.disabled })}
            aria-label={`${op.disabled ? 'Enable' : 'Disable'} ${op.email}`}
          >
            {op.disabled ? 'Enable' : 'Disable'}
          </button>
          <button
            type="button"
            class="btn btn-small"
            disabled={busy}
            onClick={() => setPasswordFor(true)}
            aria-label={`Set password for ${op.email}`}
          >
            Set password
          </button>
          <button
            type="button"
            class="btn btn-small btn-danger-ghost"
            disabled={busy || self}
            onClick={() => setConfirm(true)}
            aria-label={`Remove ${op.email}`}
          >
            Remove
          </button>
        </div>
        {error && !confirm ? <ErrorAlert error={error} context={op.email} onDismiss={() => setError(null)} /> : null}
        {confirm ? (
          <ConfirmDialog
            title="Remove operator"
            message={
              <p>
                Remove <strong>{op.email}</strong>? They can no longer sign in.
              </p>
            }
            confirmLabel="Remove operator"
            busy={busy}
            error={<ErrorAlert error={error} context="Could not remove" />}
            onConfirm={remove}
            onCancel={() => {
              setConfirm(false);
              setError(null);
            }}
          />
        ) : null}
        {passwordFor ? (
          <PasswordDialog
            email={op.email}
            onClose={() => setPasswordFor(false)}
            onSave={async (password) => {
              if (await patch({ password })) setPasswordFor(false);
            }}
            busy={busy}
            error={error}
          />
        ) : null}
      </td>
    </tr>
  );
}

function PasswordDialog({
  email,
  onClose,
  onSave,
  busy,
  error,
}: {
  email: string;
  onClose: () => void;
  onSave: (password: string) => void;
  busy: boolean;
  error: unknown;
}) {
  const [password, setPassword] = useState('');
  return (
    <Dialog title={`Set password for ${email}`} onClose={onClose}>
      <form
        class="form"
        onSubmit={(e) => {
          e.preventDefault();
          onSave(password);
        }}
      >
        <div class="field">
          <label for="operator-new-password">New password</label>
          <input
            id="operator-new-password"
            type="password"
            autoComplete="new-password"
            minLength={10}
            required
            value={password}
            onInput={(e) => setPassword(e.currentTarget.value)}
          />
        </div>
        <ErrorAlert error={error} context="Could not set the password" />
        <div class="actions">
          <button type="button" class="btn" onClick={onClose}>
            Cancel
          </button>
          <button type="submit" class="btn btn-primary" disabled={busy || !password}>
            Set password
          </button>
        </div>
      </form>
    </Dialog>
  );
}

function AddOperator({ onAdded }: { onAdded: (op: Operator) => void }) {
  const [email, setEmail] = useState('');
  const [name, setName] = useState('');
  const [password, setPassword] = useState('');
  const [role, setRole] = useState<Role>('moderator');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const [added, setAdded] = useState('');

  const submit = async (event: Event) => {
    event.preventDefault();
    setBusy(true);
    setError(null);
    setAdded('');
    try {
      const body: Record<string, string> = { email: email.trim(), password, role };
      if (name.trim()) body.name = name.trim();
      const op = await api.post<Operator>('/v1/operators', body);
      onAdded(op);
      setAdded(`Added ${op.email}.`);
      setEmail('');
      setName('');
      setPassword('');
    } catch (exc) {
      setError(exc);
    } finally {
      setBusy(false);
    }
  };

  return (
    <form class="form add-operator" onSubmit={submit} aria-labelledby="add-operator-title">
      <h3 id="add-operator-title">Add operator</h3>
      <div class="grid-2">
        <div class="field">
          <label for="new-operator-email">Email</label>
          <input
            id="new-operator-email"
            type="email"
            required
            autoComplete="off"
            value={email}
            onInput={(e) => setEmail(e.currentTarget.value)}
          />
        </div>
        <div class="field">
          <label for="new-operator-name">Name</label>
          <input id="new-operator-name" maxLength={200} value={name} onInput={(e) => setName(e.currentTarget.value)} />
        </div>
        <div class="field">
          <label for="new-operator-password">Password</label>
          <input
            id="new-operator-password"
            type="password"
            required
            minLength={10}
            autoComplete="new-password"
            value={password}
            onInput={(e) => setPassword(e.currentTarget.value)}
          />
        </div>
        <div class="field">
          <label for="new-operator-role">Role</label>
          <select id="new-operator-role" value={role} onChange={(e) => setRole(e.currentTarget.value as Role)}>
            {ROLES.map((r) => (
              <option key={r} value={r}>
                {ROLE_LABELS[r]}
              </option>
            ))}
          </select>
        </div>
      </div>
      <ErrorAlert error={error} context="Could not add the operator" />
      {added ? (
        <p class="note" role="status">
          {added}
        </p>
      ) : null}
      <div class="actions">
        <button type="submit" class="btn btn-primary" disabled={busy}>
          Add operator
        </button>
      </div>
    </form>
  );
}
