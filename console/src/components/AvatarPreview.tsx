/**
 * A persona's 3D avatar: a card with the GLB's download link, and an
 * on-demand <model-viewer> preview.
 *
 * The avatar is found with ``GET /v1/media?persona=&kind=avatar&state=done``
 * (the latest imported one, else the latest generated: the same choice as
 * ``GET /v1/personas/{id}/avatar``). The list answers 200 with nothing when
 * there is no avatar, where the dedicated route answers 404 — and a 404 is an
 * error line in the browser console on every persona opened.
 *
 * <model-viewer> (with three.js, ~1 MB) is a dynamic import made only when
 * the operator asks for the 3D preview: WebGL may be missing (or software
 * emulated, with browser warnings) on an operator's machine, and a persona
 * list should not download a 3D engine.
 */
import { createElement } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { api, isDisabled, seg } from '../api';
import { useMounted } from '../hooks';
import type { ListResponse, MediaItem } from '../types';
import { ErrorAlert } from './ErrorAlert';

interface Props {
  personaId: string;
  personaName: string;
  canGenerate: boolean;
}

const POLL_MS = 1000;

function pickAvatar(items: MediaItem[]): MediaItem | null {
  const done = items.filter((i) => i.state === 'done' && i.url);
  return done.find((i) => i.source === 'import') ?? done[0] ?? null;
}

export function AvatarPreview({ personaId, personaName, canGenerate }: Props) {
  const [avatar, setAvatar] = useState<MediaItem | null>(null);
  const [job, setJob] = useState<MediaItem | null>(null);
  const [loading, setLoading] = useState(true);
  const [error, setError] = useState<unknown>(null);
  const [show3d, setShow3d] = useState(false);
  const mounted = useMounted();

  useEffect(() => {
    let cancelled = false;
    setLoading(true);
    setAvatar(null);
    setJob(null);
    setShow3d(false);
    setError(null);
    api
      .get<ListResponse<MediaItem>>('/v1/media', { persona: personaId, kind: 'avatar', state: 'done', limit: 20 })
      .then((page) => !cancelled && setAvatar(pickAvatar(page.data ?? [])))
      .catch((exc) => !cancelled && setError(exc))
      .finally(() => !cancelled && setLoading(false));
    return () => {
      cancelled = true;
    };
  }, [personaId]);

  // Follow a generation until it is done (or not).
  useEffect(() => {
    if (!job || job.state === 'done' || job.state === 'failed' || job.state === 'cancelled') return;
    const timer = setTimeout(async () => {
      try {
        const next = await api.get<MediaItem>(`/v1/media/${seg(job.id)}`);
        if (!mounted.current) return;
        if (next.state === 'done') setAvatar(next);
        if (next.state === 'failed' && next.error) setError(new Error(`Avatar generation failed: ${next.error.message}`));
        setJob(next);
      } catch (exc) {
        if (mounted.current) setError(exc);
      }
    }, POLL_MS);
    return () => clearTimeout(timer);
  }, [job]);

  const generate = async () => {
    setError(null);
    try {
      setJob(await api.post<MediaItem>('/v1/media', { kind: 'avatar', persona: personaId }));
    } catch (exc) {
      setError(exc);
    }
  };

  const generating = job !== null && (job.state === 'queued' || job.state === 'running');

  return (
    <section class="avatar card" aria-labelledby="avatar-title">
      <h3 id="avatar-title">Avatar</h3>
      {isDisabled(error) ? null : <ErrorAlert error={error} context="Avatar" />}
      {loading ? (
        <p class="muted" role="status">
          Looking for an avatar…
        </p>
      ) : avatar?.url ? (
        <div class="avatar-body" data-testid="avatar" data-media-id={avatar.id}>
          <div class="avatar-card">
            <span class="avatar-glyph" aria-hidden="true">
              ◎
            </span>
            <span>
              3D avatar ({avatar.source === 'import' ? 'imported' : 'generated'}
              {avatar.bytes ? `, ${Math.round(avatar.bytes / 1024)} KiB` : ''})
            </span>
          </div>
          <p>
            <a href={avatar.url} download={`${personaName || 'avatar'}.glb`}>
              Download GLB
            </a>
          </p>
          {show3d ? (
            <ModelViewer src={avatar.url} alt={`3D avatar of ${personaName}`} />
          ) : (
            <button type="button" class="btn" onClick={() => setShow3d(true)}>
              Show 3D preview
            </button>
          )}
        </div>
      ) : isDisabled(error) ? (
        <ErrorAlert error={error} />
      ) : (
        <div class="avatar-body" data-testid="no-avatar">
          <p>No avatar yet</p>
          {generating ? (
            <p role="status">
              Generating… <progress max={1} value={job?.progress ?? 0} aria-label="Avatar generation progress" />
            </p>
          ) : canGenerate ? (
            <button type="button" class="btn" onClick={generate}>
              Generate avatar
            </button>
          ) : null}
        </div>
      )}
    </section>
  );
}

function ModelViewer({ src, alt }: { src: string; alt: string }) {
  const [ready, setReady] = useState(() => customElements.get('model-viewer') !== undefined);
  const [error, setError] = useState<unknown>(null);
  useEffect(() => {
    if (ready) return;
    let cancelled = false;
    import('@google/model-viewer')
      .then(() => !cancelled && setReady(true))
      .catch((exc) => !cancelled && setError(exc));
    return () => {
      cancelled = true;
    };
  }, []);
  if (error) return <ErrorAlert error={error} context="The 3D preview could not load" />;
  if (!ready) {
    return (
      <p class="muted" role="status">
        Loading the 3D preview…
      </p>
    );
  }
  // A custom element: created by name so TypeScript needs no JSX declaration for it.
  return createElement('model-viewer', {
    class: 'model-viewer',
    src,
    alt,
    'camera-controls': true,
    'auto-rotate': true,
    'interaction-prompt': 'none',
    'shadow-intensity': '0.6',
    'data-testid': 'model-viewer',
  });
}
