// The TypeScript Flowcraft's reconciler as a benchmark peer: ONE timed pass of
// `createBullMQReconciler` (@flowcraft/bullmq-adapter, pinned in package.json) over the runs that
// our Python side already put in Redis (benches/benchlib.py `ReconcilerBench.seed`).
// benches/tspeer.py `reconcile_pass()` runs it.
//
// Usage: node reconcile.mjs <redis url> <queue> [--threshold S] [--scan-count N]
//                           [--enqueue-healthy] [--no-prepare]
//   --threshold S       stalledThresholdSeconds (default -1: every key counts as stalled; the
//                       reconciler's test is `OBJECT IDLETIME > S`, in whole seconds, so 0 would
//                       skip every key touched in the last second, such as the ones --prepare
//                       writes just before the pass)
//   --scan-count N      scanCount (default 100, the package's default)
//   --enqueue-healthy   do not write the node locks (see "prepare"): the pass then re-enqueues the
//                       fired node of every healthy run, as the TS reconciler does to any run
//                       idle longer than the threshold (N duplicate jobs: re-seed afterwards)
//   --no-prepare        time the pass over the data exactly as seeded (it finds no key: below)
// Prints one JSON line: {"scanned", "stalled", "reconciled", "failed", "elapsed_s", "keys_per_s",
// "redis_cmds_per_key", "cpu_us_per_key", "prepared", "threshold_s", "enqueue_healthy"}.
//
// Prepare (not timed). Our runs are NOT visible to the TS reconciler as seeded: a run started
// with an empty context has no `workflow:state:<runId>` hash (Redis keeps no empty hash), and our
// run metadata (blueprintId, the fired/done markers) lives in `workflow:run:<runId>`, which the TS
// code never reads; with a state hash but no `blueprintId` field its `adapter.reconcile()` throws
// "blueprintId not found". So, for every run in our index `bull:<queue>:flowcraft:runs`, this
// writes what the TS Flowcraft's own client writes at a run's start: `blueprintId` and
// `blueprintVersion` (JSON, HSETNX) in `workflow:state:<runId>`. And, unless --enqueue-healthy,
// for every node our run hash records as fired and not done (the seeded start job, still
// queued), it sets the TS adapter's lock for that node (`flowcraft:nodelock:<runId>:<node>`, or
// `flowcraft:joinlock:` for an 'any' join), i.e. marks it as running: the TS reconciler cannot
// see BullMQ jobs, and that lock is the only thing that stops it from re-enqueuing a healthy
// run's node. Prepare thus changes the data (our context hashes gain two fields): run our pass
// first, or on a fresh seed. The blueprints come from our `bull:<queue>:flowcraft:blueprints`.
//
// What the timed pass does (the package's code, dist/index.mjs and flowcraft's runtime/adapter.mjs;
// one awaited round trip each, nothing pipelined): SCAN `workflow:state:*` COUNT 100, and per key:
//   1. OBJECT IDLETIME key; with idle > threshold the run is "stalled" (all of them here), then
//      adapter.reconcile(runId):
//   2. HGET key blueprintId   3. HEXISTS key blueprintVersion   4. HGETALL key
//      (the frontier: nodes without an `_outputs.<node>` field whose predecessors all have one;
//      for a seeded chain10 run, n0)
//   per frontier node:
//   5. GET flowcraft:fanin:poison:<runId>:<node>
//   6. SET flowcraft:nodelock:<runId>:<node> locked EX 120 NX: with the lock from prepare it
//      fails and nothing is enqueued (reconciled 0, the data unchanged); with --enqueue-healthy it
//      succeeds and 7. Queue.add("executeNode", ..., {jobId: `<runId>_<node>`}) (one BullMQ
//      addStandardJob script) adds a second job for the node (reconciled N).
// So 6 round trips per healthy run (7 with the enqueue), plus a SCAN per 100 keys.
// The adapter is constructed but never started (no worker consumes anything); its BullMQ Queue
// writes `bull:<queue>:meta` (version, opts.maxLenEvents) before the timing. Logs are silenced.
// Measured: 6.04 Redis commands per key (SCAN included); 16.04 with
// --enqueue-healthy (the BullMQ script's inner commands counted); 1.04 when nothing is stalled.
import { BullMQAdapter, RedisCoordinationStore, createBullMQReconciler } from '@flowcraft/bullmq-adapter'
import Redis from 'ioredis'

