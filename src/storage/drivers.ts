import { randomUUID } from 'node:crypto'
import { createReadStream, createWriteStream } from 'node:fs'
import { mkdir, readFile, readdir, rename, rm, stat, unlink, writeFile } from 'node:fs/promises'
import { dirname, join, sep } from 'node:path'
import type { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import type { S3Client, S3ClientConfig } from '@aws-sdk/client-s3'
import { loadS3, s3NotFound } from './s3-client.ts'

/** What the store knows of an object. `key` is the full path inside the store. */
export interface StoredObject {
  key: string
  size: number
  contentType: string | null
  lastModified: Date
}

/**
 * The port object storage writes through: whole paths (the tenant prefix included), no tenant
 * logic. `put` either stores the whole stream or nothing: when the stream fails (a quota, a client
 * that went away) the partial data is removed before it rejects.
 */
export interface StorageDriver {
  readonly kind: 'local' | 's3'
  put(path: string, body: Readable, contentType: string | null): Promise<void>
  get(path: string): Promise<{ body: Readable; info: StoredObject } | null>
  head(path: string): Promise<StoredObject | null>
  /** Objects under `prefix` in key order, after `after`, at most `limit`. */
  list(prefix: string, after: string | null, limit: number): Promise<StoredObject[]>
  delete(path: string): Promise<boolean>
  /** Remove everything under `prefix`; returns the number of objects removed. */
  deletePrefix(prefix: string): Promise<number>
  /** A URL that lets its holder GET or PUT (exactly `size` bytes) one path until it expires; null when the driver cannot sign (local). */
  presign(path: string, method: 'GET' | 'PUT', expiresInSeconds: number, put?: { size: number; contentType: string | null }): Promise<string | null>
  close(): Promise<void>
}

/**
 * Objects as files under a directory (the embedded default: `<data dir>/storage`). A put writes a
 * temporary file and renames it into place, so a reader never sees half an object and a failed
 * upload leaves nothing; the content type is kept in a sidecar under `meta/`.
 */
export class LocalStorageDriver implements StorageDriver {
  readonly kind = 'local' as const
  private dir?: string

  /** `root`: the directory, or a function that makes it on first use. */
  constructor(private readonly rootOrMake: string | (() => string)) {}

  private get root(): string {
    this.dir ??= typeof this.rootOrMake === 'string' ? this.rootOrMake : this.rootOrMake()
    return this.dir
  }

  private file(path: string): string {
    return join(this.root, 'objects', ...path.split('/'))
  }

  private meta(path: string): string {
    return join(this.root, 'meta', ...path.split('/')) + '.json'
  }

  async put(path: string, body: Readable, contentType: string | null): Promise<void> {
    const tmpDir = join(this.root, 'tmp')
    await mkdir(tmpDir, { recursive: true })
    const tmp = join(tmpDir, randomUUID())
    try {
      await pipeline(body, createWriteStream(tmp, { flags: 'wx' }))
      await mkdir(dirname(this.file(path)), { recursive: true })
      await mkdir(dirname(this.meta(path)), { recursive: true })
      await writeFile(this.meta(path), JSON.stringify({ contentType }))
      await rename(tmp, this.file(path))
    } catch (err) {
      await unlink(tmp).catch(() => undefined)
      throw err
    }
  }

  async get(path: string): Promise<{ body: Readable; info: StoredObject } | null> {
    const info = await this.head(path)
    if (!info) return null
    return { body: createReadStream(this.file(path)), info }
  }

  async head(path: string): Promise<StoredObject | null> {
    let s
    try {
      s = await stat(this.file(path))
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT' || (err as NodeJS.ErrnoException).code === 'ENOTDIR') return null
      throw err
    }
    if (!s.isFile()) return null
    let contentType: string | null = null
    try {
      contentType = (JSON.parse(await readFile(this.meta(path), 'utf8')) as { contentType: string | null }).contentType
    } catch {
      // A missing sidecar: no content type.
    }
    return { key: path, size: s.size, contentType, lastModified: s.mtime }
  }

  async list(prefix: string, after: string | null, limit: number): Promise<StoredObject[]> {
    // Walk the directory tree under the prefix's directory; keys compare as S3 does (by code unit
    // order of the UTF-8 strings is close enough for the local driver: sorted by JS string order).
    const slash = prefix.lastIndexOf('/')
    const baseDir = prefix.slice(0, slash + 1)
    const keys: string[] = []
    const walk = async (dir: string, keyPrefix: string): Promise<void> => {
      let entries
      try {
        entries = await readdir(dir, { withFileTypes: true })
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return
        throw err
      }
      for (const e of entries) {
        const key = keyPrefix + e.name
        if (e.isDirectory()) await walk(join(dir, e.name), key + '/')
        else if (e.isFile() && key.startsWith(prefix)) keys.push(key)
      }
    }
    await walk(join(this.root, 'objects', ...baseDir.split('/').filter(Boolean)), baseDir)
    keys.sort()
    const page = keys.filter((k) => after === null || k > after).slice(0, limit)
    const out: StoredObject[] = []
    for (const k of page) {
      const info = await this.head(k)
      if (info) out.push(info)
    }
    return out
  }

  async delete(path: string): Promise<boolean> {
    try {
      await unlink(this.file(path))
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false
      throw err
    }
    await unlink(this.meta(path)).catch(() => undefined)
    return true
  }

  async deletePrefix(prefix: string): Promise<number> {
    // Only whole directories are removed here (the tenant prefix `tenants/<id>/`).
    if (!prefix.endsWith('/')) throw new Error('deletePrefix needs a directory prefix')
    const objects = await this.list(prefix, null, Number.MAX_SAFE_INTEGER)
    const parts = prefix.split('/').filter(Boolean)
    await rm(join(this.root, 'objects', ...parts), { recursive: true, force: true })
    await rm(join(this.root, 'meta', ...parts), { recursive: true, force: true })
    return objects.length
  }

  async presign(): Promise<string | null> {
    return null
  }

  async close(): Promise<void> {}

  /** The directory of the files (for tests and backups). */
  get directory(): string {
    return this.root + sep
  }
}

/** Options of the S3 driver: the bucket and the S3 client's configuration (region, endpoint, credentials…). */
export interface S3DriverOptions {
  bucket: string
  client?: S3ClientConfig
}

/**
 * S3 and S3-compatible stores through `@aws-sdk/client-s3`. Uploads stream through
 * `@aws-sdk/lib-storage` (multipart beyond 5 MB); a failed stream aborts the upload, so no
 * object and no orphaned parts are left. Presigned URLs come from `@aws-sdk/s3-request-presigner`.
 */
export class S3StorageDriver implements StorageDriver {
  readonly kind = 's3' as const
  private readonly bucket: string
  private sdk?: Promise<Sdk>

  constructor(private readonly opts: S3DriverOptions) {
    this.bucket = opts.bucket
  }

  /**
   * The AWS SDK, loaded on first use: it costs about 0.25 s to import, which an app or a CLI
   * command that never touches storage should not pay.
   */
  private load(): Promise<Sdk> {
    this.sdk ??= (async () => {
      const [sdk, presigner] = await Promise.all([loadS3(this.opts.client), import('@aws-sdk/s3-request-presigner')])
      return { ...sdk, getSignedUrl: presigner.getSignedUrl }
    })()
    return this.sdk
  }

  async put(path: string, body: Readable, contentType: string | null): Promise<void> {
    const { Upload, client } = await this.load()
    const upload = new Upload({
      client,
      params: { Bucket: this.bucket, Key: path, Body: body, ...(contentType ? { ContentType: contentType } : {}) },
      queueSize: 1,
      leavePartsOnError: false,
    })
    // A failing body stream does not always reach the Upload's promise (it may wait forever for
    // the rest of the body): the stream's error aborts the upload and fails the put at once.
    // lib-storage sends nothing that completes an object before the body has ended (a single
    // PutObject is sent after the whole body was read; a multipart upload is completed after the
    // last part), so an aborted upload leaves no object and, aborted, no parts.
    const failed = new Promise<never>((_, reject) => {
      // Kept for the stream's life (it is used once): a late error must not go unhandled.
      body.on('error', (err) => {
        upload.abort().catch(() => undefined)
        reject(err)
      })
    })
    failed.catch(() => undefined)
    const done = upload.done()
    done.catch(() => undefined)
    await Promise.race([done, failed])
  }

  async get(path: string): Promise<{ body: Readable; info: StoredObject } | null> {
    const { s3, client } = await this.load()
    try {
      const r = await client.send(new s3.GetObjectCommand({ Bucket: this.bucket, Key: path }))
      return {
        body: r.Body as Readable,
        info: { key: path, size: r.ContentLength ?? 0, contentType: r.ContentType ?? null, lastModified: r.LastModified ?? new Date(0) },
      }
    } catch (err) {
      if (notFound(err)) return null
      throw err
    }
  }

  async head(path: string): Promise<StoredObject | null> {
    const { s3, client } = await this.load()
    try {
      const r = await client.send(new s3.HeadObjectCommand({ Bucket: this.bucket, Key: path }))
      return { key: path, size: r.ContentLength ?? 0, contentType: r.ContentType ?? null, lastModified: r.LastModified ?? new Date(0) }
    } catch (err) {
      if (notFound(err)) return null
      throw err
    }
  }

  async list(prefix: string, after: string | null, limit: number): Promise<StoredObject[]> {
    const { s3, client } = await this.load()
    const out: StoredObject[] = []
    let token: string | undefined
    do {
      const r = await client.send(new s3.ListObjectsV2Command({
        Bucket: this.bucket, Prefix: prefix, ContinuationToken: token,
        ...(token === undefined && after !== null ? { StartAfter: after } : {}),
        MaxKeys: Math.min(1000, limit - out.length),
      }))
      for (const o of r.Contents ?? []) {
        out.push({ key: o.Key!, size: o.Size ?? 0, contentType: null, lastModified: o.LastModified ?? new Date(0) })
      }
      token = r.IsTruncated ? r.NextContinuationToken : undefined
    } while (token && out.length < limit)
    return out
  }

  async delete(path: string): Promise<boolean> {
    const { s3, client } = await this.load()
    const existed = (await this.head(path)) !== null
    await client.send(new s3.DeleteObjectCommand({ Bucket: this.bucket, Key: path }))
    return existed
  }

  async deletePrefix(prefix: string): Promise<number> {
    const { s3, client } = await this.load()
    let removed = 0
    for (;;) {
      const page = await this.list(prefix, null, 1000)
      if (page.length === 0) return removed
      await client.send(new s3.DeleteObjectsCommand({ Bucket: this.bucket, Delete: { Objects: page.map((o) => ({ Key: o.key })), Quiet: true } }))
      removed += page.length
    }
  }

  async presign(path: string, method: 'GET' | 'PUT', expiresInSeconds: number, put?: { size: number; contentType: string | null }): Promise<string> {
    const { s3, client, getSignedUrl } = await this.load()
    const command = method === 'GET'
      ? new s3.GetObjectCommand({ Bucket: this.bucket, Key: path })
      : new s3.PutObjectCommand({ Bucket: this.bucket, Key: path, ContentLength: put!.size, ...(put!.contentType ? { ContentType: put!.contentType } : {}) })
    // content-length is signed: the holder can upload exactly the size the quota was checked for.
    return getSignedUrl(client, command, { expiresIn: expiresInSeconds, signableHeaders: new Set(method === 'PUT' ? ['content-length', 'content-type'] : []) })
  }

  async close(): Promise<void> {
    if (this.sdk) (await this.sdk).client.destroy()
  }
}

interface Sdk {
  s3: typeof import('@aws-sdk/client-s3')
  Upload: typeof import('@aws-sdk/lib-storage').Upload
  getSignedUrl: typeof import('@aws-sdk/s3-request-presigner').getSignedUrl
  client: S3Client
}

const notFound = s3NotFound
