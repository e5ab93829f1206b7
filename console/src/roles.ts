/**
 * What each role may do in the console.
 *
 * The server enforces the same rules; the console only hides or disables
 * what would be refused, so an operator is not offered a button that fails.
 */
import type { Role } from './types';

export type Action =
  | 'takeover'
  | 'resolve_flag'
  | 'decide_reply'
  | 'edit_memory'
  | 'manage_personas'
  | 'branding'
  | 'operators'
  | 'forget_user';

const MODERATOR: ReadonlySet<Action> = new Set(['takeover', 'resolve_flag', 'decide_reply', 'edit_memory']);

export function can(role: Role, action: Action): boolean {
  if (role === 'admin') return true;
  if (role === 'moderator') return MODERATOR.has(action);
  return false;
}

export const ROLE_LABELS: Record<Role, string> = {
  admin: 'Admin',
  moderator: 'Moderator',
  viewer: 'Viewer',
};
