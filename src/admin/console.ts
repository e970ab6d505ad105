import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { FastifyInstance } from 'fastify'

const require = createRequire(import.meta.url)
// The same path from src/admin/ and from dist/admin/: the console's files ship in src/.
const CONSOLE_DIR = fileURLToPath(new URL('../../src/admin/console/', import.meta.url))
const beside = (pkgEntry: string, file: string) => join(dirname(require.resolve(pkgEntry)), file)

/** The console's files: its own, and its npm dependencies' ES modules (no CDN, no build step). */
function consoleFiles(): Map<string, { body: Buffer; type: string }> {
  const js = 'text/javascript; charset=utf-8'
  const files: [string, string, string][] = [
    ['app.js', join(CONSOLE_DIR, 'app.js'), js],
    ['style.css', join(CONSOLE_DIR, 'style.css'), 'text/css; charset=utf-8'],
    ['vendor/preact.mjs', beside('preact', 'preact.module.js'), js],
    ['vendor/hooks.mjs', beside('preact/hooks', 'hooks.module.js'), js],
    ['vendor/htm.mjs', beside('htm', 'htm.module.js'), js],
    ['vendor/uplot.js', beside('uplot', 'uPlot.iife.min.js'), js],
    ['vendor/uplot.css', beside('uplot', 'uPlot.min.css'), 'text/css; charset=utf-8'],
  ]
  return new Map(files.map(([name, path, type]) => [name, { body: readFileSync(path), type }]))
}

const IMPORT_MAP = JSON.stringify({ imports: { preact: './vendor/preact.mjs', 'preact/hooks': './vendor/hooks.mjs', htm: './vendor/htm.mjs' } })

function indexHtml(): { html: string; csp: string } {
  const importMap = `<script type="importmap">${IMPORT_MAP}</script>`
  const hash = createHash('sha256').update(IMPORT_MAP).digest('base64')
  const html = readFileSync(join(CONSOLE_DIR, 'index.html'), 'utf8').replace('<!--importmap-->', importMap)
  // Scripts and styles of this origin only (the import map by its hash); no framing (clickjacking);
  // API calls go to this origin with a bearer header, which a cross-site page cannot send (CSRF).
  const csp = [
    "default-src 'self'", `script-src 'self' 'sha256-${hash}'`, "style-src 'self' 'unsafe-inline'", "img-src 'self' data: https:",
    "connect-src 'self'", "frame-ancestors 'none'", "base-uri 'none'", "form-action 'none'", "object-src 'none'",
  ].join('; ')
  return { html, csp }
}

/** The web console at the plugin's root: one page, its script and style, and the vendored modules. */
export async function consoleRoutes(app: FastifyInstance): Promise<void> {
  const files = consoleFiles()
  const { html, csp } = indexHtml()
  const common = { 'x-content-type-options': 'nosniff', 'referrer-policy': 'no-referrer', 'x-frame-options': 'DENY' }
  const page = async function consolePage(request: import('fastify').FastifyRequest, reply: import('fastify').FastifyReply) {
    // The page's relative URLs (./app.js, api/…) need the prefix with its slash.
    const path = request.url.split('?')[0]
    if (!path.endsWith('/')) return reply.redirect(`${path}/`)
    return reply.headers({ ...common, 'content-security-policy': csp, 'cache-control': 'no-store' }).type('text/html; charset=utf-8').send(html)
  }
  app.get('/', { schema: { hide: true }, config: { adminRole: 'public' } }, page)
  for (const [name, file] of files) {
    app.get(`/${name}`, { schema: { hide: true }, config: { adminRole: 'public' } }, async function consoleFile(_request, reply) {
      return reply.headers({ ...common, 'cache-control': 'no-cache' }).type(file.type).send(file.body)
    })
  }
}
