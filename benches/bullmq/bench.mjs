// No-op jobs per second through BullMQ, the way benches/benches/queue.rs measures HiveSync:
// `producers` loops (default one) add `jobs` jobs between them, each one at a time, while `workers`
// workers (each with `concurrency` slots) take and finish them; the rate is jobs over the time
// until the last one finished.
// Completed jobs are removed (`removeOnComplete`), as HiveSync's queue forgets acknowledged ones.
//
// node bench.mjs <redis url> <jobs> <workers> <concurrency> [producers]
//   →  prints {"rate": jobs per second}
import { Queue, Worker } from 'bullmq';

const [url, jobsArg, workersArg, concurrencyArg, producersArg] = process.argv.slice(2);
const jobs = Number(jobsArg);
const workerCount = Number(workersArg);
const concurrency = Number(concurrencyArg);
const producers = Number(producersArg || 1);
const parsed = new URL(url);
const connection = {
  host: parsed.hostname,
  port: Number(parsed.port || 6379),
  db: Number(parsed.pathname.slice(1) || 0),
  maxRetriesPerRequest: null,
};
const name = `hivesync-bench-${process.pid}-${Date.now()}`;
const prefix = 'hivesync-bench-bullmq';

const queue = new Queue(name, { connection, prefix });
await queue.waitUntilReady();

let done = 0;
let finish;
const finished = new Promise((resolve) => {
  finish = resolve;
});
const workers = [];
for (let i = 0; i < workerCount; i++) {
  const worker = new Worker(name, async () => {}, {
    connection,
    prefix,
    concurrency,
    removeOnComplete: { count: 0 },
    removeOnFail: { count: 0 },
  });
  worker.on('completed', () => {
    done += 1;
    if (done === jobs) finish();
  });
  workers.push(worker);
}
await Promise.all(workers.map((w) => w.waitUntilReady()));

const started = performance.now();
const produce = async (first) => {
  for (let n = first; n < jobs; n += producers) {
    await queue.add('noop', { n }, { removeOnComplete: true, removeOnFail: true });
  }
};
await Promise.all(Array.from({ length: producers }, (_, p) => produce(p)));
await finished;
const seconds = (performance.now() - started) / 1000;

await Promise.all(workers.map((w) => w.close()));
await queue.obliterate({ force: true });
await queue.close();
console.log(JSON.stringify({ rate: jobs / seconds }));
