// The Tenantry console: Preact + htm as ES modules (no build step), uPlot for usage charts.
// Authentication is a bearer token kept in sessionStorage and sent in the Authorization header on
// each call: a cross-site page cannot send it, so the console needs no CSRF token.
import { h, render } from 'preact'
import { useCallback, useEffect, useRef, useState } from 'preact/hooks'
import htm from 'htm'

const html = htm.bind(h)
const TOKEN_KEY = 'tenantry.admin.token'

// ---- API ---------------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, body) {
    super(body?.message ?? `HTTP ${status}`)
    this.status = status
    this.code = body?.code ?? 'HTTP_' + status
    this.details = body?.details
  }
}

function token() {
  return sessionStorage.getItem(TOKEN_KEY)
}

async function api(path, { method = 'GET', body } = {}) {
  const headers = { authorization: `Bearer ${token()}` }
  if (body !== undefined) headers['content-type'] = 'application/json'
  const res = await fetch(`api/${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) })
  const text = await res.text()
  const data = text ? JSON.parse(text) : null
  if (!res.ok) {
    // A token revoked or expired meanwhile: back to the sign-in page (it reports its own 401s).
    if (res.status === 401 && token()) {
      sessionStorage.removeItem(TOKEN_KEY)
      dispatchEvent(new Event('tenantry:signed-out'))
    }
    throw new ApiError(res.status, data)
  }
  return data
}

/** Follow an operation's server-sent events (fetch, because EventSource cannot send the header). */
async function followOperation(id, onProgress, signal) {
  const res = await fetch(`api/operations/${id}/events`, { headers: { authorization: `Bearer ${token()}` }, signal })
  if (!res.ok) throw new ApiError(res.status, await res.json().catch(() => null))
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader()
  let buffer = ''
  for (;;) {
    const { value, done } = await reader.read()
    if (done) return
    buffer += value
    let cut
    while ((cut = buffer.indexOf('\n\n')) >= 0) {
      const block = buffer.slice(0, cut)
      buffer = buffer.slice(cut + 2)
      const data = block.split('\n').find((l) => l.startsWith('data: '))
      if (data) onProgress(JSON.parse(data.slice(6)))
    }
  }
}

/** Download an archive: fetched with the header (a plain link could not send it), saved from a blob. */
async function download(path) {
  const res = await fetch(`api/${path}`, { headers: { authorization: `Bearer ${token()}` } })
  if (!res.ok) throw new ApiError(res.status, await res.json().catch(() => null))
  const name = /filename="([^"]+)"/.exec(res.headers.get('content-disposition') ?? '')?.[1] ?? 'download.tar'
  const url = URL.createObjectURL(await res.blob())
  const a = Object.assign(document.createElement('a'), { href: url, download: name })
  document.body.append(a)
  a.click()
  a.remove()
  setTimeout(() => URL.revokeObjectURL(url), 10_000)
}

// ---- small pieces ------------------------------------------------------------------------------

function useLoad(load, deps) {
  const [state, setState] = useState({ loading: true, data: null, error: null })
  const latest = useRef(0)
  const reload = useCallback(() => {
    // Only the newest request's answer is shown: a slow answer to an older search must not win.
    const n = ++latest.current
    setState((s) => ({ ...s, loading: true }))
    load().then(
      (data) => { if (n === latest.current) setState({ loading: false, data, error: null }) },
      (error) => { if (n === latest.current) setState({ loading: false, data: null, error }) },
    )
  }, deps)
  useEffect(reload, [reload])
  return { ...state, reload }
}

function ErrorNote({ error }) {
  if (!error) return null
  return html`<p class="error" role="alert"><strong>${error.code}</strong> ${error.message}</p>`
}

function Title({ children, focus = true }) {
  const ref = useRef(null)
  // Focus moves to the page's heading on navigation, so keyboard and screen-reader users start there.
  useEffect(() => { if (focus) ref.current?.focus() }, [])
  return html`<h1 tabindex="-1" ref=${ref}>${children}</h1>`
}

function Status({ status }) {
  return html`<span class=${`status status-${status}`}>${status}</span>`
}

function Progress({ percent, label }) {
  const value = percent ?? undefined
  return html`<div class="progress"><progress max="100" value=${value} aria-label=${label}></progress><span>${percent === null || percent === undefined ? '…' : `${percent}%`}</span></div>`
}

const when = (iso) => (iso ? new Date(iso).toLocaleString() : '-')

/** A confirmation dialog (native <dialog>: focus is trapped inside, Escape cancels). */
function Confirm({ title, children, confirmLabel, danger, typed, onConfirm, onClose }) {
  const ref = useRef(null)
  const [busy, setBusy] = useState(false)
  const [error, setError] = useState(null)
  // Destructive actions ask for the tenant's slug to be typed: the button stays off until it matches.
  const [typedValue, setTypedValue] = useState('')
  useEffect(() => {
    const d = ref.current
    d.showModal()
    const cancel = (e) => { e.preventDefault(); onClose() }
    d.addEventListener('cancel', cancel)
    return () => d.removeEventListener('cancel', cancel)
  }, [])
  const submit = async (e) => {
    e.preventDefault()
    setBusy(true)
    setError(null)
    try {
      await onConfirm(new FormData(e.target))
      onClose()
    } catch (err) {
      setError(err)
      setBusy(false)
    }
  }
  return html`<dialog ref=${ref} aria-labelledby="dialog-title">
    <form method="dialog" onSubmit=${submit}>
      <h2 id="dialog-title">${title}</h2>
      ${children}
      ${typed && html`<label for="typed-confirmation">Type <strong>${typed}</strong> to confirm</label>
        <input id="typed-confirmation" autocomplete="off" spellcheck="false" value=${typedValue} onInput=${(e) => setTypedValue(e.target.value)} />`}
      <${ErrorNote} error=${error} />
      <div class="buttons">
        <button type="button" onClick=${onClose}>Cancel</button>
        <button type="submit" class=${danger ? 'danger' : 'primary'} disabled=${busy || (typed && typedValue !== typed)}>${busy ? 'Working…' : confirmLabel}</button>
      </div>
    </form>
  </dialog>`
}

// ---- pages -------------------------------------------------------------------------------------

function SignIn({ onSignedIn }) {
  const [error, setError] = useState(null)
  const submit = async (e) => {
    e.preventDefault()
    const value = new FormData(e.target).get('token').trim()
    sessionStorage.setItem(TOKEN_KEY, value)
    try {
      await api('sign-in', { method: 'POST' }) // audited as admin.sign-in
      onSignedIn()
    } catch (err) {
      sessionStorage.removeItem(TOKEN_KEY)
      setError(err)
    }
  }
  return html`<main id="main" class="signin">
    <${Title} focus=${false}>Tenantry console</${Title}>
    <form onSubmit=${submit}>
      <label for="token">Admin token</label>
      <input id="token" name="token" type="password" autocomplete="off" required placeholder="tnta_…" autofocus />
      <p class="hint">Create one with <code>${'tenantry admin tokens create <name> --role operator'}</code>. It is kept for this tab only.</p>
      <button type="submit" class="primary">Sign in</button>
      <${ErrorNote} error=${error} />
    </form>
  </main>`
}

/** The noisiest tenants of the last 24 hours by database time, as bars of their server's share. */
function TopTenants() {
  const { data, error } = useLoad(() => api('usage/top?by=db_time&periodMs=86400000&limit=10'), [])
  if (error) return html`<${ErrorNote} error=${error} />`
  if (!data) return null
  return html`<section class="card" aria-label="Top tenants">
    <h2>Top tenants by database time, last 24 h</h2>
    ${data.length === 0 ? html`<p class="hint">No usage metered in the last 24 hours.</p>` : data.map((r) => html`<div class="bar-row wide-label">
      <span class="bar-label"><a href=${`#/tenants/${r.slug}`}>${r.slug ?? r.tenantId.slice(0, 8)}</a></span>
      <span class="bar" role="img" aria-label=${`${r.slug}: ${Math.round(r.serverDbTimeShare * 100)}% of ${r.server}'s database time, ${r.requests} requests`}><span style=${`width:${Math.round(r.serverDbTimeShare * 100)}%`}></span></span>
      <span class="bar-n">${Math.round(r.serverDbTimeShare * 100)}%</span></div>`)}
  </section>`
}

function Overview() {
  const { data, error } = useLoad(() => api('overview'), [])
  if (error) return html`<${ErrorNote} error=${error} />`
  if (!data) return html`<p>Loading…</p>`
  const sum = (f) => data.tenants.filter(f).reduce((n, c) => n + c.count, 0)
  const total = sum(() => true)
  const group = (key, values) => values.map((v) => ({ label: v, n: sum((c) => c[key] === v) }))
  const servers = [...new Set(data.tenants.map((c) => c.server))]
  const Bars = ({ title, rows }) => html`<section class="card" aria-label=${title}>
    <h2>${title}</h2>
    ${rows.map((r) => html`<div class="bar-row"><span class="bar-label">${r.label}</span>
      <span class="bar" role="img" aria-label=${`${r.label}: ${r.n} tenants`}><span style=${`width:${total ? (100 * r.n) / total : 0}%`}></span></span>
      <span class="bar-n">${r.n}</span></div>`)}
  </section>`
  return html`<div>
    <${Title}>Fleet overview</${Title}>
    <p class="lead">${total} tenants on ${data.servers.length} server${data.servers.length === 1 ? '' : 's'}; ${data.running.length} operation${data.running.length === 1 ? '' : 's'} running.</p>
    <div class="cards">
      <${Bars} title="By tier" rows=${group('tier', ['pooled', 'schema', 'database'])} />
      <${Bars} title="By status" rows=${group('status', ['active', 'suspended', 'provisioning', 'deleted'])} />
      <${Bars} title="By server" rows=${group('server', servers)} />
    </div>
    <div class="cards top"><${TopTenants} /></div>
    <h2>Servers</h2>
    <table>
      <thead><tr><th scope="col">Server</th><th scope="col">Region</th><th scope="col">Tenants</th><th scope="col">Connections in use (server)</th><th scope="col">This process's pool</th></tr></thead>
      <tbody>${data.servers.map((s) => html`<tr>
        <th scope="row">${s.name}</th><td>${s.region ?? '-'}</td><td>${s.tenants}</td>
        <td>${s.connections ? html`<${Progress} percent=${Math.round((100 * s.connections.used) / s.connections.max)} label=${`${s.name} connections`} /> <small>${s.connections.used} of ${s.connections.max}</small>` : 'n/a'}</td>
        <td>${s.pool ? `${s.pool.open} open, ${s.pool.busy} busy, budget ${s.pool.budget}` : '-'}</td>
      </tr>`)}</tbody>
    </table>
    ${data.running.length > 0 && html`<h2>Running operations</h2><ul>${data.running.map((o) => html`<li><a href=${`#/operations/${o.id}`}>${o.kind} ${o.slug ?? ''}</a> — ${o.step ?? ''}</li>`)}</ul>`}
  </div>`
}

function Tenants({ query }) {
  const [filters, setFilters] = useState({ q: query.get('q') ?? '', status: query.get('status') ?? '', tier: query.get('tier') ?? '' })
  const [cursors, setCursors] = useState([null])
  const [creating, setCreating] = useState(false)
  const cursor = cursors[cursors.length - 1]
  const params = new URLSearchParams({ limit: '25' })
  for (const [k, v] of Object.entries(filters)) if (v) params.set(k, v)
  if (cursor) params.set('cursor', cursor)
  const { data, error, reload } = useLoad(() => api(`tenants?${params}`), [params.toString()])
  const change = (e) => { setFilters({ ...filters, [e.target.name]: e.target.value }); setCursors([null]) }
  return html`<div>
    <${Title}>Tenants</${Title}>
    <form class="filters" role="search" onSubmit=${(e) => e.preventDefault()}>
      <label>Search <input type="search" name="q" value=${filters.q} onInput=${change} placeholder="slug or name" /></label>
      <label>Status <select name="status" value=${filters.status} onChange=${change}>
        <option value="">any</option>${['active', 'suspended', 'provisioning', 'deleted'].map((s) => html`<option>${s}</option>`)}</select></label>
      <label>Tier <select name="tier" value=${filters.tier} onChange=${change}>
        <option value="">any</option>${['pooled', 'schema', 'database'].map((s) => html`<option>${s}</option>`)}</select></label>
      <button type="button" class="primary" onClick=${() => setCreating(true)}>Provision tenant…</button>
    </form>
    <${ErrorNote} error=${error} />
    ${data && html`<table aria-label="Tenants">
      <thead><tr><th scope="col">Slug</th><th scope="col">Name</th><th scope="col">Tier</th><th scope="col">Status</th><th scope="col">Plan</th><th scope="col">Server</th><th scope="col">Created</th></tr></thead>
      <tbody>${data.tenants.length === 0 ? html`<tr><td colspan="7">No tenants match.</td></tr>` : data.tenants.map((t) => html`<tr>
        <th scope="row"><a href=${`#/tenants/${t.slug}`}>${t.slug}</a></th><td>${t.name}</td><td>${t.tier}</td><td><${Status} status=${t.status} /></td>
        <td>${t.plan}</td><td>${t.placement.server}</td><td>${when(t.createdAt)}</td></tr>`)}</tbody>
    </table>
    <nav class="pager" aria-label="Pages">
      <button type="button" disabled=${cursors.length === 1} onClick=${() => setCursors([null])}>First page</button>
      <button type="button" disabled=${cursors.length === 1} onClick=${() => setCursors(cursors.slice(0, -1))}>Previous</button>
      <span>Page ${cursors.length}</span>
      <button type="button" disabled=${!data.next} onClick=${() => setCursors([...cursors, data.next])}>Next</button>
    </nav>`}
    ${creating && html`<${Confirm} title="Provision a tenant" confirmLabel="Provision" onClose=${() => setCreating(false)}
      onConfirm=${async (form) => {
        const body = { slug: form.get('slug'), tier: form.get('tier') }
        if (form.get('name')) body.name = form.get('name')
        if (form.get('plan')) body.plan = form.get('plan')
        const t = await api('tenants', { method: 'POST', body })
        reload()
        location.hash = `#/tenants/${t.slug}`
      }}>
      <label for="new-slug">Slug</label><input id="new-slug" name="slug" required pattern="[a-z0-9]([a-z0-9\\-]{0,61}[a-z0-9])?" autofocus />
      <label for="new-name">Name</label><input id="new-name" name="name" maxlength="200" />
      <label for="new-tier">Tier</label><select id="new-tier" name="tier">${['pooled', 'schema', 'database'].map((s) => html`<option>${s}</option>`)}</select>
      <label for="new-plan">Plan</label><input id="new-plan" name="plan" placeholder="default" />
    </${Confirm}>`}
  </div>`
}

function UsageChart({ slug }) {
  const ref = useRef(null)
  const { data, error } = useLoad(() => api(`tenants/${slug}/usage?granularity=hour&from=${new Date(Date.now() - 7 * 86400000).toISOString()}`), [slug])
  useEffect(() => {
    if (!data || !ref.current || data.length === 0) return
    const xs = data.map((r) => new Date(r.bucket).getTime() / 1000)
    const plot = new window.uPlot({
      width: Math.min(ref.current.clientWidth || 900, 1100), height: 240, title: 'Requests and database time per hour (7 days)',
      series: [{}, { label: 'requests', stroke: '#2563eb', width: 2 }, { label: 'db time (ms)', stroke: '#d97706', width: 2, scale: 'ms' }],
      axes: [{}, { label: 'requests' }, { side: 1, scale: 'ms', label: 'ms', grid: { show: false } }],
    }, [xs, data.map((r) => r.requests), data.map((r) => r.dbTimeMs)], ref.current)
    return () => plot.destroy()
  }, [data])
  if (error) return html`<${ErrorNote} error=${error} />`
  if (!data) return html`<p>Loading usage…</p>`
  if (data.length === 0) return html`<p class="hint">No usage metered in the last 7 days.</p>`
  return html`<figure class="chart" ref=${ref} aria-label=${`Usage chart of ${slug}: ${data.reduce((n, r) => n + r.requests, 0)} requests in 7 days`}></figure>`
}

const ACTIONS = {
  suspend: { label: 'Suspend', danger: true, when: ['active'], text: (t) => `Requests for ${t.slug} will get 403 TENANT_SUSPENDED. Its data is untouched.`, reason: true },
  resume: { label: 'Resume', when: ['suspended'], text: (t) => `${t.slug} will be served again.` },
  delete: { label: 'Delete', danger: true, when: ['active', 'suspended'], text: (t) => `${t.slug} will no longer be served (404); its data is kept for the retention period.` },
  restore: { label: 'Restore', when: ['deleted'], text: (t) => `${t.slug} comes back suspended.` },
  purge: { label: 'Purge', danger: true, when: ['deleted'], text: (t) => `All of ${t.slug}'s data is removed for good. This cannot be undone.`, force: true },
  erase: { label: 'Erase', danger: true, when: ['deleted'], typed: true, text: (t) => `Verified erasure: every row, room, role and archive of ${t.slug} is removed, its archive key destroyed, and a certificate kept. This cannot be undone.` },
}

const size = (bytes) => (bytes < 1024 * 1024 ? `${(bytes / 1024).toFixed(1)} KB` : `${(bytes / 1024 / 1024).toFixed(1)} MB`)

/** A tenant's archives: download, restore (as a copy, or over it after typing its slug); a running backup or export live. */
function Backups({ t, running }) {
  const list = useLoad(() => api(`tenants/${t.slug}/backups?limit=20`), [t.slug])
  const [restoring, setRestoring] = useState(null)
  const [mode, setMode] = useState('copy')
  const [error, setError] = useState(null)
  const [ended, setEnded] = useState(null)
  const get = (path) => { setError(null); download(path).catch(setError) }
  const restore = async (form) => {
    const body = mode === 'replace' ? { replace: true } : { as: form.get('as'), tier: form.get('tier') }
    const r = await api(`tenants/${t.slug}/backups/${restoring.id}/restore`, { method: 'POST', body })
    location.hash = `#/operations/${r.operationId}`
  }
  return html`<section class="card wide backups" aria-label="Backups"><h2>Backups</h2>
    ${running && html`<p>${running.kind === 'backup' ? 'Backup' : 'Export'} (<a href=${`#/operations/${running.id}`}>operation ${running.id.slice(0, 8)}</a>)</p>
      <${LiveProgress} key=${running.id} id=${running.id} initial=${null} onEnd=${() => { list.reload(); setEnded(running) }} />`}
    ${ended?.kind === 'export' && ended === running && html`<p><button type="button" onClick=${() => get(`exports/${ended.id}/archive`)}>Download the export</button></p>`}
    <${ErrorNote} error=${list.error || error} />
    ${list.data && (list.data.length === 0 ? html`<p class="hint">No backups yet.</p>` : html`<table aria-label=${`Backups of ${t.slug}`}>
      <thead><tr><th scope="col">Created</th><th scope="col">Tier</th><th scope="col">Rows</th><th scope="col">Size</th><th scope="col">Encrypted</th><th scope="col">Actions</th></tr></thead>
      <tbody>${list.data.map((b) => html`<tr><th scope="row">${when(b.createdAt)}</th><td>${b.tier}</td><td>${b.rows}</td><td>${size(b.bytes)}</td><td>${b.encrypted ? 'yes' : 'no'}</td>
        <td><button type="button" class="link" aria-label=${`Download backup of ${when(b.createdAt)}`} onClick=${() => get(b.download)}>download</button>
          <button type="button" class="link" aria-label=${`Restore backup of ${when(b.createdAt)}`} onClick=${() => { setMode('copy'); setRestoring(b) }}>restore…</button></td></tr>`)}</tbody></table>`)}
    ${restoring && html`<${Confirm} title=${`Restore ${t.slug}'s backup of ${when(restoring.createdAt)}?`} confirmLabel="Restore" danger=${mode === 'replace'}
      typed=${mode === 'replace' ? t.slug : undefined} onClose=${() => setRestoring(null)} onConfirm=${restore}>
      <fieldset><legend>Restore</legend>
        <label class="check"><input type="radio" name="mode" value="copy" checked=${mode === 'copy'} onChange=${() => setMode('copy')} /> as a new tenant (a copy)</label>
        <label class="check"><input type="radio" name="mode" value="replace" checked=${mode === 'replace'} onChange=${() => setMode('replace')} /> over ${t.slug} (its current data is replaced)</label></fieldset>
      ${mode === 'copy' && html`<label for="restore-as">New slug</label><input id="restore-as" name="as" required pattern="[a-z0-9]([a-z0-9\\-]{0,61}[a-z0-9])?" />
        <label for="restore-tier">Tier</label><select id="restore-tier" name="tier">${['pooled', 'schema', 'database'].map((x) => html`<option selected=${x === t.tier}>${x}</option>`)}</select>`}
    </${Confirm}>`}
  </section>`
}

/** Move a tenant to another tier and/or server: copied while it serves, then switched to (docs/moves.md). */
function MoveDialog({ t, onClose, onMoved }) {
  const servers = useLoad(() => api('servers'), [])
  return html`<${Confirm} title=${`Move ${t.slug}?`} confirmLabel="Move" onClose=${onClose} onConfirm=${async (form) => {
    await api(`tenants/${t.slug}/move`, { method: 'POST', body: { tier: form.get('tier'), server: form.get('server') } })
    onMoved()
  }}>
    <p>${t.slug}'s rows are copied to the new place while it keeps serving, then it is switched over; the old place is kept for a while for a rollback.</p>
    <label for="move-tier">Tier</label><select id="move-tier" name="tier" autofocus>${['pooled', 'schema', 'database'].map((x) => html`<option selected=${x === t.tier}>${x}</option>`)}</select>
    <label for="move-server">Server</label><select id="move-server" name="server">${(servers.data ?? [{ name: t.placement.server }]).map((x) => html`<option selected=${x.name === t.placement.server}>${x.name}</option>`)}</select>
  </${Confirm}>`
}

function TenantDetail({ slug }) {
  const { data: t, error, reload } = useLoad(() => api(`tenants/${slug}`), [slug])
  const [action, setAction] = useState(null)
  const [running, setRunning] = useState(null)
  const [domainError, setDomainError] = useState(null)
  if (error) return html`<div><${Title}>${slug}</${Title}><${ErrorNote} error=${error} /></div>`
  if (!t) return html`<p>Loading…</p>`
  const run = async (name, form) => {
    const body = {}
    if (form.get('reason')) body.reason = form.get('reason')
    if (form.get('force')) body.force = true
    if (name === 'delete') await api(`tenants/${slug}`, { method: 'DELETE' })
    else if (name === 'erase') {
      const r = await api(`tenants/${slug}/erase`, { method: 'POST', body: {} })
      location.hash = `#/operations/${r.operationId}`
      return
    } else await api(`tenants/${slug}/${name}`, { method: 'POST', body })
    if (name === 'purge') location.hash = '#/tenants'
    else reload()
  }
  const addDomain = async (e) => {
    e.preventDefault()
    setDomainError(null)
    try {
      await api(`tenants/${slug}/domains`, { method: 'POST', body: { domain: new FormData(e.target).get('domain') } })
      e.target.reset()
      reload()
    } catch (err) { setDomainError(err) }
  }
  const domainAction = async (path, method) => {
    setDomainError(null)
    try { await api(path, { method, body: method === 'POST' ? {} : undefined }) } catch (err) { setDomainError(err) }
    reload()
  }
  const a = action && ACTIONS[action]
  return html`<div>
    <${Title}>${t.name} <small>(${t.slug})</small> <${Status} status=${t.status} /></${Title}>
    ${t.statusReason && html`<p class="lead">${t.statusReason}</p>`}
    <div class="actions" role="group" aria-label="Actions">
      ${Object.entries(ACTIONS).filter(([, x]) => x.when.includes(t.status)).map(([name, x]) => html`<button type="button" class=${x.danger ? 'danger' : ''} onClick=${() => setAction(name)}>${x.label}…</button>`)}
      ${(t.status === 'active' || t.status === 'suspended') && html`<button type="button" onClick=${() => setAction('move')}>Move…</button>`}
      ${t.status !== 'deleted' && t.status !== 'provisioning' && html`<button type="button" onClick=${() => setAction('backup')}>Back up…</button>
        <button type="button" onClick=${() => setAction('export')}>Export…</button>`}
    </div>
    <div class="cards">
      <section class="card"><h2>Placement</h2><dl>
        <dt>Tier</dt><dd>${t.tier}</dd><dt>Server</dt><dd>${t.placement.server}</dd><dt>Database</dt><dd>${t.placement.database}</dd>
        <dt>Schema</dt><dd>${t.placement.schema ?? '-'}</dd><dt>Region</dt><dd>${t.region ?? '-'}</dd><dt>Id</dt><dd><code>${t.id}</code></dd><dt>Created</dt><dd>${when(t.createdAt)}</dd></dl></section>
      <${PlanCard} t=${t} onChanged=${reload} />
      <section class="card"><h2>Domains</h2>
        <ul class="domains">${t.domains.length === 0 ? html`<li>none</li>` : t.domains.map((d) => html`<li>
          <span>${d.domain}</span> <${Status} status=${d.status} />
          ${d.status === 'pending' && d.instructions && html`<p class="hint">Publish TXT <code>${d.instructions.txtName}</code> = <code>${d.instructions.txtValue}</code>, or serve <code>${d.instructions.httpBody}</code> at <code>${d.instructions.httpUrl}</code>; then verify.</p>
            <button type="button" aria-label=${`Verify ${d.domain}`} onClick=${() => domainAction(`tenants/${slug}/domains/${d.domain}/verify`, 'POST')}>Verify</button>`}
          <button type="button" class="link" aria-label=${`Remove ${d.domain}`} onClick=${() => domainAction(`tenants/${slug}/domains/${d.domain}`, 'DELETE')}>remove</button></li>`)}</ul>
        <form onSubmit=${addDomain} class="inline"><label for="domain">Add domain</label><input id="domain" name="domain" required placeholder="app.example.com" /><button type="submit">Add</button></form>
        <${ErrorNote} error=${domainError} /></section>
    </div>
    ${t.status !== 'deleted' && html`<div class="cards" key=${`${t.plan}:${t.updatedAt}`}>
      <${Branding} slug=${slug} onChanged=${reload} />
      <${TenantFlags} slug=${slug} />
      <${TenantConfig} slug=${slug} onChanged=${reload} />
    </div>`}
    <${Backups} t=${t} running=${running} />
    <h2>Usage</h2>
    <${UsageChart} slug=${slug} />
    <h2>Recent changes</h2>
    <${AuditTable} entries=${t.audit} />
    ${action === 'move' && html`<${MoveDialog} t=${t} onClose=${() => setAction(null)} onMoved=${reload} />`}
    ${action === 'backup' && html`<${Confirm} title=${`Back up ${t.slug}?`} confirmLabel="Back up" onClose=${() => setAction(null)} onConfirm=${async () => {
      const r = await api(`tenants/${slug}/backups`, { method: 'POST', body: {} })
      setRunning({ id: r.operationId, kind: 'backup' })
    }}><p>A consistent snapshot of ${t.slug}'s rows is written as an archive while it keeps serving.</p></${Confirm}>`}
    ${action === 'export' && html`<${Confirm} title=${`Export ${t.slug}?`} confirmLabel="Export" onClose=${() => setAction(null)} onConfirm=${async (form) => {
      const r = await api(`tenants/${slug}/exports`, { method: 'POST', body: { format: form.get('format') } })
      setRunning({ id: r.operationId, kind: 'export' })
    }}><p>Every table of ${t.slug} as files with a manifest (GDPR Art. 20), to download when done.</p>
      <label for="export-format">Format</label><select id="export-format" name="format"><option>jsonl</option><option>csv</option></select></${Confirm}>`}
    ${a && html`<${Confirm} title=${`${a.label} ${t.slug}?`} confirmLabel=${a.label} danger=${a.danger} typed=${a.typed ? t.slug : undefined} onClose=${() => setAction(null)} onConfirm=${(form) => run(action, form)}>
      <p>${a.text(t)}</p>
      ${a.reason && html`<label for="reason">Reason (shown to its users)</label><input id="reason" name="reason" maxlength="500" autofocus />`}
      ${a.force && html`<label class="check"><input type="checkbox" name="force" /> Purge before the retention period ends</label>`}
    </${Confirm}>`}
  </div>`
}

// ---- configuration, branding, flags (issue 12 through the admin API) -----------------------------

/** A coded error, with the JSON pointer a refused configuration names. */
function ConfigError({ error }) {
  if (!error) return null
  const pointer = error.details?.pointer
  return html`<div class="error" role="alert"><strong>${error.code}</strong> ${error.message}${pointer !== undefined ? html`<br />at <code class="pointer">${pointer || '/'}</code>` : ''}</div>`
}

const pretty = (v) => JSON.stringify(v ?? {}, null, 2)

function TenantConfig({ slug, onChanged }) {
  const merged = useLoad(() => api(`tenants/${slug}/config`), [slug])
  const own = useLoad(() => api(`tenants/${slug}/config?layer=tenant`), [slug])
  const [error, setError] = useState(null)
  const [saved, setSaved] = useState(null)
  const save = async (e) => {
    e.preventDefault()
    setError(null)
    setSaved(null)
    let value
    try { value = JSON.parse(new FormData(e.target).get('layer')) } catch (err) {
      setError({ code: 'INVALID_JSON', message: `The tenant layer is not JSON: ${err.message}` })
      return
    }
    try {
      const v = await api(`tenants/${slug}/config`, { method: 'PUT', body: { path: '/', value } })
      setSaved(v.id)
      merged.reload(); own.reload(); onChanged()
    } catch (err) { setError(err) }
  }
  return html`<section class="card wide" aria-label="Configuration"><h2>Configuration</h2>
    <div class="two">
      <div><h3>Merged (defaults ← plan ← tenant)</h3>${merged.data ? html`<pre aria-label="Merged configuration">${pretty(merged.data.value)}</pre>` : html`<${ErrorNote} error=${merged.error} />`}</div>
      <form onSubmit=${save}><h3 id="config-layer-label">Its own layer (JSON)</h3>
        ${own.data && html`<textarea id="config-layer" aria-labelledby="config-layer-label" name="layer" rows="8" spellcheck="false" key=${JSON.stringify(own.data.value)} value=${pretty(own.data.value)}></textarea>`}
        <div class="buttons"><button type="submit" class="primary">Save configuration</button></div>
        ${saved !== null && html`<p role="status" class="ok">Saved as version ${saved}.</p>`}
        <${ConfigError} error=${error} /></form>
    </div></section>`
}

function PlanCard({ t, onChanged }) {
  const plans = useLoad(() => api('plans'), [])
  const [target, setTarget] = useState(null)
  return html`<section class="card" aria-label="Plan"><h2>Plan</h2>
    <p>On plan <strong>${t.plan}</strong>.</p>
    <form class="inline" onSubmit=${(e) => { e.preventDefault(); setTarget(new FormData(e.target).get('plan')) }}>
      <label for="plan-choice">Change to</label>
      <select id="plan-choice" name="plan">${(plans.data ?? []).filter((p) => p.name !== t.plan).map((p) => html`<option>${p.name}</option>`)}</select>
      <button type="submit" disabled=${!plans.data || plans.data.length < 2}>Change plan…</button></form>
    ${target && html`<${Confirm} title=${`Move ${t.slug} to plan ${target}?`} confirmLabel="Change plan" onClose=${() => setTarget(null)}
      onConfirm=${async () => { await api(`tenants/${t.slug}/plan`, { method: 'PUT', body: { plan: target } }); onChanged() }}>
      <p>${t.slug}'s configuration, flags and limits follow plan ${target} in every process within a second.</p></${Confirm}>`}
  </section>`
}

function TenantFlags({ slug }) {
  const { data, error } = useLoad(() => api(`tenants/${slug}/flags`), [slug])
  if (error) return html`<${ErrorNote} error=${error} />`
  return html`<section class="card" aria-label="Flags"><h2>Flags for ${slug}</h2>
    ${!data ? html`<p>Loading…</p>` : data.length === 0 ? html`<p class="hint">No feature flags.</p>` : html`<table aria-label="Flags as evaluated">
      <thead><tr><th scope="col">Flag</th><th scope="col">Value</th><th scope="col">Variant</th><th scope="col">Why</th></tr></thead>
      <tbody>${data.map((f) => html`<tr><th scope="row">${f.key}</th><td><code>${JSON.stringify(f.value)}</code></td><td>${f.variant}</td><td>${f.reason}${f.ruleName ? ` (${f.ruleName})` : ''}</td></tr>`)}</tbody></table>`}
  </section>`
}

const BRANDING_FIELDS = [['displayName', 'Display name'], ['primaryColor', 'Primary colour'], ['accentColor', 'Accent colour'], ['logoUrl', 'Logo URL']]

function Branding({ slug, onChanged }) {
  const { data, error, reload } = useLoad(() => api(`tenants/${slug}/branding`), [slug])
  const [saveError, setSaveError] = useState(null)
  if (error) return html`<${ErrorNote} error=${error} />`
  if (!data) return null
  const b = data.merged
  const save = async (e) => {
    e.preventDefault()
    setSaveError(null)
    const form = new FormData(e.target)
    const body = { ...data.own }
    for (const [k] of BRANDING_FIELDS) { const v = form.get(k).trim(); if (v) body[k] = v; else delete body[k] }
    try { await api(`tenants/${slug}/branding`, { method: 'PUT', body }); reload(); onChanged() } catch (err) { setSaveError(err) }
  }
  const name = b.displayName ?? data.name
  return html`<section class="card" aria-label="Branding"><h2>Branding</h2>
    <div class="brand-preview" role="img" aria-label=${`Branding preview: ${name}, primary colour ${b.primaryColor ?? 'default'}`} style=${`background:${b.primaryColor ?? '#334155'}`}>
      ${b.logoUrl ? html`<img src=${b.logoUrl} alt="" />` : html`<span class="mark" style=${`background:${b.accentColor ?? '#e2e8f0'};color:${b.primaryColor ?? '#334155'}`}>${name.slice(0, 1).toUpperCase()}</span>`}
      <strong>${name}</strong></div>
    <form onSubmit=${save} class="brand-form" key=${JSON.stringify(data.own)}>
      ${BRANDING_FIELDS.map(([k, label]) => html`<label for=${`brand-${k}`}>${label}</label><input id=${`brand-${k}`} name=${k} value=${data.own[k] ?? ''} placeholder=${b[k] ?? ''} />`)}
      <div class="buttons"><button type="submit">Save branding</button></div>
      <${ConfigError} error=${saveError} /></form>
  </section>`
}

/** The rollout percentage of a flag: its rule with a percentage and no other condition. */
function rolloutOf(flag) {
  const r = [...flag.rules].reverse().find((x) => x.percentage !== undefined && Object.keys(x).every((k) => ['name', 'percentage', 'variant'].includes(k)))
  return r ? r.percentage : null
}

/** JSON typed into a form, or a coded error the dialog shows. */
function parseJson(text, what) {
  try { return JSON.parse(text) } catch (err) { throw { code: 'INVALID_JSON', message: `${what} is not JSON: ${err.message}` } }
}

function Plans() {
  const { data, error, reload } = useLoad(() => api('plans'), [])
  const [creating, setCreating] = useState(false)
  const [editing, setEditing] = useState(null)
  return html`<div>
    <${Title}>Plans</${Title}>
    <p class="lead">A plan's configuration layer sits between the defaults and its tenants'; its <code>limits</code> are the guard's. A change reaches every tenant on the plan within a second.</p>
    <div class="actions"><button type="button" class="primary" onClick=${() => setCreating(true)}>Create plan…</button></div>
    <${ErrorNote} error=${error} />
    ${data && html`<table aria-label="Plans"><thead><tr><th scope="col">Plan</th><th scope="col">Settings</th><th scope="col">Actions</th></tr></thead>
      <tbody>${data.map((p) => html`<tr><th scope="row">${p.name}</th><td><code>${JSON.stringify(p.settings)}</code></td>
        <td><button type="button" class="link" aria-label=${`Edit plan ${p.name}`} onClick=${() => setEditing(p)}>edit…</button></td></tr>`)}</tbody></table>`}
    ${creating && html`<${Confirm} title="Create a plan" confirmLabel="Create" onClose=${() => setCreating(false)} onConfirm=${async (form) => {
      await api('plans', { method: 'POST', body: { name: form.get('name'), settings: parseJson(form.get('settings'), 'The settings') } })
      reload()
    }}>
      <label for="plan-name">Name</label><input id="plan-name" name="name" required pattern="[a-z][a-z0-9_\\-]{0,62}" autofocus />
      <label for="plan-settings">Settings (JSON)</label><textarea id="plan-settings" name="settings" rows="6" spellcheck="false" value=${'{\n  "limits": {}\n}'}></textarea>
    </${Confirm}>`}
    ${editing && html`<${Confirm} title=${`Change plan ${editing.name}?`} confirmLabel="Save plan" onClose=${() => setEditing(null)} onConfirm=${async (form) => {
      await api(`plans/${editing.name}/config`, { method: 'PUT', body: { path: '/', value: parseJson(form.get('settings'), 'The layer') } })
      reload()
    }}>
      <p>Every tenant on ${editing.name} follows; a layer that any of them would fail is refused and nothing changes.</p>
      <label for="plan-layer">Its layer (JSON)</label><textarea id="plan-layer" name="settings" rows="10" spellcheck="false" value=${pretty(editing.settings)}></textarea>
    </${Confirm}>`}
  </div>`
}

function Flags() {
  const { data, error, reload } = useLoad(() => api('flags'), [])
  const [rolling, setRolling] = useState(null)
  return html`<div>
    <${Title}>Feature flags</${Title}>
    <${ErrorNote} error=${error} />
    ${data && (data.length === 0 ? html`<p class="hint">No feature flags yet: <code>tenantry flags set new-editor</code>.</p>` : html`<table aria-label="Feature flags">
      <thead><tr><th scope="col">Flag</th><th scope="col">Enabled</th><th scope="col">Default</th><th scope="col">Rollout</th><th scope="col">Rules</th><th scope="col"><span class="sr-only">Actions</span></th></tr></thead>
      <tbody>${data.map((f) => { const pct = rolloutOf(f); return html`<tr><th scope="row">${f.key}</th><td>${f.enabled ? 'yes' : 'no'}</td><td>${f.defaultVariant}</td>
        <td>${pct === null ? '-' : html`<${Progress} percent=${pct} label=${`${f.key} rollout`} />`}</td><td>${f.rules.length}</td>
        <td><button type="button" onClick=${() => setRolling(f)}>Roll out…</button></td></tr>` })}</tbody></table>`)}
    ${rolling && html`<${Confirm} title=${`Roll out ${rolling.key}`} confirmLabel="Roll out" onClose=${() => setRolling(null)}
      onConfirm=${async (form) => { await api(`flags/${rolling.key}/rollout`, { method: 'POST', body: { percentage: Number(form.get('percentage')) } }); reload() }}>
      <p>A stable share of tenants gets the flag; raising the percentage keeps the tenants that already have it.</p>
      <label for="rollout-percentage">Percentage of tenants</label>
      <input id="rollout-percentage" name="percentage" type="number" min="0" max="100" step="0.01" required value=${rolloutOf(rolling) ?? 0} autofocus /></${Confirm}>`}
  </div>`
}

function Operations() {
  const { data, error, reload } = useLoad(() => api('operations?limit=50'), [])
  useEffect(() => {
    const timer = setInterval(reload, 3000)
    return () => clearInterval(timer)
  }, [reload])
  return html`<div>
    <${Title}>Operations</${Title}>
    <${ErrorNote} error=${error} />
    ${data && html`<table aria-label="Operations">
      <thead><tr><th scope="col">Kind</th><th scope="col">Tenant</th><th scope="col">State</th><th scope="col">Progress</th><th scope="col">Step</th><th scope="col">Started</th><th scope="col">By</th></tr></thead>
      <tbody>${data.map((o) => html`<tr><th scope="row"><a href=${`#/operations/${o.id}`}>${o.kind}</a></th><td>${o.slug ?? '-'}</td>
        <td><${Status} status=${o.state} /></td><td><${Progress} percent=${o.percent} label=${`${o.kind} ${o.slug ?? ''} progress`} /></td><td>${o.step ?? '-'}</td><td>${when(o.createdAt)}</td><td>${o.startedBy}</td></tr>`)}</tbody>
    </table>`}
  </div>`
}

function LiveProgress({ id, initial, onEnd }) {
  const [p, setP] = useState(initial)
  const [error, setError] = useState(null)
  useEffect(() => {
    const ctl = new AbortController()
    followOperation(id, setP, ctl.signal).then(() => onEnd?.(), (err) => { if (err.name !== 'AbortError') setError(err) })
    return () => ctl.abort()
  }, [id])
  return html`<div class="live" aria-live="polite">
    <${Progress} percent=${p?.percent} label="Operation progress" />
    <p>${p ? html`<${Status} status=${p.state} /> ${p.total !== null ? `${p.finished} of ${p.total} targets` : ''}${p.failed ? `, ${p.failed} failed` : ''}${p.step ? ` — step ${p.step}` : ''}` : 'Connecting…'}</p>
    <${ErrorNote} error=${error} />
  </div>`
}

function OperationDetail({ id }) {
  const { data: op, error } = useLoad(() => api(`operations/${id}`), [id])
  if (error) return html`<${ErrorNote} error=${error} />`
  if (!op) return html`<p>Loading…</p>`
  return html`<div>
    <${Title}>${op.kind} ${op.slug ?? ''}</${Title}>
    <${LiveProgress} id=${id} initial=${op.progress} />
    <dl class="wide"><dt>Id</dt><dd><code>${op.id}</code></dd><dt>Started</dt><dd>${when(op.createdAt)} by ${op.startedBy}</dd>
      <dt>Finished</dt><dd>${when(op.finishedAt)}</dd>${op.error && html`<dt>Error</dt><dd>${op.error}</dd>`}</dl>
    ${op.targets.length > 0 && html`<h2>Targets</h2><table><thead><tr><th scope="col">Target</th><th scope="col">Tenant</th><th scope="col">State</th><th scope="col">Applied</th></tr></thead>
      <tbody>${op.targets.map((x) => html`<tr><th scope="row">${x.target}</th><td>${x.slug ?? '(pooled)'}</td><td><${Status} status=${x.state} /></td><td>${x.applied.join(', ')}</td></tr>`)}</tbody></table>`}
  </div>`
}

function Migrations() {
  const { data, error, reload } = useLoad(() => api('migrations/plan'), [])
  const [confirming, setConfirming] = useState(false)
  const [running, setRunning] = useState(null)
  return html`<div>
    <${Title}>Migrations</${Title}>
    <${ErrorNote} error=${error} />
    ${data && html`<p class="lead">${data.files.length} migration files; ${data.pending} of ${data.targets.length} targets have pending migrations.</p>
      <div class="actions"><button type="button" class="primary" disabled=${data.pending === 0 && !running} onClick=${() => setConfirming(true)}>Run migrations…</button>
        <button type="button" onClick=${reload}>Refresh plan</button></div>
      ${running && html`<h2>Run <a href=${`#/operations/${running}`}>${running.slice(0, 8)}</a></h2><${LiveProgress} id=${running} initial=${null} onEnd=${reload} />`}
      <table aria-label="Migration plan"><thead><tr><th scope="col">Target</th><th scope="col">Tier</th><th scope="col">Server</th><th scope="col">Tenant</th><th scope="col">Pending</th></tr></thead>
      <tbody>${data.targets.map((t) => html`<tr><th scope="row">${t.target}</th><td>${t.tier}</td><td>${t.server}</td><td>${t.tenant ?? '(pooled)'}</td><td>${t.pending.join(', ') || 'up to date'}</td></tr>`)}</tbody></table>`}
    ${confirming && html`<${Confirm} title="Run migrations?" confirmLabel="Run" onClose=${() => setConfirming(false)} onConfirm=${async () => {
      const r = await api('migrations/run', { method: 'POST', body: {} })
      if (r.operationId) setRunning(r.operationId)
      else reload()
    }}><p>${data.pending} targets will be brought to the latest migration, paced against the server's load.</p></${Confirm}>`}
  </div>`
}

function AuditTable({ entries }) {
  if (!entries || entries.length === 0) return html`<p class="hint">No audit entries.</p>`
  return html`<table aria-label="Audit entries"><thead><tr><th scope="col">#</th><th scope="col">When</th><th scope="col">Actor</th><th scope="col">Action</th><th scope="col">Tenant</th><th scope="col">Details</th></tr></thead>
    <tbody>${entries.map((e) => html`<tr><th scope="row">${e.seq}</th><td>${when(e.at)}</td><td>${e.actor}</td><td>${e.action}</td>
      <td>${e.slug ? html`<a href=${`#/tenants/${e.slug}`}>${e.slug}</a>` : '-'}</td><td><code>${JSON.stringify(e.details)}</code></td></tr>`)}</tbody></table>`
}

function Audit() {
  const [tenant, setTenant] = useState('')
  const { data, error } = useLoad(() => api(`audit?limit=100${tenant ? `&tenant=${encodeURIComponent(tenant)}` : ''}`), [tenant])
  const [verify, setVerify] = useState(null)
  return html`<div>
    <${Title}>Audit log</${Title}>
    <form class="filters" role="search" onSubmit=${(e) => { e.preventDefault(); setTenant(new FormData(e.target).get('tenant').trim()) }}>
      <label>Tenant <input name="tenant" placeholder="slug" /></label><button type="submit">Filter</button>
      <button type="button" onClick=${() => api('audit/verify').then(setVerify, setVerify)}>Verify chain</button>
    </form>
    ${verify && (verify instanceof Error ? html`<${ErrorNote} error=${verify} />`
      : html`<p role="status" class=${verify.ok ? 'ok' : 'error'}>${verify.ok ? `Intact: ${verify.entries} entries check out.` : `Tampered: ${verify.problems.map((p) => `#${p.seq} ${p.problem}`).join(', ')}`}</p>`)}
    <${ErrorNote} error=${error} />
    ${data && html`<${AuditTable} entries=${data.entries} />`}
  </div>`
}

// ---- shell -------------------------------------------------------------------------------------

const PAGES = [['overview', 'Overview'], ['tenants', 'Tenants'], ['plans', 'Plans'], ['flags', 'Flags'], ['operations', 'Operations'], ['migrations', 'Migrations'], ['audit', 'Audit log']]

function useHash() {
  const [hash, setHash] = useState(location.hash || '#/overview')
  useEffect(() => {
    const on = () => setHash(location.hash || '#/overview')
    addEventListener('hashchange', on)
    return () => removeEventListener('hashchange', on)
  }, [])
  return hash
}

function App() {
  const [signedIn, setSignedIn] = useState(Boolean(token()))
  const hash = useHash()
  useEffect(() => {
    const out = () => setSignedIn(false)
    addEventListener('tenantry:signed-out', out)
    return () => removeEventListener('tenantry:signed-out', out)
  }, [])
  if (!signedIn) return html`<${SignIn} onSignedIn=${() => setSignedIn(true)} />`
  const [path, search = ''] = hash.slice(2).split('?')
  const [section, id] = path.split('/')
  const query = new URLSearchParams(search)
  const page =
    section === 'tenants' && id ? html`<${TenantDetail} key=${id} slug=${decodeURIComponent(id)} />`
    : section === 'tenants' ? html`<${Tenants} query=${query} />`
    : section === 'operations' && id ? html`<${OperationDetail} key=${id} id=${id} />`
    : section === 'operations' ? html`<${Operations} />`
    : section === 'flags' ? html`<${Flags} />`
    : section === 'plans' ? html`<${Plans} />`
    : section === 'migrations' ? html`<${Migrations} />`
    : section === 'audit' ? html`<${Audit} />`
    : html`<${Overview} />`
  return html`<div class="shell">
    <a class="skip" href="#main">Skip to content</a>
    <header>
      <span class="brand">Tenantry</span>
      <nav aria-label="Sections"><ul>${PAGES.map(([key, label]) => html`<li><a href=${`#/${key}`} aria-current=${section === key || (!section && key === 'overview') ? 'page' : undefined}>${label}</a></li>`)}</ul></nav>
      <button type="button" class="link" onClick=${() => { sessionStorage.removeItem(TOKEN_KEY); setSignedIn(false) }}>Sign out</button>
    </header>
    <main id="main" key=${hash}>${page}</main>
  </div>`
}

render(html`<${App} />`, document.getElementById('root'))
document.documentElement.dataset.ready = 'true'
