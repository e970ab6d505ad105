export { TenantCredentials } from './credentials.ts'
export type { ApiKeyInfo, ApiKeys, CertificateInfo, Certificates, CreateApiKeyInput } from './credentials.ts'
export { userFromTenantApiKey } from './api-key-user.ts'
export { auditForcedResidency, checkResidency, type ResidencyCheck, type ResidencyTarget } from './residency.ts'
