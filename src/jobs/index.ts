export { TenantJobs, createJobs, type JobsOptions, type TenantJob, type WorkOptions, type SendOptions, type JobSchedule, type JobsStats } from './jobs.ts'
export { PgBossQueue, type JobQueue, type QueuedJob, type OutgoingJob } from './queue.ts'
