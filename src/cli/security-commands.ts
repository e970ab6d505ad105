import { readFileSync } from 'node:fs'
import { Option, type Command } from 'commander'
import { stringify } from 'yaml'
import { meshPolicies } from '../security/mesh.ts'
import { TenantryError } from '../core/errors.ts'
import type { CliKit } from './admin-commands.ts'
import { table } from './format.ts'
import type { ConnectionFlags } from './open.ts'

const when = (d: Date | null) => d?.toISOString() ?? '-'

function readPem(file: string): string {
  try {
    return readFileSync(file, 'utf8')
  } catch (err) {
    throw new TenantryError('VALIDATION_FAILED', `Cannot read certificate file '${file}': ${(err as Error).message}.`, { cause: err })
  }
}

/** `tenantry keys create|list|revoke <slug>` and `tenantry certs add|list|revoke <slug>` (docs/security.md). */
export function registerSecurityCommands(program: Command, kit: CliKit): void {
  const keys = program.command('keys').description("a tenant's API keys (stored hashed; a key is shown once, when created)")

  kit.withConnection(
    keys
      .command('create <slug> <name>')
      .description('create an API key for the tenant and print it (once)')
      .option('--scope <scope...>', "scopes the key grants ('projects:read', '*' for all)")
      .option('--expires <time>', 'when the key stops working (ISO 8601)', kit.isoTime('--expires'))
      .option('--json', 'print JSON'),
  ).action(async (slug: string, name: string, opts: ConnectionFlags & { scope?: string[]; expires?: Date; json?: boolean }) => {
    await kit.withTenantry(opts, async (t) => {
      const { key, info } = await t.apiKeys.create(slug, { name, scopes: opts.scope ?? [], expiresAt: opts.expires ?? null }, { actor: kit.startedBy() })
      kit.print(opts.json, { key, ...info }, () => `${key}\n\nAPI key '${info.name}' of '${slug}' (id ${info.id}). It is shown only now: keep it in a secret store. Revoke it with 'tenantry keys revoke ${slug} ${info.name}'.`)
    })
  })

  kit.withConnection(keys.command('list <slug>').description("the tenant's API keys (never the keys themselves)").option('--json', 'print JSON')).action(
    async (slug: string, opts: ConnectionFlags & { json?: boolean }) => {
      await kit.withTenantry(opts, async (t) => {
        const list = await t.apiKeys.list(slug)
        kit.print(opts.json, list, () => list.length === 0 ? `Tenant '${slug}' has no API keys.` : table(
          ['ID', 'NAME', 'SCOPES', 'EXPIRES', 'CREATED', 'BY', 'LAST USED', 'REVOKED'],
          list.map((k) => [k.id, k.name, k.scopes.join(',') || '-', when(k.expiresAt), k.createdAt.toISOString(), k.createdBy, when(k.lastUsedAt), when(k.revokedAt)]),
        ))
      })
    },
  )

  kit.withConnection(keys.command('revoke <slug> <key>').description('revoke an API key (by name or id); every process refuses it within a second').option('--json', 'print JSON')).action(
    async (slug: string, key: string, opts: ConnectionFlags & { json?: boolean }) => {
      await kit.withTenantry(opts, async (t) => {
        const info = await t.apiKeys.revoke(slug, key, { actor: kit.startedBy() })
        kit.print(opts.json, info, () => `Revoked API key '${info.name}' (${info.id}) of '${slug}'.`)
      })
    },
  )

  const certs = program.command('certs').description('client certificates bound to a tenant (mutual TLS): by SHA-256 fingerprint, or through a tenant CA and a SAN/subject pattern')

  kit.withConnection(
    certs
      .command('add <slug> [file]')
      .description('bind the client certificate in a PEM file to the tenant, or (--ca) a tenant CA whose client certificates matching --san/--subject bind to it')
      .option('--ca <file>', 'a CA certificate (PEM): every client certificate it issues that matches the pattern binds to the tenant')
      .option('--san <pattern>', "with --ca: a SAN the certificate must have ('*.acme.example.com', 'URI:spiffe://acme.example/**')")
      .option('--subject <pattern>', "with --ca: subject attributes the certificate must have ('CN=*.billing, O=Acme')")
      .option('--name <name>', "a name for it (default: from the certificate's CN)")
      .option('--json', 'print JSON'),
  ).action(async (slug: string, file: string | undefined, opts: ConnectionFlags & { ca?: string; san?: string; subject?: string; name?: string; json?: boolean }) => {
    if ((file === undefined) === (opts.ca === undefined)) throw new TenantryError('VALIDATION_FAILED', 'Give a client certificate file, or a CA with --ca <file> (not both).')
    const pem = readPem(file ?? opts.ca!)
    const input = opts.ca === undefined
      ? { pem, sanPattern: opts.san, subjectPattern: opts.subject }
      : { ca: pem, sanPattern: opts.san, subjectPattern: opts.subject }
    await kit.withTenantry(opts, async (t) => {
      const info = await t.certificates.add(slug, { ...input, ...(opts.name ? { name: opts.name } : {}) }, { actor: kit.startedBy() })
      const pattern = [info.sanPattern && `SAN ${info.sanPattern}`, info.subjectPattern && `subject ${info.subjectPattern}`].filter(Boolean).join(' and ') || 'any SAN or subject'
      kit.print(opts.json, info, () => info.kind === 'ca'
        ? `Bound CA '${info.name}' (${info.subject}, sha256 ${info.fingerprint}) to '${slug}': client certificates it issues with ${pattern} resolve to '${slug}'. Binding id ${info.id}; valid until ${info.notAfter.toISOString()}.`
        : `Bound certificate '${info.name}' (${info.subject}, sha256 ${info.fingerprint}) to '${slug}'; valid until ${info.notAfter.toISOString()}.`)
    })
  })

  kit.withConnection(certs.command('list <slug>').description("the tenant's client certificates").option('--json', 'print JSON')).action(
    async (slug: string, opts: ConnectionFlags & { json?: boolean }) => {
      await kit.withTenantry(opts, async (t) => {
        const list = await t.certificates.list(slug)
        kit.print(opts.json, list, () => list.length === 0 ? `Tenant '${slug}' has no client certificates.` : table(
          ['NAME', 'KIND', 'FINGERPRINT (SHA-256)', 'SUBJECT', 'PATTERN', 'NOT AFTER', 'CREATED', 'BY', 'REVOKED'],
          list.map((c) => [c.name, c.kind, c.fingerprint, c.subject, [c.sanPattern && `san ${c.sanPattern}`, c.subjectPattern && `subject ${c.subjectPattern}`].filter(Boolean).join('; ') || '-',
            c.notAfter.toISOString(), c.createdAt.toISOString(), c.createdBy, when(c.revokedAt)]),
        ))
      })
    },
  )

  kit.withConnection(certs.command('revoke <slug> <cert>').description('revoke a client certificate or CA binding (by fingerprint, id or name); every process refuses it within a second').option('--json', 'print JSON')).action(
    async (slug: string, cert: string, opts: ConnectionFlags & { json?: boolean }) => {
      await kit.withTenantry(opts, async (t) => {
        const info = await t.certificates.revoke(slug, cert, { actor: kit.startedBy() })
        kit.print(opts.json, info, () => `Revoked certificate '${info.name}' (${info.fingerprint}) of '${slug}'.`)
      })
    },
  )

  program
    .command('mesh')
    .description('service-mesh policy for tenant propagation')
    .command('export')
    .description('print Istio or Linkerd policy YAML: mTLS between the services and the x-tenant-assertion header on tenant routes (untested on a real mesh)')
    .addOption(new Option('--istio', 'Istio PeerAuthentication + AuthorizationPolicy').conflicts('linkerd'))
    .addOption(new Option('--linkerd', 'Linkerd Server, MeshTLSAuthentication, HTTPRoute, AuthorizationPolicy'))
    .requiredOption('--namespace <ns>', 'Kubernetes namespace of the services')
    .requiredOption('--service <name>', 'the receiving service (label app=<name>)')
    .requiredOption('--caller <name...>', 'services (service accounts) allowed to call it')
    .option('--port <n>', 'the service port (Linkerd)', kit.intRange('--port', 1, 65535), 3000)
    .option('--paths <path...>', "tenant routes that need the assertion header ('/api/*')", ['/*'])
    .action(function meshExport(this: Command, opts: { istio?: boolean; linkerd?: boolean; namespace: string; service: string; caller: string[]; port: number; paths: string[] }) {
      if (!opts.istio && !opts.linkerd) this.error('error: choose --istio or --linkerd', { exitCode: 2, code: 'commander.missingMandatoryOptionValue' })
      const docs = meshPolicies({ mesh: opts.istio ? 'istio' : 'linkerd', namespace: opts.namespace, service: opts.service, callers: opts.caller, port: opts.port, tenantPaths: opts.paths })
      process.stdout.write(docs.map((d) => stringify(d)).join('---\n'))
    })
}
