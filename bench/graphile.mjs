// bench/graphile.mjs — the peer of notiflow's dispatch benchmark: a Graphile
// Worker (npm graphile-worker, pinned in bench/package.json) whose task
// "send" does what a notiflow dispatcher does for one delivery: POST the
// SendGrid v3 mail of the job's payload to the provider double (same JSON
// shape as notiflow's SendGrid adapter: one personalization, from, subject,
// text/plain and text/html content, custom_args.notiflow_delivery_id) and
// record the outcome in a table (bench.graphile_sent).  A non-202 answer
// throws, so Graphile Worker retries the job as it would any failure.
//
//   node bench/graphile.mjs --migrate --connection URL
//   node bench/graphile.mjs --connection URL --double URL --api-key KEY
//        [--concurrency N] [--queue-size N] [--pool N] [--complete-batch-ms N]
//
// --concurrency is concurrentJobs (in-flight jobs, so in-flight HTTP requests);
// --queue-size is localQueue.size (jobs fetched and locked per query, like
// notiflow's dispatch_batch_size; 0 or 1: one job per fetch, the default of
// Graphile Worker); --pool is maxPoolSize; --complete-batch-ms is
// completeJobBatchDelay (-1: complete each job on its own).  Prints "ready"
// once the worker runs; SIGTERM or SIGINT stops it gracefully.  Only
// warnings and errors are logged (stderr).
import http from "node:http";
import { run, runMigrations, Logger } from "graphile-worker";

function parseArgs(argv) {
  const o = { concurrency: 256, queueSize: 200, pool: 16, completeBatchMs: 0, migrate: false };
  for (let i = 2; i < argv.length; i++) {
    const a = argv[i];
    const next = () => {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      return argv[++i];
    };
    if (a === "--migrate") o.migrate = true;
    else if (a === "--connection") o.connection = next();
    else if (a === "--double") o.double = next();
    else if (a === "--api-key") o.apiKey = next();
    else if (a === "--concurrency") o.concurrency = Number(next());
    else if (a === "--queue-size") o.queueSize = Number(next());
    else if (a === "--pool") o.pool = Number(next());
    else if (a === "--complete-batch-ms") o.completeBatchMs = Number(next());
    else throw new Error(`unknown argument ${a}`);
  }
  if (!o.connection) throw new Error("--connection is required");
  if (!o.migrate && (!o.double || !o.apiKey)) throw new Error("--double and --api-key are required");
  return o;
}

const opts = parseArgs(process.argv);
const logger = new Logger(() => (level, message) => {
  if (level === "error" || level === "warning") process.stderr.write(`graphile ${level}: ${message}\n`);
});

if (opts.migrate) {
  await runMigrations({ connectionString: opts.connection, logger });
  process.exit(0);
}

const target = new URL("/v3/mail/send", opts.double);
const agent = new http.Agent({ keepAlive: true, maxSockets: opts.concurrency });

// POSTs body to the double; resolves {status, messageId}.
function post(body) {
  return new Promise((resolve, reject) => {
    const req = http.request(
      target,
      {
        method: "POST",
        agent,
        headers: {
          Authorization: `Bearer ${opts.apiKey}`,
          "Content-Type": "application/json",
          "Content-Length": Buffer.byteLength(body),
        },
        timeout: 60000,
      },
      (res) => {
        res.resume();
        res.on("end", () => resolve({ status: res.statusCode, messageId: res.headers["x-message-id"] ?? null }));
        res.on("error", reject);
      },
    );
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.on("error", reject);
    req.end(body);
  });
}

const taskList = {
  async send(payload, helpers) {
    const body = JSON.stringify({
      personalizations: [{ to: [{ email: payload.to }] }],
      from: { email: payload.from },
      subject: payload.subject,
      content: [
        { type: "text/plain", value: payload.text },
        { type: "text/html", value: payload.html },
      ],
      custom_args: { notiflow_delivery_id: String(payload.ref) },
    });
    const { status, messageId } = await post(body);
    if (status !== 202) throw new Error(`the double answered ${status}`);
    await helpers.query("INSERT INTO bench.graphile_sent (ref, status, message_id) VALUES ($1, $2, $3)", [
      payload.ref,
      status,
      messageId,
    ]);
  },
};

const preset = {
  worker: {
    connectionString: opts.connection,
    concurrentJobs: opts.concurrency,
    maxPoolSize: opts.pool,
    pollInterval: 2000,
    completeJobBatchDelay: opts.completeBatchMs,
    ...(opts.queueSize > 1 ? { localQueue: { size: opts.queueSize } } : {}),
  },
};
const runner = await run({ preset, taskList, logger, noHandleSignals: true });
let stopping = false;
const stop = async () => {
  if (stopping) return;
  stopping = true;
  await runner.stop();
  agent.destroy();
  process.exit(0);
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
process.stdout.write("ready\n");
await runner.promise;
