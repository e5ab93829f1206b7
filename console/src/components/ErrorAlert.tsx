/**
 * How errors reach the operator: an alert (role="alert") with the server's message.
 *
 * A feature switched off on the server (``*_disabled``) is not the
 * operator's mistake: it is shown as a calm note instead.
 */
import { ApiError, errorMessage, isDisabled } from '../api';

interface Props {
  error: unknown;
  /** What was being done, e.g. "Could not load flags". */
  context?: string;
  onDismiss?: () => void;
}

export function ErrorAlert({ error, context, onDismiss }: Props) {
  if (error === null || error === undefined) return null;
  if (isDisabled(error)) return <FeatureOff error={error} />;
  const code = error instanceof ApiError ? error.code : null;
  return (
    <div class="alert alert-error" role="alert">
      <p>
        {context ? <strong>{context}: </strong> : null}
        {errorMessage(error)}
        {code ? <span class="alert-code"> ({code})</span> : null}
      </p>
      {onDismiss ? (
        <button type="button" class="btn btn-small btn-ghost" onClick={onDismiss}>
          Dismiss
        </button>
      ) : null}
    </div>
  );
}

const FEATURES: Record<string, string> = {
  analysis_disabled: 'Message analysis is turned off on this server, so there are no analytics.',
  moderation_disabled: 'Moderation is turned off on this server, so nothing is flagged.',
  social_disabled: 'Comment automation is turned off on this server, so no replies wait for approval.',
  memory_disabled: 'Long-term memory is turned off on this server.',
  media_disabled: 'Media generation is turned off on this server.',
};

export function FeatureOff({ error }: { error: ApiError }) {
  return (
    <p class="note" role="status" data-disabled={error.code}>
      {FEATURES[error.code] ?? error.message}
    </p>
  );
}
