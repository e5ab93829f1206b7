/**
 * Analytics: message volume, sentiment, emotions and topics over 48 hours or 30 days.
 *
 * Each card fetches its own series and draws it with Chart.js, which is
 * imported here dynamically (lib/charts.ts) so no other panel pays for it.
 * Every chart has a text alternative: an ``aria-label`` summary on the canvas
 * and the numbers in a table under "Show data".
 */
import type { ComponentChildren } from 'preact';
import { useEffect, useRef, useState } from 'preact/hooks';
import { api, type Query } from '../api';
import { ErrorAlert } from '../components/ErrorAlert';
import { formatBucket, formatNumber, sentimentLabel } from '../format';
import type { ChartConfiguration } from '../lib/charts';
import type { ListResponse, Persona, Sentiment } from '../types';

type Bucket = 'hour' | 'day';

interface VolumePoint {
  start: string;
  user: number;
  assistant: number;
}
interface SentimentPoint {
  start: string;
  count: number;
  sentiment: Sentiment;
}
interface EmotionPoint {
  start: string;
  count: number;
  emotions: Record<string, number>;
}
interface Series<T> {
  bucket?: Bucket;
  data: T[];
  overall?: { count: number; sentiment?: Sentiment; emotions?: Record<string, number> } | null;
}
interface Topic {
  topic: string;
  count: number;
}

/** Plutchik's eight, in the wheel's order. */
export const EMOTIONS = ['joy', 'trust', 'fear', 'surprise', 'sadness', 'disgust', 'anger', 'anticipation'] as const;

const RANGES: { value: Bucket; label: string }[] = [
  { value: 'hour', label: 'Last 48 hours' },
  { value: 'day', label: 'Last 30 days' },
];

