// The TypeScript Flowcraft's BullMQ worker as a benchmark peer (benches/benchlib.py starts it).
// Usage: node worker.mjs <redis url> <queue>. Line protocol on stdin/stdout, like
// benches/worker_main.py: prints "READY {}", answers "stats" with "STATS {}" and "stop" with
// "BYE {}" after closing the adapter. Runs the same blueprints and no-op nodes as
// benches/workloads.py; its worker concurrency is the adapter's fixed 5.
import { createInterface } from 'node:readline'
import { BullMQAdapter, RedisCoordinationStore } from '@flowcraft/bullmq-adapter'
import Redis from 'ioredis'

const [url, queueName] = process.argv.slice(2)

function chain(n) {
  const nodes = Array.from({ length: n }, (_, i) => ({ id: `n${i}`, uses: 'step' }))
  const edges = Array.from({ length: n - 1 }, (_, i) => ({ source: `n${i}`, target: `n${i + 1}` }))
  return { id: `chain${n}`, nodes, edges }
}
function fan(width) {
  const nodes = [{ id: 's', uses: 'step' }]
  const edges = []
  for (let i = 0; i < width; i++) {
    nodes.push({ id: `p${i}`, uses: 'step' })
    edges.push({ source: 's', target: `p${i}` }, { source: `p${i}`, target: 'j' })
  }
  nodes.push({ id: 'j', uses: 'sum', config: { joinStrategy: 'all' } })
  return { id: `fan${width}`, nodes, edges }
}
const blueprints = Object.fromEntries([chain(10), fan(10), fan(100)].map((bp) => [bp.id, bp]))
const registry = {
  step: async (ctx) => ({ output: (ctx.input ?? 0) + 1 }),
  sum: async (ctx) => {
    const v = ctx.input
    const total = v && typeof v === 'object' ? Object.values(v).reduce((a, b) => a + Number(b), 0) : Number(v ?? 0)
    return { output: total }
  },
}
const silent = { debug() {}, info() {}, warn() {}, error() {} }
const connection = new Redis(url, { maxRetriesPerRequest: null })
const adapter = new BullMQAdapter({
  connection,
  queueName,
  runtimeOptions: { blueprints, registry, logger: silent },
  coordinationStore: new RedisCoordinationStore(connection),
})
adapter.logger = silent
await adapter.start()
console.log('READY {}')
for await (const line of createInterface({ input: process.stdin })) {
  if (line.trim() === 'stats') console.log('STATS {}')
  if (line.trim() === 'stop') {
    await adapter.close()
    connection.disconnect()
    console.log('BYE {}')
    process.exit(0)
  }
}
