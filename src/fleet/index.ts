export { createFleet, SERVER_NAME_PATTERN, type AddServerOptions, type Fleet } from './servers.ts'
