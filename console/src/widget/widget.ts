// The chat widget: a launcher and a panel in a shadow root, talking to
// Salon over GET /v1/ws with a session token (docs/protocol.md).
//
// Resume: the conversation id and a seq are kept in sessionStorage, keyed by
// server, user and persona. The stored seq is the last one processed, or, while
// a reply is streaming, the one before its `response.created`, so a reloaded
// page gets the whole reply again; what is already in the history
// (GET /v1/conversations/{id}/messages) is recognised by message/response id.
// Unacknowledged messages are kept too and sent again with the same id.
import STYLES from './widget.css?inline'
import { type Json, type TokenInfo, decodeToken, h, load, obj, onColor, p, save, str, uuid } from './util'

export interface Options {
  origin: string // where the script came from: the Salon server
  token: string
  persona: string // id or slug; '' when the token is bound to one
  userName: string
  open: boolean
  position: 'left' | 'right'
}

export interface Widget {
  open(): void
  close(): void
  setToken(token: string): void
}

interface Pending {
  text: string
  tries: number
}

interface Reply {
  el: HTMLElement
  tx: HTMLElement
  text: string
  seq: number // of its first event (0: unknown)
}

// Errors about one message.create after which the same id is sent again.
const RETRY: Record<string, number> = {
  rate_limited: 10000,
  unavailable: 3000,
  moderation_unavailable: 3000,
  no_session: 0,
}

// Icons: stroked paths; size and stroke come from the stylesheet.
const icon = (d: string): string => `<svg viewBox="0 0 24 24" aria-hidden="true"><path d="${d}"/></svg>`

