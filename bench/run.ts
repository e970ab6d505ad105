/**
 * Benchmark dispatcher: `npm run bench -- <name> [--flags]` runs `bench/<name>.ts`.
 *
 * Adding a benchmark is one file, `bench/<name>.ts`, in either form:
 * - `export default async function (args: string[]): Promise<number | void>` — called with the
 *   flags after the name; a number is the exit code; or
 * - a script that runs on import and reads its flags from `process.argv.slice(2)` (the dispatcher
 *   sets `process.argv` to `[node, bench/<name>.ts, ...flags]` first).
 * The first line of the file's leading comment is its description in the list below.
 */
import { readFileSync, readdirSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'

const here = dirname(fileURLToPath(import.meta.url))

function available(): { name: string; description: string }[] {
  return readdirSync(here, { withFileTypes: true })
    .filter((e) => e.isFile() && e.name.endsWith('.ts') && !e.name.endsWith('.d.ts') && e.name !== 'run.ts')
    .map((e) => {
      const text = readFileSync(join(here, e.name), 'utf8')
      const lead = /^\s*(?:\/\*\*?\s*\n?\s*\*?\s*(.+)|\/\/\s*(.+))/.exec(text)
      return { name: e.name.slice(0, -3), description: (lead?.[1] ?? lead?.[2] ?? '').replace(/\*\/\s*$/, '').trim() }
    })
    .sort((a, b) => a.name.localeCompare(b.name))
}

function listing(): string {
  const list = available()
  const width = Math.max(0, ...list.map((b) => b.name.length))
  return [
    'usage: npm run bench -- <name> [--flags]      (tsx bench/run.ts <name> [--flags])',
    '',
    'benchmarks:',
    ...(list.length ? list.map((b) => `  ${b.name.padEnd(width)}  ${b.description}`) : ['  (none)']),
  ].join('\n')
}

/** The exit code, or undefined when the benchmark ran on import and may still have work pending. */
async function main(): Promise<number | undefined> {
  const [name, ...args] = process.argv.slice(2)
  if (name === '--help' || name === '-h' || name === 'help') {
    console.log(listing())
    return 0
  }
  if (!name || name.startsWith('-')) {
    console.error(listing())
    return 2
  }
  if (!available().some((b) => b.name === name)) {
    console.error(`unknown benchmark '${name}'\n\n${listing()}`)
    return 2
  }
  const file = join(here, `${name}.ts`)
  process.argv = [process.argv[0], file, ...args]
  const mod = (await import(pathToFileURL(file).href)) as { default?: unknown; run?: unknown }
  const fn = typeof mod.default === 'function' ? mod.default : typeof mod.run === 'function' ? mod.run : undefined
  if (!fn) return undefined // ran on import: let it finish and set process.exitCode itself
  const code = await (fn as (args: string[]) => Promise<number | void> | number | void)(args)
  return typeof code === 'number' ? code : 0
}

main().then(
  (code) => { if (code !== undefined) process.exit(code) },
  (err) => {
    console.error(err instanceof Error ? (err.stack ?? err.message) : err)
    process.exit(1)
  },
)