const args = process.argv.slice(2)
const positional = []
const opts = { threshold: -1, scanCount: 100, enqueueHealthy: false, prepare: true }
for (let i = 0; i < args.length; i++) {
  const a = args[i]
  if (a === '--threshold') opts.threshold = Number(args[++i])
  else if (a === '--scan-count') opts.scanCount = Number(args[++i])
  else if (a === '--enqueue-healthy') opts.enqueueHealthy = true
  else if (a === '--no-prepare') opts.prepare = false
  else if (a.startsWith('--')) throw new Error(`unknown option ${a}`)
  else positional.push(a)
}
if (positional.length !== 2 || !Number.isFinite(opts.threshold) || !(opts.scanCount >= 1)) {
  console.error('usage: node reconcile.mjs <redis url> <queue> [--threshold S] [--scan-count N] [--enqueue-healthy] [--no-prepare]')
  process.exit(2)
}
const [url, queueName] = positional
const silent = { debug() {}, info() {}, warn() {}, error() {} }
const redis = new Redis(url, { maxRetriesPerRequest: null })

const blueprints = {}
for (const [id, text] of Object.entries(await redis.hgetall(`bull:${queueName}:flowcraft:blueprints`))) {
  if (!id.includes('\x1f')) blueprints[id] = JSON.parse(text) // skip the `<id>\x1fversion` fields
}

async function prepare() {
  const runIds = await redis.zrange(`bull:${queueName}:flowcraft:runs`, 0, -1)
  for (let at = 0; at < runIds.length; at += 1000) {
    const batch = runIds.slice(at, at + 1000)
    const read = redis.pipeline()
    for (const id of batch) read.hgetall(`workflow:run:${id}`)
    const runs = await read.exec()
    const write = redis.pipeline()
    batch.forEach((id, k) => {
      const [err, run] = runs[k]
      if (err || !run || !run.blueprintId) throw new Error(`run ${id}: no workflow:run hash`)
      const state = `workflow:state:${id}`
      write.hsetnx(state, 'blueprintId', JSON.stringify(run.blueprintId))
      write.hsetnx(state, 'blueprintVersion', JSON.stringify(run.blueprintVersion || null))
      if (opts.enqueueHealthy) return
      for (const field of Object.keys(run)) {
        if (!field.startsWith('fired:') || `done:${field.slice(6)}` in run) continue
        const node = field.slice(field.indexOf('|') + 1)
        const def = blueprints[run.blueprintId]?.nodes.find((n) => n.id === node)
        const any = def?.config?.joinStrategy === 'any'
        write.set(`flowcraft:${any ? 'joinlock' : 'nodelock'}:${id}:${node}`, 'locked', 'EX', 3600)
      }
    })
    await write.exec()
  }
  return runIds.length
}

async function commandCount() {
  const info = await redis.info('commandstats')
  let calls = 0
  for (const m of info.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) if (m[1] !== 'info') calls += Number(m[2])
  return calls
}

const prepared = opts.prepare ? await prepare() : 0
const adapter = new BullMQAdapter({
  connection: redis,
  queueName,
  runtimeOptions: { blueprints, registry: {}, logger: silent },
  coordinationStore: new RedisCoordinationStore(redis),
})
adapter.logger = silent
await adapter.queue.waitUntilReady() // `queue` is private in the typings only
const reconciler = createBullMQReconciler({
  adapter,
  redis,
  stalledThresholdSeconds: opts.threshold,
  scanCount: opts.scanCount,
  logger: silent,
})

const cmds0 = await commandCount()
const cpu0 = process.cpuUsage()
const t0 = process.hrtime.bigint()
const stats = await reconciler.run()
const elapsed = Number(process.hrtime.bigint() - t0) / 1e9
const cpu = process.cpuUsage(cpu0)
const cmds = (await commandCount()) - cmds0 // INFO itself is not counted
const keys = Math.max(1, stats.scannedKeys)
console.log(JSON.stringify({
  scanned: stats.scannedKeys,
  stalled: stats.stalledRuns,
  reconciled: stats.reconciledRuns,
  failed: stats.failedRuns,
  elapsed_s: elapsed,
  keys_per_s: stats.scannedKeys / elapsed,
  redis_cmds_per_key: cmds / keys,
  cpu_us_per_key: (cpu.user + cpu.system) / keys,
  prepared,
  threshold_s: opts.threshold,
  enqueue_healthy: opts.enqueueHealthy,
}))
await adapter.close()
redis.disconnect()
