import type { Branding } from '../src/index.ts'

const ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }
const esc = (s: string) => s.replace(/[&<>"']/g, (c) => ESCAPES[c])

/**
 * The demo's white-label home page: the tenant's name, colours, logo and support link from its
 * configuration's `branding` (validated by Tenantry: colours are #rgb/#rrggbb, URLs http(s) or a
 * path). Everything is escaped all the same.
 */
export function brandedPage(tenant: { slug: string; name: string }, branding: Branding, extra: { projects: number; newEditor: boolean }): string {
  const name = esc(branding.displayName ?? tenant.name)
  const primary = esc(branding.primaryColor ?? '#334155')
  const accent = esc(branding.accentColor ?? '#e2e8f0')
  const background = esc(branding.backgroundColor ?? '#ffffff')
  const text = esc(branding.textColor ?? '#0f172a')
  const logo = branding.logoUrl ? `<img class="logo" src="${esc(branding.logoUrl)}" alt="">` : `<span class="logo mark">${esc((branding.displayName ?? tenant.name).slice(0, 1).toUpperCase())}</span>`
  const favicon = branding.faviconUrl ? `<link rel="icon" href="${esc(branding.faviconUrl)}">` : ''
  const support = branding.supportUrl ? `<a class="support" href="${esc(branding.supportUrl)}">Support</a>` : ''
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${name}</title>${favicon}
<style>
  body { margin: 0; font: 16px/1.5 system-ui, sans-serif; background: ${background}; color: ${text}; }
  header { background: ${primary}; color: #fff; padding: 24px 32px; display: flex; align-items: center; gap: 16px; }
  .logo { width: 48px; height: 48px; border-radius: 12px; }
  .mark { display: inline-flex; align-items: center; justify-content: center; background: ${accent}; color: ${primary}; font-weight: 700; font-size: 28px; }
  h1 { margin: 0; font-size: 28px; }
  main { padding: 32px; }
  .card { border: 2px solid ${accent}; border-radius: 12px; padding: 16px 24px; max-width: 480px; }
  .support { color: ${primary}; }
</style></head>
<body data-tenant="${esc(tenant.slug)}">
<header>${logo}<h1>${name}</h1></header>
<main><div class="card"><p>Welcome to ${name}.</p><p>${extra.projects} project${extra.projects === 1 ? '' : 's'} · new editor ${extra.newEditor ? 'on' : 'off'}</p>${support}</div></main>
</body></html>
`
}
