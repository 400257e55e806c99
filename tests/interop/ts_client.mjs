// The TypeScript Flowcraft's client protocol, driven from Node against our Python workers
// (tests/interop/test_ts_client.py). Run with cwd = benches/ts (where `npm install` put the
// pinned flowcraft, @flowcraft/bullmq-adapter, bullmq and ioredis) and this file on stdin
// (`node --input-type=module`), so its imports resolve there.
//
// Env: REDIS_URL, QUEUE, BLUEPRINT (JSON), RUNS (how many), TIMEOUT_MS.
// For each run, as a TypeScript producer does: write the initial context with the TypeScript
// RedisContext (`blueprintId`, `blueprintVersion`, `x`), then add one `executeNode` job per
// start node (analyzeBlueprint(...).startNodeIds) with BullMQ's Queue.add, job id
// `<runId>_<nodeId>`. Then wait for `workflow:status:<runId>` and read the run's state back
// through the TypeScript RedisContext. Prints one JSON line per run:
// {runId, x, status: <the status JSON>, context: <RedisContext.toJSON()>}.
import { randomUUID } from 'node:crypto'
import { Queue } from 'bullmq'
import Redis from 'ioredis'
import { RedisContext } from '@flowcraft/bullmq-adapter'
import { analyzeBlueprint } from 'flowcraft'

const redis = new Redis(process.env.REDIS_URL, { maxRetriesPerRequest: null })
const queue = new Queue(process.env.QUEUE, { connection: redis })
const blueprint = JSON.parse(process.env.BLUEPRINT)
const runs = Number(process.env.RUNS || '3')
const timeoutMs = Number(process.env.TIMEOUT_MS || '30000')
const starts = analyzeBlueprint(blueprint).startNodeIds

const started = []
for (let x = 0; x < runs; x++) {
  const runId = randomUUID()
  const context = new RedisContext(redis, runId)
  await context.set('blueprintId', blueprint.id)
  await context.set('blueprintVersion', blueprint.metadata?.version || null)
  await context.set('x', x)
  for (const nodeId of starts) {
    await queue.add('executeNode', { runId, blueprintId: blueprint.id, nodeId }, { jobId: `${runId}_${nodeId}` })
  }
  started.push({ runId, x })
}

const deadline = Date.now() + timeoutMs
for (const { runId, x } of started) {
  let status = null
  while (status === null && Date.now() < deadline) {
    status = await redis.get(`workflow:status:${runId}`)
    if (status === null) await new Promise((resolve) => setTimeout(resolve, 50))
  }
  const context = await new RedisContext(redis, runId).toJSON()
  console.log(JSON.stringify({ runId, x, status: status === null ? null : JSON.parse(status), context }))
}
await queue.close()
await redis.quit()