export function AnalyticsPanel() {
  const [bucket, setBucket] = useState<Bucket>('hour');
  const [persona, setPersona] = useState('');
  const [personas, setPersonas] = useState<Persona[]>([]);
  const [error, setError] = useState<unknown>(null);

  useEffect(() => {
    api
      .get<ListResponse<Persona>>('/v1/personas')
      .then((page) => setPersonas(page.data ?? []))
      .catch(setError);
  }, []);

  const query: Query = { bucket, persona };
  const rangeLabel = RANGES.find((r) => r.value === bucket)?.label ?? '';

  return (
    <section class="panel" aria-labelledby="analytics-title">
      <h1 id="analytics-title">Analytics</h1>
      <form class="form filters" onSubmit={(e) => e.preventDefault()}>
        <div class="field">
          <label for="analytics-range">Range</label>
          <select id="analytics-range" value={bucket} onChange={(e) => setBucket(e.currentTarget.value as Bucket)}>
            {RANGES.map((r) => (
              <option key={r.value} value={r.value}>
                {r.label}
              </option>
            ))}
          </select>
        </div>
        <div class="field">
          <label for="analytics-persona">Persona</label>
          <select id="analytics-persona" value={persona} onChange={(e) => setPersona(e.currentTarget.value)}>
            <option value="">All personas</option>
            {personas.map((p) => (
              <option key={p.id} value={p.id}>
                {p.name}
              </option>
            ))}
          </select>
        </div>
      </form>
      <ErrorAlert error={error} context="Could not list personas" />
      <div class="chart-grid">
        <ChartCard<Series<VolumePoint>>
          id="volume"
          title="Message volume"
          path="/v1/analytics/volume"
          query={query}
          isEmpty={(s) => !s.data?.some((p) => p.user || p.assistant)}
          describe={(s) => {
            const users = sum(s.data.map((p) => p.user));
            const bots = sum(s.data.map((p) => p.assistant));
            return `Message volume, ${rangeLabel}: ${users} from people and ${bots} from personas.`;
          }}
          table={(s) => ({
            head: ['Period', 'People', 'Personas'],
            rows: s.data.map((p) => [formatBucket(p.start, bucket), p.user, p.assistant]),
          })}
          chart={(s, c) => ({
            type: 'bar',
            data: {
              labels: s.data.map((p) => formatBucket(p.start, bucket)),
              datasets: [
                { label: 'People', data: s.data.map((p) => p.user), backgroundColor: c.primary },
                { label: 'Personas', data: s.data.map((p) => p.assistant), backgroundColor: c.accent },
              ],
            },
            options: baseOptions(c, { scales: { y: { beginAtZero: true, ticks: { precision: 0 } } } }),
          })}
        />
        <ChartCard<Series<SentimentPoint>>
          id="sentiment"
          title="Sentiment"
          path="/v1/analytics/sentiment"
          query={query}
          isEmpty={(s) => !s.data?.length}
          describe={(s) => {
            const overall = s.overall?.sentiment?.compound;
            const text =
              typeof overall === 'number' ? ` Overall ${sentimentLabel(overall)} (${formatNumber(overall)}).` : '';
            return `Average sentiment of people's messages, ${rangeLabel}, from -1 (negative) to 1 (positive).${text}`;
          }}
          table={(s) => ({
            head: ['Period', 'Messages', 'Average sentiment'],
            rows: s.data.map((p) => [formatBucket(p.start, bucket), p.count, formatNumber(p.sentiment.compound)]),
          })}
          chart={(s, c) => ({
            type: 'line',
            data: {
              labels: s.data.map((p) => formatBucket(p.start, bucket)),
              datasets: [
                {
                  label: 'Average sentiment',
                  data: s.data.map((p) => p.sentiment.compound),
                  borderColor: c.primary,
                  backgroundColor: c.primary,
                  pointRadius: 3,
                  tension: 0.25,
                },
              ],
            },
            options: baseOptions(c, { scales: { y: { min: -1, max: 1 } } }),
          })}
        />
        <ChartCard<Series<EmotionPoint>>
          id="emotions"
          title="Emotions"
          path="/v1/analytics/emotions"
          query={query}
          isEmpty={(s) => !s.overall?.emotions || EMOTIONS.every((e) => !s.overall?.emotions?.[e])}
          describe={(s) => {
            const em = s.overall?.emotions ?? {};
            const top = [...EMOTIONS].sort((a, b) => (em[b] ?? 0) - (em[a] ?? 0)).slice(0, 3);
            return `Emotions in people's messages, ${rangeLabel}; strongest: ${top.join(', ')}.`;
          }}
          table={(s) => ({
            head: ['Emotion', 'Average share'],
            rows: EMOTIONS.map((e) => [e, formatNumber(s.overall?.emotions?.[e] ?? 0)]),
          })}
          chart={(s, c) => ({
            type: 'radar',
            data: {
              labels: [...EMOTIONS],
              datasets: [
                {
                  label: 'Average share',
                  data: EMOTIONS.map((e) => s.overall?.emotions?.[e] ?? 0),
                  borderColor: c.primary,
                  backgroundColor: `${c.primary}33`,
                  pointBackgroundColor: c.primary,
                  fill: true,
                },
              ],
            },
            options: {
              ...baseOptions(c, {}),
              scales: {
                r: {
                  beginAtZero: true,
                  angleLines: { color: c.grid },
                  grid: { color: c.grid },
                  pointLabels: { color: c.text },
                  ticks: { color: c.text, backdropColor: 'transparent' },
                },
              },
            },
          })}
        />
        <ChartCard<ListResponse<Topic>>
          id="topics"
          title="Top topics"
          path="/v1/analytics/topics"
          query={{ ...query, limit: 10 }}
          isEmpty={(s) => !s.data?.length}
          describe={(s) =>
            `Top topics, ${rangeLabel}: ${s.data
              .slice(0, 5)
              .map((t) => `${t.topic} (${t.count})`)
              .join(', ')}.`
          }
          table={(s) => ({ head: ['Topic', 'Mentions'], rows: s.data.map((t) => [t.topic, t.count]) })}
          chart={(s, c) => ({
            type: 'bar',
            data: {
              labels: s.data.map((t) => t.topic),
              datasets: [{ label: 'Mentions', data: s.data.map((t) => t.count), backgroundColor: c.accent }],
            },
            options: baseOptions(c, {
              indexAxis: 'y',
              plugins: { legend: { display: false } },
              scales: { x: { beginAtZero: true, ticks: { precision: 0 } } },
            }),
          })}
        />
      </div>
    </section>
  );
}

function sum(values: number[]): number {
  return values.reduce((a, b) => a + (b || 0), 0);
}

interface Colors {
  primary: string;
  accent: string;
  text: string;
  grid: string;
}

function brandColors(): Colors {
  const style = getComputedStyle(document.documentElement);
  const read = (name: string, fallback: string) => style.getPropertyValue(name).trim() || fallback;
  const text = read('--brand-text', '#0f172a');
  return {
    primary: read('--brand-primary', '#4f46e5'),
    accent: read('--brand-accent', '#0ea5e9'),
    text,
    grid: `${text}22`,
  };
}

