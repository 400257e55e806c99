// The TypeScript Flowcraft's in-memory FlowRuntime on the benchmark shapes (benches/memory.py).
// Usage: node memory.mjs < spec.json   ({"blueprints": [...], "runs": {"chain10": N, ...}, "warmup": N})
// Prints one JSON line: {"version", "results": {shape: {runs, steps, seconds, status, value}}}.
import { readFileSync } from 'node:fs'
import { FlowRuntime } from 'flowcraft'

const { version } = JSON.parse(readFileSync(new URL('./node_modules/flowcraft/package.json', import.meta.url)))
const spec = JSON.parse(readFileSync(0, 'utf8'))
// The same no-op work as benches/workloads.py: each step returns (input or 0) + 1; a join sums.
const registry = {
  step: async (ctx) => ({ output: (ctx.input ?? 0) + 1 }),
  sum: async (ctx) => {
    const v = ctx.input
    const total = v && typeof v === 'object' ? Object.values(v).reduce((a, b) => a + Number(b), 0) : Number(v ?? 0)
    return { output: total }
  },
}
const runtime = new FlowRuntime({ registry })
const results = {}
for (const bp of spec.blueprints) {
  const runs = spec.runs[bp.id]
  const last = bp.nodes[bp.nodes.length - 1].id
  for (let i = 0; i < Math.min(spec.warmup, runs); i++) await runtime.run(bp, {})
  const t0 = process.hrtime.bigint()
  let result
  for (let i = 0; i < runs; i++) result = await runtime.run(bp, {})
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9
  results[bp.id] = { runs, steps: runs * bp.nodes.length, seconds, status: result.status, value: result.context[last] }
}
console.log(JSON.stringify({ version, results }))
