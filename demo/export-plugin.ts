import type { TenantryPlugin } from '../src/adapters/plugins.ts'

interface ProjectRow { id: string; name: string; created_at: Date }

function csvField(value: string, delimiter: string): string {
  return /["\r\n]/.test(value) || value.includes(delimiter) ? `"${value.replace(/"/g, '""')}"` : value
}

/**
 * The demo's plugin (issue 12): a CSV export of the tenant's projects at
 * `GET /plugins/export/projects.csv`, for tenants whose configuration enables it (the demo turns it
 * on for the free plan). Its one setting, the delimiter, is validated with every configuration write:
 * `npx tenantry config set acme /plugins/export/settings/delimiter '";"'`.
 */
export const exportPlugin: TenantryPlugin = {
  name: 'export',
  version: '1.0.0',
  description: "CSV export of the tenant's projects",
  settingsSchema: {
    type: 'object',
    additionalProperties: false,
    properties: { delimiter: { enum: [',', ';', '\t'], default: ',' } },
  },
  fastify(scope) {
    scope.get('/projects.csv', async function exportProjects(req, reply) {
      const delimiter = String(req.plugin.settings.delimiter ?? ',')
      const { rows } = await req.db.query<ProjectRow>('SELECT id, name, created_at FROM projects ORDER BY id')
      const lines = [['id', 'name', 'created_at'].join(delimiter), ...rows.map((r) => [r.id, csvField(r.name, delimiter), new Date(r.created_at).toISOString()].join(delimiter))]
      return reply.type('text/csv; charset=utf-8').header('content-disposition', `attachment; filename="${req.tenant.slug}-projects.csv"`).send(`${lines.join('\n')}\n`)
    })
  },
}
