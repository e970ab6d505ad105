import { TenantryError } from '../core/errors.ts'
import { printable } from '../core/validation.ts'
import { ASSERTION_HEADER } from '../context/propagation.ts'

/**
 * What to generate mesh policy for: one receiving service, the services allowed to call it, and
 * the paths that serve tenant data (those also require the tenant assertion header).
 *
 * @example
 * ```ts
 * const options: MeshPolicyOptions = { mesh: 'istio', namespace: 'shop', service: 'billing', callers: ['orders'], port: 3000, tenantPaths: ['/api/*'] }
 * ```
 */
export interface MeshPolicyOptions {
  mesh: 'istio' | 'linkerd'
  namespace: string
  /** The receiving service (workload label `app=<service>`, service account `<service>`). */
  service: string
  /** Services (service accounts in the same namespace) allowed to call it. */
  callers: string[]
  /** The service's port (Linkerd's Server needs it). Default 3000. */
  port?: number
  /** Paths that need the tenant assertion header. Default `['/*']`. */
  tenantPaths?: string[]
}

const DNS_LABEL = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/
const PATH_RE = /^\/[A-Za-z0-9._~/*-]*$/

/**
 * Kubernetes documents that make a service mesh require mutual TLS between the services and the
 * `x-tenant-assertion` header on tenant routes: Istio `PeerAuthentication` (STRICT) and
 * `AuthorizationPolicy`, or Linkerd `Server`, `MeshTLSAuthentication`, `HTTPRoute` and
 * `AuthorizationPolicy`. The mesh checks that the header is present and the caller is who it says;
 * the receiving service still verifies the assertion (`propagated()`). Written from the projects'
 * documented API versions; not validated against a running mesh.
 *
 * @example
 * ```ts
 * const docs = meshPolicies({ mesh: 'istio', namespace: 'shop', service: 'billing', callers: ['orders'] })
 * ```
 */
export function meshPolicies(o: MeshPolicyOptions): Record<string, unknown>[] {
  for (const [field, v] of [['namespace', o.namespace], ['service', o.service], ...o.callers.map((c) => ['caller', c])] as [string, string][]) {
    if (typeof v !== 'string' || !DNS_LABEL.test(v)) throw new TenantryError('VALIDATION_FAILED', `${field} '${printable(String(v))}' must be a Kubernetes name (lowercase DNS label).`, { details: { field } })
  }
  if (o.callers.length === 0) throw new TenantryError('VALIDATION_FAILED', 'Name at least one calling service (--caller).', { details: { field: 'caller' } })
  const port = o.port ?? 3000
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new TenantryError('VALIDATION_FAILED', 'port must be 1 to 65535.', { details: { field: 'port' } })
  const paths = o.tenantPaths ?? ['/*']
  for (const p of paths) if (!PATH_RE.test(p)) throw new TenantryError('VALIDATION_FAILED', `Path '${printable(p)}' must start with '/' (a trailing '*' matches a prefix).`, { details: { field: 'paths' } })
  const ns = o.namespace
  const name = `${o.service}-tenant`
  const labels = { 'app.kubernetes.io/managed-by': 'tenantry' }
  if (o.mesh === 'istio') {
    return [
      { apiVersion: 'security.istio.io/v1', kind: 'PeerAuthentication', metadata: { name: `${o.service}-mtls`, namespace: ns, labels }, spec: { selector: { matchLabels: { app: o.service } }, mtls: { mode: 'STRICT' } } },
      {
        apiVersion: 'security.istio.io/v1', kind: 'AuthorizationPolicy', metadata: { name, namespace: ns, labels },
        spec: {
          selector: { matchLabels: { app: o.service } },
          action: 'ALLOW',
          rules: [{
            from: [{ source: { principals: o.callers.map((c) => `cluster.local/ns/${ns}/sa/${c}`) } }],
            to: [{ operation: { paths } }],
            when: [{ key: `request.headers[${ASSERTION_HEADER}]`, values: ['*'] }],
          }],
        },
      },
    ]
  }
  // Linkerd: Gateway API path matches are prefixes or exact paths.
  const matches = paths.map((p) => ({
    path: p.endsWith('*') ? { type: 'PathPrefix', value: p.slice(0, -1).replace(/\/$/, '') || '/' } : { type: 'Exact', value: p },
    headers: [{ type: 'RegularExpression', name: ASSERTION_HEADER, value: '.+' }],
  }))
  return [
    { apiVersion: 'policy.linkerd.io/v1beta3', kind: 'Server', metadata: { name: o.service, namespace: ns, labels }, spec: { podSelector: { matchLabels: { app: o.service } }, port, proxyProtocol: 'HTTP/1' } },
    { apiVersion: 'policy.linkerd.io/v1alpha1', kind: 'MeshTLSAuthentication', metadata: { name: `${o.service}-callers`, namespace: ns, labels }, spec: { identities: o.callers.map((c) => `${c}.${ns}.serviceaccount.identity.linkerd.cluster.local`) } },
    { apiVersion: 'gateway.networking.k8s.io/v1', kind: 'HTTPRoute', metadata: { name, namespace: ns, labels }, spec: { parentRefs: [{ group: 'policy.linkerd.io', kind: 'Server', name: o.service }], rules: [{ matches }] } },
    {
      apiVersion: 'policy.linkerd.io/v1alpha1', kind: 'AuthorizationPolicy', metadata: { name, namespace: ns, labels },
      spec: { targetRef: { group: 'gateway.networking.k8s.io', kind: 'HTTPRoute', name }, requiredAuthenticationRefs: [{ group: 'policy.linkerd.io', kind: 'MeshTLSAuthentication', name: `${o.service}-callers` }] },
    },
  ]
}
