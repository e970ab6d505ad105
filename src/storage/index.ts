export { TenantStorage, createStorage, validateObjectKey, parseStorageLimits, DEFAULT_STORAGE_LIMITS, type StorageOptions, type StorageLimits, type StorageLimitsInput, type ObjectInfo, type PutOptions, type SignedRequest, type SignedResponse } from './storage.ts'
export { LocalStorageDriver, S3StorageDriver, type StorageDriver, type StoredObject, type S3DriverOptions } from './drivers.ts'
export { loadS3, s3Access, s3Configured, S3_ENV, type S3Access, type S3Sdk } from './s3-client.ts'
export { SIGNED_URL_PATH, type SignedObject } from './signed-urls.ts'
