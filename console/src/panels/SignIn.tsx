/**
 * The sign-in page: an operator account (email + password) or a tenant API key.
 */
import { useState } from 'preact/hooks';
import { signIn } from '../auth';
import { brandingStore } from '../branding';
import { ErrorAlert } from '../components/ErrorAlert';
import { Tabs, tabPanelProps } from '../components/Tabs';
import { useStore } from '../store';

type Mode = 'operator' | 'api_key';

export function SignIn({ message }: { message?: string }) {
  const branding = useStore(brandingStore);
  const [mode, setMode] = useState<Mode>('operator');
  const [email, setEmail] = useState('');
  const [password, setPassword] = useState('');
  const [apiKey, setApiKey] = useState('');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);

  const submit = async (event: Event) => {
    event.preventDefault();
    setBusy(true);
    setError(null);
    try {
      await signIn(mode === 'operator' ? { email: email.trim(), password } : { api_key: apiKey.trim() });
    } catch (exc) {
      setError(exc);
      setBusy(false);
    }
  };

  return (
    <div class="signin-page">
      <a class="skip-link" href="#main">
        Skip to content
      </a>
      <header class="signin-header">
        <span class="brand">
          {branding.logo ? <img class="brand-logo" src={branding.logo} alt="" /> : null}
          <span class="brand-name" data-testid="brand-name">
            {branding.name}
          </span>
        </span>
      </header>
      <main id="main" class="signin-main" tabIndex={-1}>
        <div class="card signin-card">
          <h1>Sign in to the {branding.name} console</h1>
          {message ? (
            <p class="alert alert-info" role="alert" data-testid="signin-message">
              {message}
            </p>
          ) : null}
          <Tabs
            label="Sign-in method"
            idPrefix="signin"
            tabs={[
              { id: 'operator', label: 'Operator account' },
              { id: 'api_key', label: 'API key' },
            ]}
            selected={mode}
            onSelect={(id) => {
              setMode(id as Mode);
              setError(null);
            }}
          />
          <div {...tabPanelProps('signin', mode, 'Credentials')}>
          <form class="form signin-form" onSubmit={submit}>
            {mode === 'operator' ? (
              <>
                <div class="field">
                  <label for="signin-email">Email</label>
                  <input
                    id="signin-email"
                    type="email"
                    autoComplete="username"
                    required
                    value={email}
                    onInput={(e) => setEmail(e.currentTarget.value)}
                  />
                </div>
                <div class="field">
                  <label for="signin-password">Password</label>
                  <input
                    id="signin-password"
                    type="password"
                    autoComplete="current-password"
                    required
                    value={password}
                    onInput={(e) => setPassword(e.currentTarget.value)}
                  />
                </div>
              </>
            ) : (
              <div class="field">
                <label for="signin-api-key">API key</label>
                <input
                  id="signin-api-key"
                  type="password"
                  autoComplete="off"
                  spellcheck={false}
                  required
                  value={apiKey}
                  onInput={(e) => setApiKey(e.currentTarget.value)}
                />
                <p class="hint">A tenant API key. It is exchanged for a console token and not stored.</p>
              </div>
            )}
            <ErrorAlert error={error} context="Sign-in failed" />
            <button type="submit" class="btn btn-primary" disabled={busy}>
              {busy ? 'Signing in…' : 'Sign in'}
            </button>
          </form>
          </div>
        </div>
      </main>
    </div>
  );
}