// Chart.js option objects are deeply typed per chart type; the cards build
// plain objects and this merges in what every chart shares.
type Options = Record<string, unknown> & { plugins?: Record<string, unknown>; scales?: Record<string, Record<string, unknown>> };

function baseOptions(c: Colors, extra: Options): ChartConfiguration['options'] {
  const scales: Record<string, Record<string, unknown>> = {};
  for (const axis of ['x', 'y']) {
    const given = extra.scales?.[axis] ?? {};
    scales[axis] = {
      ...given,
      ticks: { color: c.text, ...((given.ticks as object) ?? {}) },
      grid: { color: c.grid },
    };
  }
  return {
    responsive: true,
    maintainAspectRatio: false,
    ...extra,
    plugins: { legend: { labels: { color: c.text } }, ...(extra.plugins ?? {}) },
    scales,
  } as ChartConfiguration['options'];
}

interface CardProps<T> {
  id: string;
  title: string;
  path: string;
  query: Query;
  isEmpty: (data: T) => boolean;
  describe: (data: T) => string;
  table: (data: T) => { head: string[]; rows: (string | number)[][] };
  chart: (data: T, colors: Colors) => ChartConfiguration;
}

function ChartCard<T>({ id, title, path, query, isEmpty, describe, table, chart }: CardProps<T>) {
  const [data, setData] = useState<T | null>(null);
  const [loading, setLoading] = useState(true);
  const [error, setError] = useState<unknown>(null);
  const canvasRef = useRef<HTMLCanvasElement>(null);
  const queryKey = JSON.stringify(query);
  const chartRef = useRef(chart);
  chartRef.current = chart;

  useEffect(() => {
    const controller = new AbortController();
    setLoading(true);
    setError(null);
    api
      .get<T>(path, query, controller.signal)
      .then((result) => setData(result))
      .catch((exc) => {
        if (controller.signal.aborted) return;
        setError(exc);
        setData(null);
      })
      .finally(() => !controller.signal.aborted && setLoading(false));
    return () => controller.abort();
  }, [path, queryKey]);

  const empty = data === null || isEmpty(data);

  useEffect(() => {
    if (data === null || empty || !canvasRef.current) return;
    let instance: { destroy(): void } | null = null;
    let cancelled = false;
    import('../lib/charts')
      .then(({ Chart }) => {
        if (cancelled || !canvasRef.current) return;
        instance = new Chart(canvasRef.current, chartRef.current(data, brandColors()));
      })
      .catch((exc) => !cancelled && setError(exc));
    return () => {
      cancelled = true;
      instance?.destroy();
    };
  }, [data, empty]);

  const headingId = `chart-${id}-title`;
  let body: ComponentChildren;
  if (error) body = <ErrorAlert error={error} context={`Could not load ${title.toLowerCase()}`} />;
  else if (loading && data === null)
    body = (
      <p class="muted" role="status">
        Loading…
      </p>
    );
  else if (data === null || empty)
    body = (
      <p class="empty-chart" data-testid={`chart-${id}-empty`}>
        No data yet
      </p>
    );
  else {
    const t = table(data);
    body = (
      <>
        <div class="chart-box">
          <canvas ref={canvasRef} role="img" aria-label={describe(data)} data-testid={`chart-${id}`} />
        </div>
        <details class="chart-data">
          <summary>Show data</summary>
          <div class="table-wrap">
            <table>
              <caption class="sr-only">{title}</caption>
              <thead>
                <tr>
                  {t.head.map((h) => (
                    <th key={h} scope="col">
                      {h}
                    </th>
                  ))}
                </tr>
              </thead>
              <tbody>
                {t.rows.map((row, i) => (
                  <tr key={i}>
                    {row.map((cell, j) =>
                      j === 0 ? (
                        <th key={j} scope="row">
                          {cell}
                        </th>
                      ) : (
                        <td key={j}>{cell}</td>
                      ),
                    )}
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        </details>
      </>
    );
  }
  return (
    <section class="card chart-card" aria-labelledby={headingId} data-chart={id} aria-busy={loading ? 'true' : 'false'}>
      <h2 id={headingId}>{title}</h2>
      {body}
    </section>
  );
}