export function createWidget(o: Options): Widget {
  let token = o.token
  let tk: TokenInfo = decodeToken(token)
  let personaRef = o.persona || tk.p || '' // what session.start names
  const KEY = `salon-widget:${o.origin}:${tk.u || ''}:${o.persona || tk.p || ''}`
  const saved = load(KEY) || {}

  let convId = str(saved.c) || null
  let lastSeq: number | null = typeof saved.s === 'number' ? saved.s : null
  let isOpen = false
  let ws: WebSocket | null = null
  let ready = false // session.ready seen on the current socket
  let sentConv: string | null = null // conversation_id of the last session.start
  let attempts = 0
  let timer = 0
  let queue: Json[] | null = null // events held while history loads
  let fresh = true // nothing of this conversation shown yet
  let greeted = ''
  let expiredShown = false
  let branded = false
  let personaName = ''
  let personaP: Promise<Json | null> | null = null
  let readyUser = ''
  let readySlug = ''
  let readySeq = 0 // the latest seq when the session started

  const pending = new Map<string, Pending>()
  const userEls = new Map<string, HTMLElement>() // client id -> user bubble
  const replies = new Map<string, Reply>() // response id -> reply being streamed
  const seenMsg = new Set<string>() // message ids on screen
  const seenResp = new Set<string>() // response ids finished on screen

  // -- DOM --------------------------------------------------------------------
  const host = h('div', { id: 'salon-widget' })
  const root = host.attachShadow({ mode: 'open' })
  const launcher = p('button', 'launcher', {
    type: 'button',
    'aria-label': 'Open chat',
    'aria-haspopup': 'dialog',
  })
  launcher.innerHTML = icon('M21 12a8 8 0 0 1-11.6 7.1L4 20l1-4.6A8 8 0 1 1 21 12z')
  const badge = p('span', 'badge', { hidden: '' })
  launcher.append(badge)
  const logo = h('img', { part: 'logo', alt: '', hidden: '' })
  const title = p('span', 'title', {}, 'Chat')
  const status = p('span', 'status', { role: 'status' })
  const closeBtn = p('button', 'close', { type: 'button', 'aria-label': 'Close chat' })
  closeBtn.innerHTML = icon('M6 6l12 12M18 6L6 18')
  const log = p('div', 'log', {
    role: 'log',
    'aria-live': 'polite',
    'aria-label': 'Messages',
    tabindex: '0',
  })
  const typingText = h('span')
  const typing = p(
    'div',
    'typing',
    { role: 'status', hidden: '' },
    h('span', { class: 'dots', 'aria-hidden': 'true' }, h('i'), h('i'), h('i')),
    typingText,
  )
  const input = h('textarea', {
    part: 'input',
    'aria-label': 'Message',
    placeholder: 'Type a message…',
    rows: '1',
    enterkeyhint: 'send',
  })
  const form = h(
    'form',
    { part: 'composer' },
    input,
    p('button', 'send', { type: 'submit' }, 'Send'),
  )
  const panel = p(
    'section',
    'panel',
    { id: 'salon-panel', role: 'dialog', 'aria-label': 'Chat chat', hidden: '' },
    h('header', { part: 'header' }, logo, h('div', { class: 'hd' }, title, status), closeBtn),
    log,
    typing,
    form,
  )
  const wrap = h('div', { class: `w ${o.position}`, part: 'root' }, launcher, panel)
  try {
    // A constructed stylesheet is not an inline style: it passes a host page's strict CSP.
    const sheet = new CSSStyleSheet()
    sheet.replaceSync(STYLES)
    root.adoptedStyleSheets = [sheet]
  } catch {
    root.append(h('style', {}, STYLES))
  }
  root.append(wrap)

  launcher.onclick = () => open()
  closeBtn.onclick = () => close()
  panel.onkeydown = (e) => {
    if (e.key === 'Escape') {
      e.preventDefault()
      close()
    }
  }
  // Enter sends, Shift+Enter is a new line (not while an IME composes).
  input.onkeydown = (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault()
      submit()
    }
  }
  input.oninput = grow
  form.onsubmit = (e) => {
    e.preventDefault()
    submit()
  }
  logo.onerror = () => (logo.hidden = true)

  function grow(): void {
    input.style.height = 'auto'
    input.style.height = Math.min(input.scrollHeight + 2, 120) + 'px'
  }

  function scroll(force?: boolean): void {
    if (force || log.scrollHeight - log.scrollTop - log.clientHeight < 120) log.scrollTop = log.scrollHeight
  }

  function add(el: HTMLElement): HTMLElement {
    const near = log.scrollHeight - log.scrollTop - log.clientHeight < 120
    log.append(el)
    if (near) scroll(true)
    return el
  }

  /** A message bubble; `data` becomes data-* attributes (empty values are left out). */
  function bubble(
    role: 'user' | 'assistant' | 'system',
    text: string,
    state: string,
    data: Record<string, string> = {},
  ): HTMLElement {
    const el = p('div', `message message-${role}`, { 'data-role': role })
    for (const k of Object.keys(data)) if (data[k]) el.dataset[k] = data[k]
    if (state) el.dataset.status = state
    if (role === 'user') el.append(h('span', { class: 'sr', part: 'author' }, 'You: '))
    else if (role === 'assistant') el.append(p('span', 'author', {}, data.name || speaker(null)))
    el.append(p('div', 'text', {}, text))
    if (state === 'sending') el.append(p('span', 'meta', {}, 'sending…'))
    return el
  }

  function textOf(el: HTMLElement): HTMLElement {
    return el.querySelector('.text') as HTMLElement
  }

  function setMeta(el: HTMLElement, state: string, meta: string): void {
    el.dataset.status = state
    el.querySelector('.meta')?.remove()
    if (meta) el.append(p('span', 'meta', {}, meta))
  }

  function sys(text: string, code: string): void {
    add(bubble('system', text, '', { code }))
  }

  function setStatus(text: string): void {
    status.textContent = text
  }

  function speaker(ev: Json | null): string {
    const s = obj(ev?.speaker)
    if (s && s.type === 'operator' && str(s.name)) return str(s.name)
    return personaName || readySlug || 'Assistant'
  }

  function updateTyping(): void {
    let name = ''
    for (const r of replies.values()) name = str(r.el.dataset.name)
    typing.hidden = !replies.size
    typingText.textContent = replies.size ? `${name} is typing…` : ''
  }

  // -- open / close -----------------------------------------------------------
  function open(focus = true): void {
    if (!isOpen) {
      isOpen = true
      panel.hidden = false
      launcher.hidden = true
      badge.hidden = true
      scroll(true)
      persist()
      connect()
    }
    if (focus) input.focus()
  }

  function close(): void {
    if (!isOpen) return
    const inside = root.activeElement !== null
    isOpen = false
    panel.hidden = true
    launcher.hidden = false
    if (inside) launcher.focus()
    persist()
  }

  // -- HTTP -------------------------------------------------------------------
  const expired = (): boolean => !!tk.e && tk.e * 1000 < Date.now()

  async function api(path: string): Promise<Json | null> {
    if (!token || expired()) return null // no request bound to fail
    try {
      const r = await fetch(o.origin + path, { headers: { Authorization: 'Bearer ' + token }, credentials: 'omit' })
      return r.ok ? obj(await r.json()) : null
    } catch {
      return null
    }
  }

  async function brand(): Promise<void> {
    const b = await api('/v1/branding')
    if (!b) return // the defaults stay
    branded = true
    const name = str(b.name).trim() || 'Chat'
    title.textContent = name
    panel.setAttribute('aria-label', `${name} chat`)
    const src = str(b.logo)
    if (src) {
      try {
        logo.src = new URL(src, o.origin).href
        logo.hidden = false
      } catch {
        /* not a URL */
      }
    }
    const colors = obj(b.colors) || {}
    for (const k of ['primary', 'accent', 'background', 'surface', 'text']) {
      const v = str(colors[k]).trim()
      if (v && CSS.supports('color', v)) {
        wrap.style.setProperty('--salon-' + k, v)
        if (k === 'primary') wrap.style.setProperty('--salon-on-primary', onColor(v))
      }
    }
  }

  /** The persona (name, greeting), named by data-persona or bound to the token. */
  function persona(): Promise<Json | null> {
    if (!personaP && personaRef) {
      personaP = api('/v1/personas/' + encodeURIComponent(personaRef)).then((q) => {
        if (!q) personaP = null // try again later
        personaName = str(q?.name) || personaName
        log.querySelectorAll('[data-speaker=persona] .author').forEach((el) => (el.textContent = personaName))
        return q
      })
    }
    return personaP || Promise.resolve(null)
  }

  // -- storage ----------------------------------------------------------------
  function persist(): void {
    let s = lastSeq
    for (const r of replies.values()) if (r.seq > 0 && (s === null || r.seq - 1 < s)) s = r.seq - 1
    save(KEY, {
      c: convId,
      s: s === null ? null : Math.max(0, s),
      q: [...pending].map(([id, p]) => [id, p.text]),
      o: isOpen,
    })
  }

  // -- socket -----------------------------------------------------------------
  function send(ev: Json): boolean {
    if (!ws || ws.readyState !== WebSocket.OPEN) return false
    ws.send(JSON.stringify(ev))
    return true
  }

  function connect(): void {
    clearTimeout(timer)
    timer = 0
    if (ws || !token) return
    if (expired()) {
      setStatus('Session expired')
      if (!expiredShown) sys('Chat session expired: reload the page.', 'session_expired')
      expiredShown = true
      return
    }
    if (!personaRef) {
      setStatus('Unavailable')
      return sys('No persona (set data-persona).', 'no_persona')
    }
    setStatus(attempts ? 'Reconnecting…' : 'Connecting…')
    let sock: WebSocket
    try {
      sock = new WebSocket(o.origin.replace(/^http/, 'ws') + '/v1/ws?token=' + encodeURIComponent(token))
    } catch {
      retry()
      return
    }
    ws = sock
    sock.onopen = () => start()
    sock.onmessage = (e: MessageEvent) => {
      if (ws !== sock || typeof e.data !== 'string') return
      let ev: Json | null = null
      try {
        ev = obj(JSON.parse(e.data))
      } catch {
        return
      }
      if (ev) receive(ev)
    }
    sock.onclose = (e: CloseEvent) => {
      if (ws !== sock) return
      ws = null
      ready = false
      if (e.code === 1009) tooBig()
      retry()
    }
  }

  function start(): void {
    const ev: Json = { type: 'session.start', persona: personaRef }
    if (o.userName && tk.u) ev.user = { id: tk.u, name: o.userName }
    sentConv = convId
    if (convId) {
      ev.conversation_id = convId
      if (lastSeq !== null) ev.resume_after = Math.max(0, lastSeq)
    }
    send(ev)
  }

  function retry(): void {
    clearTimeout(timer)
    setStatus('Reconnecting…')
    const base = Math.min(10000, 500 * 2 ** Math.min(attempts++, 5))
    timer = window.setTimeout(connect, Math.min(10000, base * (0.8 + Math.random() * 0.4)))
  }

  /** The server closed with 1009 (frame too big): the longest unsent message cannot go. */
  function tooBig(): void {
    let worst = ''
    for (const [id, p] of pending) if (!worst || p.text.length > (pending.get(worst) as Pending).text.length) worst = id
    if (worst) fail(worst, 'Not sent: too long')
  }

  function fail(id: string, meta: string): void {
    pending.delete(id)
    const el = userEls.get(id)
    if (el) setMeta(el, 'failed', meta)
    persist()
  }

  function flush(): void {
    for (const [id, p] of pending) if (!send({ type: 'message.create', id, text: p.text })) break
  }

  // -- events -----------------------------------------------------------------
  function receive(ev: Json): void {
    const type = ev.type
    if (type === 'session.ready') ready_(ev)
    else if (type === 'pong') return
    else if (type === 'error' && ev.code === 'resume_gap') gap()
    else if (type === 'error' && ev.code === 'conversation_not_found' && !ev.id && sentConv) restart()
    else if (queue) queue.push(ev)
    else handle(ev)
  }

  function ready_(ev: Json): void {
    ready = true
    attempts = 0
    setStatus('')
    const cid = str(ev.conversation_id)
    readySeq = typeof ev.seq === 'number' ? ev.seq : 0
    if (cid !== convId || lastSeq === null || sentConv !== cid) lastSeq = readySeq
    convId = cid
    readySlug = str(ev.persona_slug) || readySlug
    readyUser = str(obj(ev.user)?.name) || readyUser
    if (fresh) {
      fresh = false
      if (sentConv) void history(false)
      else greet()
    }
    flush()
    persist()
  }

  /** resume_gap: the events asked for are gone; show the stored history instead. */
  function gap(): void {
    lastSeq = readySeq // live events go on from there (also when the log was behind us)
    if (!queue) void history(true)
  }

  /** conversation_not_found: the stored conversation is gone; start a new one. */
  function restart(): void {
    convId = sentConv = null
    lastSeq = null
    queue = null
    reset()
    fresh = true
    persist()
    start()
  }

  /** Empty the log, but keep unsent messages and replies still streaming. */
  function reset(): void {
    const keep = new Set<Element>([...replies.values()].map((r) => r.el))
    for (const id of pending.keys()) {
      const el = userEls.get(id)
      if (el) keep.add(el)
    }
    Array.from(log.children).forEach((el) => keep.has(el) || el.remove())
    seenMsg.clear()
    seenResp.clear()
  }

  async function history(clear: boolean): Promise<void> {
    queue = queue || []
    const cid = convId
    const [data] = await Promise.all([
      api(`/v1/conversations/${encodeURIComponent(cid || '')}/messages?limit=50`),
      persona(), // authors' names
    ])
    if (cid !== convId || !queue) return // the conversation changed meanwhile
    if (clear && data) reset()
    const items = data && Array.isArray(data.data) ? (data.data as unknown[]) : []
    const frag = document.createDocumentFragment()
    for (const item of items) {
      const m = obj(item)
      const role = str(m?.role)
      if (!m || (role !== 'user' && role !== 'assistant')) continue
      const mid = str(m.id)
      if (mid && seenMsg.has(mid)) continue
      const cl = str(m.client_id)
      const st = str(m.status)
      const text = str(m.content)
      if (role === 'assistant' && !text) continue
      const rid = str(m.response_id)
      const user = role === 'user'
      const el = bubble(
        role,
        text,
        user ? 'sent' : st === 'complete' ? 'done' : st,
        user ? { id: cl, messageId: mid } : { speaker: 'persona', messageId: mid, responseId: rid },
      )
      if (mid) seenMsg.add(mid)
      if (user && cl) {
        userEls.get(cl)?.remove()
        userEls.set(cl, el)
        pending.delete(cl)
      }
      if (rid && !user) seenResp.add(rid)
      frag.append(el)
    }
    log.insertBefore(frag, log.firstChild)
    if (data && !items.length) greet()
    const q = queue
    queue = null
    for (const ev of q) handle(ev)
    scroll(true)
    persist()
  }

  /** The persona's first message, at the top of a conversation that has none. */
  function greet(): void {
    const cid = convId || ''
    if (greeted === cid) return
    greeted = cid
    void persona().then((p) => {
      const g = str(p?.first_mes).trim()
      if (!g || cid !== convId) return
      const user = o.userName || tk.n || readyUser || 'User'
      const text = g.replace(/\{\{char\}\}/gi, personaName || readySlug).replace(/\{\{user\}\}/gi, user)
      log.insertBefore(bubble('assistant', text, 'done', { greeting: 'true', speaker: 'persona' }), log.firstChild)
      scroll()
    })
  }

  function reply(rid: string, ev: Json, seq: number): Reply {
    let r = replies.get(rid)
    if (!r) {
      const el = bubble('assistant', '', 'streaming', {
        responseId: rid,
        speaker: obj(ev.speaker)?.type === 'operator' ? 'operator' : 'persona',
        name: speaker(ev),
      })
      el.setAttribute('aria-busy', 'true')
      r = { el, tx: textOf(el), text: '', seq }
      replies.set(rid, r)
      add(el)
      updateTyping()
    }
    return r
  }

  /** A reply ended: with its final text, or removed when there is none. */
  function finish(rid: string, state: string, text: string | null, mid: string): void {
    const r = replies.get(rid)
    replies.delete(rid)
    seenResp.add(rid)
    if (r) {
      const t = text ?? r.text
      if (!t || (mid && seenMsg.has(mid))) r.el.remove()
      else {
        r.tx.textContent = t
        r.el.dataset.status = state
        r.el.removeAttribute('aria-busy')
        if (mid) r.el.dataset.messageId = mid
      }
    }
    if (mid) seenMsg.add(mid)
    updateTyping()
    if (!isOpen && state === 'done') badge.hidden = false
  }

  function handle(ev: Json): void {
    const seq = typeof ev.seq === 'number' ? ev.seq : null
    if (seq !== null) {
      if (lastSeq !== null && seq <= lastSeq) return // seen already
      lastSeq = seq
    }
    const type = str(ev.type)
    const rid = str(ev.response_id)
    const mid = str(ev.message_id)
    const skip = !!rid && seenResp.has(rid) // a reply the history already showed
    if (type === 'message.accepted') {
      const id = str(ev.id)
      const el = userEls.get(id)
      pending.delete(id)
      if (el) {
        setMeta(el, 'sent', '')
        if (typeof ev.text === 'string') textOf(el).textContent = ev.text
        if (mid) el.dataset.messageId = mid
      } else if (!mid || !seenMsg.has(mid)) {
        userEls.set(id, add(bubble('user', str(ev.text), 'sent', { id, messageId: mid })))
      }
      if (mid) seenMsg.add(mid)
    } else if (type === 'response.created') {
      if (rid && !skip) reply(rid, ev, seq || 0)
    } else if (type === 'response.text.delta') {
      if (rid && !skip) {
        const r = reply(rid, ev, seq || 0)
        r.text += str(ev.delta)
        r.tx.textContent = r.text
        scroll()
      }
    } else if (type === 'response.done' || type === 'response.cancelled') {
      if (rid && !skip) {
        if (!replies.has(rid) && !(mid && seenMsg.has(mid))) reply(rid, ev, seq || 0)
        finish(rid, type === 'response.done' ? 'done' : 'cancelled', textOrNull(ev), mid)
      }
    } else if (type === 'takeover.started' || type === 'takeover.ended') {
      const t = obj(ev.takeover)
      if (t && t.mode === 'operator')
        sys(`${str(t.operator) || 'An operator'} ${type === 'takeover.started' ? 'joined' : 'left'} the conversation`, type)
    } else if (type === 'error') {
      error(ev, rid, skip, mid)
    }
    persist()
  }

  function error(ev: Json, rid: string, skip: boolean, mid: string): void {
    const code = str(ev.code) || 'error'
    const id = str(ev.id)
    if (id && pending.has(id)) {
      const p = pending.get(id) as Pending
      const wait = RETRY[code]
      if (wait !== undefined && p.tries < 5) {
        p.tries++
        if (wait) setTimeout(() => pending.has(id) && ready && send({ type: 'message.create', id, text: p.text }), wait)
      } else fail(id, 'Not sent')
    }
    if (rid && !skip && replies.has(rid)) {
      // moderation_blocked withdraws the reply: drop what was shown
      finish(rid, 'error', code === 'moderation_blocked' ? '' : textOrNull(ev), mid)
    }
    sys(`${str(ev.message) || 'Something went wrong'} (${code})`, code)
  }

  // -- sending ----------------------------------------------------------------
  /** A message to send (again, after a reload): shown as "sending…" until accepted. */
  function queueMsg(id: string, text: string): void {
    pending.set(id, { text, tries: 0 })
    userEls.set(id, log.appendChild(bubble('user', text, 'sending', { id })))
  }

  function submit(): void {
    const text = input.value.trim()
    if (!text) return
    input.value = ''
    grow()
    const id = uuid()
    queueMsg(id, text)
    scroll(true)
    persist()
    if (ready) send({ type: 'message.create', id, text })
    else connect()
  }

  // -- token ------------------------------------------------------------------
  function setToken(t: string): void {
    if (typeof t !== 'string' || !t) return
    const was = token
    token = t
    tk = decodeToken(t)
    if (!personaRef) personaRef = o.persona || tk.p || ''
    expiredShown = false
    if (!branded) void brand()
    if (!was || !ws) {
      attempts = 0
      if (isOpen || convId || pending.size) connect()
    }
  }

  // -- boot -------------------------------------------------------------------
  for (const item of Array.isArray(saved.q) ? (saved.q as unknown[]) : []) {
    if (!Array.isArray(item)) continue
    const [id, text] = item as unknown[]
    if (typeof id === 'string' && typeof text === 'string') queueMsg(id, text)
  }

  const mount = (): void => {
    document.body.append(host)
    void brand()
    void persona()
    if (o.open || saved.o === true) open(false)
    else if (convId || pending.size) connect() // a conversation goes on: follow it
  }
  if (document.body) mount()
  else document.addEventListener('DOMContentLoaded', mount)

  window.addEventListener('online', () => {
    if (!ws && timer) {
      attempts = 0
      connect()
    }
  })
  // Keep idle sockets alive through proxies that drop silent connections.
  setInterval(() => ready && send({ type: 'ping' }), 30000)

  return { open: () => open(), close, setToken }
}

const textOrNull = (ev: Json): string | null => (typeof ev.text === 'string' ? ev.text : null)
