import { createReadStream, createWriteStream } from 'node:fs'
import { Transform, type Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { TenantryError } from '../core/errors.ts'
import { printable } from '../core/validation.ts'
import { faultPoint } from '../lifecycle/faults.ts'
import { s3NotFound as notFound, type S3Sdk } from '../storage/s3-client.ts'

// Archives in S3 (issue 13): a backup target or restore source written `s3://bucket/key`. The
// archive itself is always built in a local file first (it is packed from spool files, and a
// restore reads it twice); these functions move that file to and from the bucket.

/** Whether a backup target or restore source names S3. */
export function isS3Url(value: unknown): value is string {
  return typeof value === 'string' && value.startsWith('s3://')
}

/** An `s3://` URL taken apart: `key` ending in `/` (or empty) is a prefix to write `<slug>-<time>.tar` under. */
export interface S3Location {
  bucket: string
  key: string
}

const BUCKET = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/

/**
 * Parse and check `s3://bucket/key`: a DNS-style bucket name (3–63 of a-z 0-9 . -), a key of at
 * most 1024 UTF-8 bytes without control characters or `.`/`..` segments. A bad URL is
 * `VALIDATION_FAILED`.
 *
 * @example
 * ```ts
 * parseS3Url('s3://backups/eu/') // { bucket: 'backups', key: 'eu/' }
 * ```
 */
export function parseS3Url(url: string): S3Location {
  const rest = url.slice('s3://'.length)
  const slash = rest.indexOf('/')
  const bucket = slash < 0 ? rest : rest.slice(0, slash)
  const key = slash < 0 ? '' : rest.slice(slash + 1)
  const bad = (why: string) => new TenantryError('VALIDATION_FAILED', `'${printable(url)}' is not a usable S3 location: ${why}. Write s3://<bucket>/<prefix>/ or s3://<bucket>/<key>.tar.`)
  if (!BUCKET.test(bucket) || bucket.includes('..')) throw bad(`'${printable(bucket)}' is not a bucket name (3–63 characters of a-z, 0-9, '.', '-')`)
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(key)) throw bad('the key has control characters')
  if (Buffer.byteLength(key) > 1024) throw bad('the key is longer than 1024 bytes')
  if (key.startsWith('/') || key.split('/').some((s, i, all) => s === '.' || s === '..' || (s === '' && i < all.length - 1))) throw bad("the key has an empty, '.' or '..' segment")
  return { bucket, key }
}

export function s3Url(loc: S3Location): string {
  return `s3://${loc.bucket}/${loc.key}`
}

/** The user metadata key naming the backup operation that wrote an archive object. */
export const OPERATION_META = 'tenantry-operation'

/** The object under the key (HeadObject): null when there is none, else the operation that wrote it (null for another writer). */
export async function s3ObjectHead(sdk: S3Sdk, loc: S3Location): Promise<{ operation: string | null } | null> {
  try {
    const r = await sdk.client.send(new sdk.s3.HeadObjectCommand({ Bucket: loc.bucket, Key: loc.key }))
    return { operation: r.Metadata?.[OPERATION_META] ?? null }
  } catch (err) {
    if (notFound(err)) return null
    throw unavailable('Checking', loc, err)
  }
}

/** Whether an object exists under the key (HeadObject). */
export async function s3ObjectExists(sdk: S3Sdk, loc: S3Location): Promise<boolean> {
  return (await s3ObjectHead(sdk, loc)) !== null
}

/** Remove the object under the key (no error when there is none). */
export async function s3DeleteObject(sdk: S3Sdk, loc: S3Location): Promise<void> {
  try {
    await sdk.client.send(new sdk.s3.DeleteObjectCommand({ Bucket: loc.bucket, Key: loc.key }))
  } catch (err) {
    throw unavailable('Deleting', loc, err)
  }
}

/** Abort a multipart upload a killed backup left: its parts are discarded, no object is made. */
export async function s3AbortUpload(sdk: S3Sdk, loc: S3Location, uploadId: string): Promise<void> {
  try {
    await sdk.client.send(new sdk.s3.AbortMultipartUploadCommand({ Bucket: loc.bucket, Key: loc.key, UploadId: uploadId }))
  } catch (err) {
    if (notFound(err) || (err as { name?: string }).name === 'NoSuchUpload') return
    throw unavailable('Aborting the multipart upload of', loc, err)
  }
}

