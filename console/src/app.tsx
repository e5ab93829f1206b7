/**
 * The console's shell: sign-in gate, header, navigation and the routed panel.
 */
import { useEffect, useRef, useState } from 'preact/hooks';
import { authStore, displayName, restoreSession, signOut, type Session } from './auth';
import { brandingStore } from './branding';
import { ConnectionStatus } from './components/ConnectionStatus';
import { ops } from './ops';
import { AnalyticsPanel } from './panels/Analytics';
import { LivePanel } from './panels/Live';
import { MemoriesPanel } from './panels/Memories';
import { PersonasPanel } from './panels/Personas';
import { QueuesPanel } from './panels/Queues';
import { SettingsPanel } from './panels/Settings';
import { SignIn } from './panels/SignIn';
import { ROLE_LABELS } from './roles';
import { href, Link, navigate, useRoute } from './router';
import { useStore } from './store';

export const PANELS = [
  { id: 'live', label: 'Live' },
  { id: 'queues', label: 'Queues' },
  { id: 'personas', label: 'Personas' },
  { id: 'memories', label: 'Memories' },
  { id: 'analytics', label: 'Analytics' },
  { id: 'settings', label: 'Settings' },
] as const;

export function App() {
  const auth = useStore(authStore);
  useEffect(() => {
    void restoreSession();
  }, []);

  const token = auth.status === 'signed-in' ? auth.session.token : null;
  useEffect(() => {
    if (token) ops.connect(token);
    else ops.close();
  }, [token]);

  if (auth.status === 'checking') {
    return (
      <p class="boot" role="status">
        Loading the console…
      </p>
    );
  }
  if (auth.status === 'signed-out') return <SignIn message={auth.message} />;
  return <Shell session={auth.session} />;
}

function Shell({ session }: { session: Session }) {
  const route = useRoute();
  const branding = useStore(brandingStore);
  const [navOpen, setNavOpen] = useState(false);
  const mainRef = useRef<HTMLElement>(null);
  const firstPanel = useRef(true);

  useEffect(() => {
    if (route.panel === '') navigate(href('live'), { replace: true });
  }, [route.panel]);

  // After an in-app navigation, move focus to the new panel so keyboard and
  // screen-reader users land on it (not on the first render).
  useEffect(() => {
    setNavOpen(false);
    if (firstPanel.current) {
      firstPanel.current = false;
      return;
    }
    mainRef.current?.focus();
  }, [route.panel]);

  const who = displayName(session);
  return (
    <div class={`shell${navOpen ? ' nav-open' : ''}`}>
      <a class="skip-link" href="#main">
        Skip to content
      </a>
      <header class="topbar">
        <button
          type="button"
          class="btn btn-ghost menu-button"
          aria-expanded={navOpen ? 'true' : 'false'}
          aria-controls="main-nav"
          onClick={() => setNavOpen(!navOpen)}
        >
          <span aria-hidden="true" class="menu-icon">
            ☰
          </span>{' '}
          Menu
        </button>
        <span class="brand">
          {branding.logo ? <img class="brand-logo" src={branding.logo} alt="" /> : null}
          <span class="brand-name" data-testid="brand-name">
            {branding.name}
          </span>
        </span>
        <ConnectionStatus />
        <span class="identity" data-testid="identity">
          <span class="identity-name">{who}</span>
          <span class="badge role-badge" data-testid="role" data-role={session.role}>
            {ROLE_LABELS[session.role] ?? session.role}
          </span>
        </span>
        <button type="button" class="btn btn-ghost" onClick={() => signOut()}>
          Sign out
        </button>
      </header>
      <nav
        id="main-nav"
        class="sidenav"
        aria-label="Main"
        onClick={(e) => {
          // On a narrow screen the menu closes once a page is chosen.
          if (e.target instanceof Element && e.target.closest('a')) setNavOpen(false);
        }}
      >
        <ul>
          {PANELS.map((panel) => (
            <li key={panel.id}>
              <Link
                href={href(panel.id)}
                class="navlink"
                aria-current={route.panel === panel.id ? 'page' : undefined}
              >
                {panel.label}
              </Link>
            </li>
          ))}
        </ul>
      </nav>
      <main id="main" class="main" tabIndex={-1} ref={mainRef}>
        <CurrentPanel session={session} />
      </main>
    </div>
  );
}

function CurrentPanel({ session }: { session: Session }) {
  const route = useRoute();
  switch (route.panel) {
    case '':
    case 'live':
      return <LivePanel session={session} conversationId={route.params[0] ?? null} />;
    case 'queues':
      return <QueuesPanel session={session} />;
    case 'personas':
      return <PersonasPanel session={session} personaId={route.params[0] ?? null} />;
    case 'memories':
      return <MemoriesPanel session={session} />;
    case 'analytics':
      return <AnalyticsPanel />;
    case 'settings':
      return <SettingsPanel session={session} />;
    default:
      return (
        <section class="panel" aria-labelledby="notfound-title">
          <h1 id="notfound-title">Page not found</h1>
          <p>
            There is no console page here. <Link href={href('live')}>Go to Live</Link>.
          </p>
        </section>
      );
  }
}
