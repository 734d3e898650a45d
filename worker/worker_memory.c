/*
 * worker_memory.c — how the long-lived workers (dispatchers, Kafka
 * consumers) use the C heap.
 *
 * Each batch builds its transaction's memory contexts and frees them at
 * commit.  With glibc's defaults, blocks of 128 kB and more are mapped and
 * unmapped around every batch, and the heap top is trimmed, so the next
 * batch takes page faults to get zeroed pages back (a third of a Kafka
 * consumer's CPU in perf).  These workers keep that memory instead: blocks
 * below 32 MB come from the heap, and the heap is not trimmed below 256 MB of
 * free space.  A worker's memory then stays at the peak of its largest
 * batch, which bench/dispatch.sh's soak watches (flat over 1,000,000
 * deliveries).
 *
 * A dispatcher's session also plans without JIT and without parallel
 * workers (notiflow_worker_plan_settings); every worker's session is read
 * committed and without statement_timeout (notiflow_worker_session_settings).
 */
#include "postgres.h"

#ifdef __GLIBC__
#include <malloc.h>
#endif

#include "utils/guc.h"

#include "worker.h"

void
notiflow_worker_keep_memory(void)
{
#ifdef __GLIBC__
	(void) mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024);
	(void) mallopt(M_TRIM_THRESHOLD, 256 * 1024 * 1024);
#endif
}

/*
 * Planner settings of a dispatcher's session, once it is connected.  Its
 * statements touch a batch of rows by index or by version.  No JIT: a plan
 * estimated above jit_above_cost (a dispatcher's lease query over a queue
 * index full of dead entries) was compiled at every execution, 10-16 ms
 * each, and the first compilation loaded LLVM, 8 MB of the worker's memory
 * for good (a step in the soak of the dispatch benchmark).  No parallel
 * plans: their workers would take slots of max_worker_processes that the
 * launcher needs.  Kafka consumers keep the defaults: with these settings two
 * consumers ingested 18,950 and 19,146 events/s (86-88 µs of CPU per event)
 * in bench/kafka.sh, against 21,308 (78 µs) without, back to back.
 */
void
notiflow_worker_plan_settings(void)
{
	SetConfigOption("jit", "off", PGC_USERSET, PGC_S_SESSION);
	SetConfigOption("max_parallel_workers_per_gather", "0", PGC_USERSET, PGC_S_SESSION);
}

/*
 * Session settings of a worker, once it is connected, whatever the
 * database's defaults say.  Read committed: a resume takes a correlation
 * key's lock and then reads the events that came for it, which needs a
 * snapshot taken after the lock (under repeatable read an event committed
 * meanwhile was not seen, and the execution waited for it until its
 * timeout).  No statement_timeout: a batch cut short by it would end the
 * worker, and the requests it had in flight would be sent again after their
 * lease.  (A query cancel is handled by the workers' loops:
 * notiflow_worker_drop_idle_cancel.)
 */
void
notiflow_worker_session_settings(void)
{
	SetConfigOption("default_transaction_isolation", "read committed", PGC_USERSET, PGC_S_SESSION);
	SetConfigOption("statement_timeout", "0", PGC_USERSET, PGC_S_SESSION);
}
