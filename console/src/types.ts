/**
 * Shapes of the Salon API objects the console reads.
 *
 * They follow docs/http-api.md and the server's ``to_public`` methods; fields
 * the console does not use are left out or typed loosely on purpose, so a new
 * server field never breaks the build.
 */

export type Role = 'admin' | 'moderator' | 'viewer';
export type CredentialKind = 'operator' | 'api_key';

export interface Tenant {
  id: string;
  name: string;
}

export interface Operator {
  id: string;
  email: string;
  name: string;
  role: Role;
  disabled?: boolean;
  created_at?: string;
}

export interface BrandColors {
  primary: string;
  accent: string;
  background: string;
  surface: string;
  text: string;
}

export interface Branding {
  name: string;
  logo: string | null;
  colors: BrandColors;
}

export interface LoginResponse {
  token: string;
  expires_at: number;
  kind: CredentialKind;
  role: Role;
  /** The principal's display name (the operator's name, or the API key's). */
  name?: string | null;
  operator_id?: string | null;
  operator: Operator | null;
  tenant: Tenant;
}

export interface MeResponse {
  tenant: Tenant;
  role: Role;
  kind: CredentialKind;
  name?: string | null;
  operator_id?: string | null;
  operator?: Operator | null;
  branding?: Branding | null;
}

export interface PersonaRef {
  id: string;
  slug: string;
  name: string;
}

export interface UserRef {
  id: string;
  name: string | null;
}

export interface MessagePreview {
  id: string;
  role: string;
  preview: string;
  created_at: string;
}

export interface Takeover {
  id: string;
  conversation_id: string;
  operator: string;
  mode: 'persona' | 'operator';
  messages: number;
  started_at: string;
  ended_at: string | null;
  ended_by?: string | null;
}

export interface ConversationSummary {
  id: string;
  persona: PersonaRef;
  user: UserRef;
  channel: string;
  created_at: string;
  updated_at: string;
  last_seq: number;
  last_message: MessagePreview | null;
  connected: number;
  takeover: Takeover | null;
}

export interface Sentiment {
  compound: number;
  pos: number;
  neu: number;
  neg: number;
}

export interface Analysis {
  sentiment: Sentiment;
  emotions: Record<string, number>;
  language: string | null;
}

export interface Message {
  id: string;
  role: string;
  content: string;
  status: string;
  created_at: string;
  analysis: Analysis | null;
  client_id?: string | null;
  response_id?: string | null;
}

export interface MessagesPage {
  conversation_id: string;
  persona_id: string;
  last_seq: number;
  data: Message[];
}

export interface TakeoverStatus {
  active: Takeover | null;
  history: Takeover[];
}

export interface Flag {
  id: string;
  persona_id: string | null;
  user_id: string | null;
  conversation_id: string | null;
  message_id: string | null;
  direction: string;
  categories: string[];
  action: string;
  excerpt: string;
  details: Record<string, unknown>;
  status: 'open' | 'reviewed' | 'dismissed';
  note: string | null;
  created_at: string;
  resolved_at: string | null;
}

/** A comment from a social platform and the reply proposed for it (server/social_api.py). */
export interface SocialComment {
  id: string;
  platform: string;
  account: string;
  comment_id: string;
  post_id: string | null;
  author: { id: string; name: string };
  text: string;
  user: string | null;
  conversation_id: string | null;
  status: string;
  reason: string | null;
  reply: { text: string | null; id: string | null };
  attempts: number;
  error: string | null;
  decided_by: string | null;
  received_at: string;
  updated_at: string;
}

/** A persona's ``voice``: a provider voice id, or an object (agents/voice.py persona_voice). */
export type PersonaVoice =
  | string
  | {
      voice?: string;
      id?: string;
      provider?: string;
      language?: string;
      speed?: number;
      emotion?: string;
      [key: string]: unknown;
    }
  | null;

export interface Persona {
  id: string;
  slug: string;
  name: string;
  description?: string;
  personality?: string;
  scenario?: string;
  first_mes?: string;
  system_prompt?: string;
  voice?: PersonaVoice;
  created_at?: string;
  updated_at?: string;
  [key: string]: unknown;
}

export interface ClonedVoice {
  id: string;
  name: string;
  provider: string;
  status: string;
}

export interface Memory {
  id: string;
  persona_id: string;
  user_id: string;
  kind: string;
  text: string;
  importance: number;
  pinned: boolean;
  valid_from: string;
  valid_to: string | null;
  superseded_by: string | null;
  created_at?: string;
  updated_at?: string;
}

export interface MediaItem {
  id: string;
  kind: string;
  source: string;
  state: string;
  progress: number;
  persona: string | null;
  mime: string | null;
  bytes: number | null;
  url: string | null;
  error: { code: string; message: string } | null;
  created_at: string | null;
}

export interface ListResponse<T> {
  data: T[];
  next_cursor?: string | null;
}
