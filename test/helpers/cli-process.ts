import { spawn, type ChildProcess } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { expect } from 'vitest'

// The real `tenantry` CLI as a subprocess, for the kill -9 tests of durable operations.

export const REPO = fileURLToPath(new URL('../..', import.meta.url))

export interface Run { code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }
export const show = (r: Run) => `exit ${r.code}${r.signal ? ` (${r.signal})` : ''}\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`

/** The environment of a subprocess: ours without Tenantry/PostgreSQL settings, plus `extra`. */
export function envWith(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {}
  for (const [k, v] of Object.entries(process.env)) if (!/^(TENANTRY_|DATABASE_URL$|PG[A-Z]+$|DEBUG$)/.test(k)) env[k] = v
  return { ...env, ...extra }
}

/** Every child still running (afterAll kills them). */
export const children = new Set<ChildProcess>()

/** A running `node bin/tenantry.js ...args`. */
export class CliProcess {
  readonly child: ChildProcess
  stdout = ''
  stderr = ''
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>

  constructor(args: string[], env: Record<string, string>) {
    this.child = spawn(process.execPath, ['bin/tenantry.js', ...args], { cwd: REPO, env: envWith(env), stdio: ['ignore', 'pipe', 'pipe'] })
    children.add(this.child)
    this.child.stdout!.setEncoding('utf8').on('data', (c: string) => (this.stdout += c))
    this.child.stderr!.setEncoding('utf8').on('data', (c: string) => (this.stderr += c))
    this.exited = new Promise((resolve, reject) => {
      this.child.on('error', reject)
      this.child.on('close', (code, signal) => {
        children.delete(this.child)
        resolve({ code, signal })
      })
    })
  }

  get pid(): number {
    return this.child.pid!
  }

  /** Resolves once stderr matches `re`; fails if the process ends first or `timeoutMs` passes. */
  async waitForStderr(re: RegExp, timeoutMs = 90_000): Promise<void> {
    const deadline = Date.now() + timeoutMs
    while (!re.test(this.stderr)) {
      if (this.child.exitCode !== null || this.child.signalCode !== null) throw new Error(`process ended before ${re}:\n${this.stdout}\n${this.stderr}`)
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${re}:\n${this.stdout}\n${this.stderr}`)
      await sleep(20)
    }
  }

  /** kill -9, and wait until the process is gone. */
  async kill9(): Promise<void> {
    expect(process.kill(this.pid, 'SIGKILL')).toBe(true)
    expect(await this.exited).toEqual({ code: null, signal: 'SIGKILL' })
  }

  async result(timeoutMs = 150_000): Promise<Run> {
    const timer = setTimeout(() => this.child.kill('SIGKILL'), timeoutMs)
    try {
      const { code, signal } = await this.exited
      return { code, signal, stdout: this.stdout, stderr: this.stderr }
    } finally {
      clearTimeout(timer)
    }
  }
}

export function cli(args: string[], env: Record<string, string>): Promise<Run> {
  return new CliProcess(args, env).result()
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms))
}
