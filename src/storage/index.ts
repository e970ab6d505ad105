export { TenantStorage, createStorage, validateObjectKey, parseStorageLimits, DEFAULT_STORAGE_LIMITS, type StorageOptions, type StorageLimits, type StorageLimitsInput, type ObjectInfo, type PutOptions } from './storage.ts'
export { LocalStorageDriver, S3StorageDriver, type StorageDriver, type StoredObject, type S3DriverOptions } from './drivers.ts'
