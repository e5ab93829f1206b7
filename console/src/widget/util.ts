// Small helpers of the embeddable widget: no dependencies, DOM types only.

export type Json = { [key: string]: unknown }

/** What the widget reads from a session token's payload (`st1.<payload>.<sig>`, server/auth.py). */
export interface TokenInfo {
  u?: string // the user's id in the tenant
  n?: string | null // the user's name
  p?: string | null // the persona id the token is bound to
  e?: number // expiry, Unix seconds
}

export const str = (v: unknown): string => (typeof v === 'string' ? v : '')

export const obj = (v: unknown): Json | null =>
  v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Json) : null

/** The token's payload; {} when it cannot be read (the server decides anyway). */
export function decodeToken(token: string): TokenInfo {
  try {
    const body = (token.split('.')[1] || '').replace(/-/g, '+').replace(/_/g, '/')
    const bytes = Uint8Array.from(atob(body), (c) => c.charCodeAt(0))
    return (obj(JSON.parse(new TextDecoder().decode(bytes))) as TokenInfo | null) || {}
  } catch {
    return {}
  }
}

/** A random UUID (v4); outside secure contexts (no crypto.randomUUID) 32 random hex digits. */
export function uuid(): string {
  const c = globalThis.crypto
  return typeof c.randomUUID === 'function'
    ? c.randomUUID()
    : Array.from(c.getRandomValues(new Uint8Array(16)), (x) => (x + 256).toString(16).slice(1)).join('')
}

/** sessionStorage that never throws (blocked storage, sandboxed frames, quota). */
export function load(key: string): Json | null {
  try {
    return obj(JSON.parse(sessionStorage.getItem(key) || 'null'))
  } catch {
    return null
  }
}

export function save(key: string, value: Json): void {
  try {
    sessionStorage.setItem(key, JSON.stringify(value))
  } catch {
    /* storage unavailable: the conversation simply does not survive a reload */
  }
}

/** Black or white, whichever reads better on `color` (#rgb or #rrggbb; white otherwise). */
export function onColor(color: string): string {
  let hex = (/^#([0-9a-f]{3}|[0-9a-f]{6})$/i.exec(color.trim()) || [])[1]
  if (!hex) return '#fff'
  if (hex.length === 3) hex = hex.replace(/./g, '$&$&')
  let l = 0
  for (const [i, w] of [[0, 0.2126], [2, 0.7152], [4, 0.0722]] as const) {
    const c = parseInt(hex.slice(i, i + 2), 16) / 255
    l += w * (c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4)
  }
  // 0.179: the relative luminance where black and white text contrast equally.
  return l > 0.179 ? '#000' : '#fff'
}

/** `document.createElement` with attributes and children. */
export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Record<string, string> = {},
  ...kids: (Node | string)[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag)
  for (const k of Object.keys(attrs)) el.setAttribute(k, attrs[k] as string)
  el.append(...kids)
  return el
}

/** An element whose class and `part` are both `name` (styled inside, reachable with ::part outside). */
export function p<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  name: string,
  attrs: Record<string, string> = {},
  ...kids: (Node | string)[]
): HTMLElementTagNameMap[K] {
  return h(tag, { class: name, part: name, ...attrs }, ...kids)
}