/** The part size of archive uploads: S3's minimum, so that a part in flight is small. */
export const ARCHIVE_PART_SIZE = 5 * 1024 * 1024

/**
 * Upload a finished local archive with `@aws-sdk/lib-storage` (a single PutObject up to 5 MB,
 * multipart beyond). S3 makes the object visible only when the upload completes, so a failed or
 * killed upload never leaves an object under the key; a failed one is aborted here (its parts
 * removed), a killed one by the rollback, from the upload id `onUploadId` recorded. The body is
 * held after the first part until that id is recorded (and at the fault point `backup:upload`).
 */
export async function s3UploadArchive(sdk: S3Sdk, loc: S3Location, file: string, operationId: string, onUploadId: (uploadId: string) => Promise<void>): Promise<void> {
  let release!: () => void
  const recorded = new Promise<void>((r) => (release = r))
  let sent = 0
  let held = false
  const gate = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      if (sent <= ARCHIVE_PART_SIZE || held) {
        sent += chunk.length
        cb(null, chunk)
        return
      }
      held = true
      recorded.then(() => faultPoint('backup:upload')).then(() => {
        sent += chunk.length
        cb(null, chunk)
      }, cb)
    },
  })
  const source = createReadStream(file)
  const body: Readable = source.pipe(gate)
  const upload = new sdk.Upload({
    client: sdk.client,
    // The writing operation goes along as metadata (a rollback deletes only its own object), and
    // If-None-Match: * makes S3 refuse (412) to complete over an object written since the
    // HeadObject of the backup's start (lib-storage sends it with PutObject and CompleteMultipartUpload).
    params: { Bucket: loc.bucket, Key: loc.key, Body: body, ContentType: 'application/x-tar', Metadata: { [OPERATION_META]: operationId }, IfNoneMatch: '*' },
    queueSize: 1,
    partSize: ARCHIVE_PART_SIZE,
    leavePartsOnError: false,
  })
  let noted = false
  upload.on('httpUploadProgress', () => {
    if (noted || !upload.uploadId) return
    noted = true
    onUploadId(upload.uploadId).then(release, (err) => gate.destroy(err as Error))
  })
  // As in the storage driver: a failing body does not always reach the upload's promise.
  const failed = new Promise<never>((_, reject) => {
    const fail = (err: Error) => {
      upload.abort().catch(() => undefined)
      reject(err)
    }
    gate.on('error', fail)
  })
  failed.catch(() => undefined)
  const done = upload.done()
  done.catch(() => undefined)
  try {
    await Promise.race([done, failed])
  } catch (err) {
    // A body held at the gate (the upload failed before its first part completed) is let go.
    source.destroy()
    gate.destroy()
    if (err instanceof TenantryError) throw err
    const e = err as { name?: string; $metadata?: { httpStatusCode?: number } }
    if (e?.name === 'PreconditionFailed' || e?.$metadata?.httpStatusCode === 412) {
      throw new TenantryError('CONFLICT', `'${printable(s3Url(loc))}' was written by someone else while this backup ran; choose another key or a prefix ending in '/'.`, { cause: err })
    }
    throw unavailable('Uploading the archive to', loc, err)
  }
}

/** Download an archive object into a new local file; a missing object is `NOT_FOUND`, as a missing archive file is. */
export async function s3DownloadArchive(sdk: S3Sdk, loc: S3Location, file: string): Promise<void> {
  let body: Readable
  try {
    const r = await sdk.client.send(new sdk.s3.GetObjectCommand({ Bucket: loc.bucket, Key: loc.key }))
    body = r.Body as Readable
  } catch (err) {
    if (notFound(err)) throw new TenantryError('NOT_FOUND', `No archive object at '${printable(s3Url(loc))}'.`, { cause: err })
    throw unavailable('Downloading', loc, err)
  }
  try {
    await pipeline(body, createWriteStream(file, { flags: 'wx' }))
  } catch (err) {
    throw unavailable('Downloading', loc, err)
  }
}

function unavailable(what: string, loc: S3Location, err: unknown): TenantryError {
  const e = err as { name?: string; message?: string }
  return new TenantryError('STORAGE_UNAVAILABLE', `${what} '${printable(s3Url(loc))}' failed: ${e?.name ?? 'Error'}: ${printable(String(e?.message ?? err)).replace(/\.$/, '')}. Check the bucket, the credentials and the S3 endpoint.`, { cause: err })
}
