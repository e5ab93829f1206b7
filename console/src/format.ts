/**
 * Formatting helpers: times, numbers, sentiment labels.
 */
import type { Analysis } from './types';

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
const dateTimeFormat = new Intl.DateTimeFormat(undefined, {
  year: 'numeric',
  month: 'short',
  day: 'numeric',
  hour: '2-digit',
  minute: '2-digit',
});
const dayFormat = new Intl.DateTimeFormat(undefined, { month: 'short', day: 'numeric' });
const hourFormat = new Intl.DateTimeFormat(undefined, { day: 'numeric', hour: '2-digit' });

function parse(value: string | number | null | undefined): Date | null {
  if (value === null || value === undefined || value === '') return null;
  const date = typeof value === 'number' ? new Date(value * 1000) : new Date(value);
  return Number.isNaN(date.getTime()) ? null : date;
}

/** "14:05" today, "Nov 24, 2026, 14:05" otherwise. */
export function formatTime(value: string | number | null | undefined): string {
  const date = parse(value);
  if (!date) return '';
  const now = new Date();
  return date.toDateString() === now.toDateString() ? timeFormat.format(date) : dateTimeFormat.format(date);
}

export function formatDateTime(value: string | number | null | undefined): string {
  const date = parse(value);
  return date ? dateTimeFormat.format(date) : '';
}

/** An analytics bucket's label: the day, or the day and hour. */
export function formatBucket(value: string, bucket: 'hour' | 'day'): string {
  const date = parse(value);
  if (!date) return value;
  return bucket === 'hour' ? hourFormat.format(date) : dayFormat.format(date);
}

export type SentimentLabel = 'positive' | 'neutral' | 'negative';

/** VADER's usual reading of the compound score: >= 0.05 positive, <= -0.05 negative. */
export function sentimentLabel(compound: number): SentimentLabel {
  if (compound >= 0.05) return 'positive';
  if (compound <= -0.05) return 'negative';
  return 'neutral';
}

export function sentimentOf(analysis: Analysis | null | undefined): { label: SentimentLabel; compound: number } | null {
  const compound = analysis?.sentiment?.compound;
  if (typeof compound !== 'number' || Number.isNaN(compound)) return null;
  return { label: sentimentLabel(compound), compound };
}

export function formatNumber(value: number, digits = 2): string {
  return value.toFixed(digits);
}

export function plural(count: number, one: string, many = `${one}s`): string {
  return `${count} ${count === 1 ? one : many}`;
}
