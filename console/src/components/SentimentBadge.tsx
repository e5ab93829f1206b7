/**
 * A message's sentiment: a coloured badge, with the score in its accessible name.
 */
import { formatNumber, sentimentOf } from '../format';
import type { Analysis } from '../types';

const SYMBOL = { positive: '+', neutral: '=', negative: '−' } as const;

export function SentimentBadge({ analysis }: { analysis: Analysis | null | undefined }) {
  const sentiment = sentimentOf(analysis);
  if (!sentiment) return null;
  const score = formatNumber(sentiment.compound);
  const label = `Sentiment: ${sentiment.label} (${score})`;
  return (
    <span
      class={`badge sentiment sentiment-${sentiment.label}`}
      data-sentiment={sentiment.label}
      data-compound={String(sentiment.compound)}
      role="img"
      aria-label={label}
      title={label}
    >
      <span aria-hidden="true">
        {SYMBOL[sentiment.label]} {sentiment.label}
      </span>
    </span>
  );
}
