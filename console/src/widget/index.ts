// Entry of widget.js, an IIFE that defines
// window.SalonWidget = { open(), close(), setToken(token) }.
//
//   <script src="https://salon.example.com/console/widget.js" data-token="st1...."
//           data-persona="ada" data-user-name="Sam" async></script>
//
// The Salon server is the origin of the script's own src.
import { type Widget, createWidget } from './widget'

declare global {
  interface Window {
    SalonWidget?: Widget
  }
}

// Captured while the script runs: currentScript is null afterwards.
const current = document.currentScript

function boot(): void {
  if (window.SalonWidget) return // the script was included twice
  const el =
    current instanceof HTMLScriptElement
      ? current
      : document.querySelector<HTMLScriptElement>('script[data-token][src*="widget"]')
  if (!el || !el.src) return
  const d = el.dataset
  window.SalonWidget = createWidget({
    origin: new URL(el.src, location.href).origin,
    token: (d.token || '').trim(),
    persona: d.persona || '',
    userName: d.userName || '',
    open: d.open === 'true',
    position: d.position === 'left' ? 'left' : 'right',
  })
}

boot()
