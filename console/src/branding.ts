/**
 * White-label branding: the tenant's name, logo and colours.
 *
 * Colours become CSS custom properties on <html> (styles.css reads only
 * those), so one assignment re-themes the whole console. A colour that is
 * not ``#rrggbb`` falls back to the default rather than breaking the page.
 */
import { api } from './api';
import { createStore } from './store';
import type { BrandColors, Branding } from './types';

/** The server's defaults (server/console_api.py), so an unbranded tenant looks the same before and after sign-in. */
export const DEFAULT_BRANDING: Branding = {
  name: 'Salon',
  logo: null,
  colors: {
    primary: '#4f46e5',
    accent: '#0ea5e9',
    background: '#f8fafc',
    surface: '#ffffff',
    text: '#0f172a',
  },
};

export const COLOR_KEYS: (keyof BrandColors)[] = ['primary', 'accent', 'background', 'surface', 'text'];

const CACHE_KEY = 'salon.console.branding';

/** The last branding this browser saw: the sign-in page uses it (reading branding needs a credential). */
function cachedBranding(): Branding {
  try {
    const raw = localStorage.getItem(CACHE_KEY);
    return raw ? normalizeBranding(JSON.parse(raw) as Partial<Branding>) : DEFAULT_BRANDING;
  } catch {
    return DEFAULT_BRANDING;
  }
}

function cacheBranding(branding: Branding): void {
  try {
    localStorage.setItem(CACHE_KEY, JSON.stringify(branding));
  } catch {
    // Storage full or blocked (a large logo): the next sign-in page shows the defaults.
  }
}

export const brandingStore = createStore<Branding>(DEFAULT_BRANDING);

const HEX = /^#[0-9a-fA-F]{6}$/;

export function isHexColor(value: unknown): value is string {
  return typeof value === 'string' && HEX.test(value);
}

/** The branding with every missing or malformed part replaced by the default. */
export function normalizeBranding(raw: Partial<Branding> | null | undefined): Branding {
  const colors = { ...DEFAULT_BRANDING.colors };
  const given = (raw?.colors ?? {}) as Partial<BrandColors>;
  for (const key of COLOR_KEYS) {
    const value = given[key];
    if (isHexColor(value)) colors[key] = value.toLowerCase();
  }
  const name = typeof raw?.name === 'string' && raw.name.trim() ? raw.name.trim() : DEFAULT_BRANDING.name;
  const logo = typeof raw?.logo === 'string' && raw.logo ? raw.logo : null;
  return { name, logo, colors };
}

/** WCAG relative luminance of ``#rrggbb``. */
export function luminance(hex: string): number {
  const channel = (i: number) => {
    const c = parseInt(hex.slice(i, i + 2), 16) / 255;
    return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
  };
  return 0.2126 * channel(1) + 0.7152 * channel(3) + 0.0722 * channel(5);
}

export function contrastRatio(a: string, b: string): number {
  const [hi, lo] = [luminance(a), luminance(b)].sort((x, y) => y - x);
  return (hi + 0.05) / (lo + 0.05);
}

/** Black or white, whichever reads better on ``hex`` (text on a primary button). */
export function readableOn(hex: string): string {
  return contrastRatio(hex, '#ffffff') >= contrastRatio(hex, '#111111') ? '#ffffff' : '#111111';
}

/** The CSS custom properties for a branding (also used by the settings preview). */
export function brandVariables(colors: BrandColors): Record<string, string> {
  return {
    '--brand-primary': colors.primary,
    '--brand-accent': colors.accent,
    '--brand-background': colors.background,
    '--brand-surface': colors.surface,
    '--brand-text': colors.text,
    '--brand-on-primary': readableOn(colors.primary),
    '--brand-on-accent': readableOn(colors.accent),
  };
}

/** Apply a branding to the document (CSS variables, title) and publish it to the header. */
export function applyBranding(raw: Partial<Branding> | null | undefined): Branding {
  const branding = normalizeBranding(raw);
  const root = document.documentElement;
  for (const [name, value] of Object.entries(brandVariables(branding.colors))) {
    root.style.setProperty(name, value);
  }
  document.title = `${branding.name} console`;
  brandingStore.set(branding);
  cacheBranding(branding);
  return branding;
}

/** On start: the cached branding, until the signed-in tenant's arrives. */
export function applyCachedBranding(): void {
  const branding = cachedBranding();
  const root = document.documentElement;
  for (const [name, value] of Object.entries(brandVariables(branding.colors))) {
    root.style.setProperty(name, value);
  }
  document.title = `${branding.name} console`;
  brandingStore.set(branding);
}

/** The tenant's branding from the server (``GET /v1/branding``). */
export async function loadBranding(): Promise<Branding> {
  return applyBranding(await api.get<Branding>('/v1/branding'));
}

export async function saveBranding(branding: Branding): Promise<Branding> {
  return applyBranding(await api.put<Branding>('/v1/branding', branding));
}

export const MAX_LOGO_BYTES = 256 * 1024;

/** A logo file as a data URL; refuses files over 256 KiB with a message saying so. */
export function readLogo(file: File): Promise<string> {
  if (file.size > MAX_LOGO_BYTES) {
    const kib = Math.ceil(file.size / 1024);
    return Promise.reject(new Error(`The logo is ${kib} KiB; the limit is 256 KiB. Choose a smaller image.`));
  }
  if (!file.type.startsWith('image/')) {
    return Promise.reject(new Error('The logo must be an image (PNG, SVG, JPEG, WebP or GIF).'));
  }
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result));
    reader.onerror = () => reject(new Error('The logo file could not be read.'));
    reader.readAsDataURL(file);
  });
}
