import type { S3Client, S3ClientConfig } from '@aws-sdk/client-s3'

/** The AWS SDK's S3 module, the multipart `Upload` of `@aws-sdk/lib-storage`, and one client. */
export interface S3Sdk {
  s3: typeof import('@aws-sdk/client-s3')
  Upload: typeof import('@aws-sdk/lib-storage').Upload
  client: S3Client
}

/**
 * The one S3 client factory, shared by tenant object storage (the S3 driver) and backups to
 * `s3://` URLs. `config` is the S3 client's configuration (`storage.s3.client`,
 * `portability.s3`); what it leaves out the SDK reads from the environment as usual (`AWS_REGION`,
 * `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, `AWS_ENDPOINT_URL_S3`, `AWS_PROFILE`…). The SDK is
 * loaded on first use: importing it costs about 0.25 s that a command which never touches S3
 * should not pay.
 *
 * @example
 * ```ts
 * const { s3, client } = await loadS3({ region: 'eu-west-1' })
 * await client.send(new s3.HeadObjectCommand({ Bucket: 'backups', Key: 'acme.tar' }))
 * ```
 */
export async function loadS3(config: S3ClientConfig | undefined): Promise<S3Sdk> {
  const [s3, storage] = await Promise.all([import('@aws-sdk/client-s3'), import('@aws-sdk/lib-storage')])
  return { s3, Upload: storage.Upload, client: new s3.S3Client({ ...config }) }
}

/** The environment variables through which the SDK finds a region or an endpoint (see {@link s3Configured}). */
export const S3_ENV = ['AWS_REGION', 'AWS_DEFAULT_REGION', 'AWS_ENDPOINT_URL_S3', 'AWS_ENDPOINT_URL', 'AWS_PROFILE'] as const

/**
 * Whether an S3 client can be pointed somewhere: a configuration object with a region or an
 * endpoint, or one of {@link S3_ENV} set. Without either, the SDK would fail on the first request
 * ("Region is missing"); callers refuse earlier with a message naming what to set.
 */
export function s3Configured(config: S3ClientConfig | undefined, env: NodeJS.ProcessEnv = process.env): boolean {
  if (config && (config.region !== undefined || config.endpoint !== undefined)) return true
  return S3_ENV.some((name) => typeof env[name] === 'string' && env[name] !== '')
}

/** A 404 of S3 (`NotFound` of a HEAD, `NoSuchKey` of a GET). */
export function s3NotFound(err: unknown): boolean {
  const e = err as { name?: string; $metadata?: { httpStatusCode?: number } }
  return e?.name === 'NotFound' || e?.name === 'NoSuchKey' || e?.$metadata?.httpStatusCode === 404
}

/** A lazily opened S3 client of one configuration, as a part that only sometimes needs S3 holds it. */
export interface S3Access {
  /** See {@link s3Configured}. */
  readonly configured: boolean
  /** The SDK and the client, opened on first call. */
  sdk(): Promise<S3Sdk>
  close(): Promise<void>
}

/**
 * {@link loadS3} on first use, kept until {@link S3Access.close}.
 *
 * @example
 * ```ts
 * const access = s3Access(options.portability?.s3 ?? options.storage?.s3?.client)
 * if (access.configured) await (await access.sdk()).client.send(…)
 * ```
 */
export function s3Access(config: S3ClientConfig | undefined): S3Access {
  let opened: Promise<S3Sdk> | undefined
  return {
    configured: s3Configured(config),
    sdk: () => (opened ??= loadS3(config)),
    async close() {
      if (opened) (await opened).client.destroy()
      opened = undefined
    },
  }
}
