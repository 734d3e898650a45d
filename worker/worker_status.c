/*
 * worker_status.c — SQL access to the workers' shared state, for the
 * monitoring views (notiflow.worker_status), notiflow.metrics() and
 * notiflow.check_alerts():
 *   notiflow.dispatcher_counters() → one row per live dispatcher slot
 *   notiflow.workers_preloaded()   → whether the workers' shared memory exists
 *
 * Reads notiflow_shared (worker.h) and changes nothing.  Slot ownership (pid,
 * started_at) is copied under the spinlock; the counters are atomics read
 * after it is released, so a row may mix counters a few increments apart.
 * When the library was not preloaded there is no shared state: no rows, false.
 */
#include "postgres.h"

#include "fmgr.h"
#include "funcapi.h"
#include "utils/timestamp.h"

#include "worker.h"

PG_FUNCTION_INFO_V1(dispatcher_counters);
PG_FUNCTION_INFO_V1(workers_preloaded);

#define DISPATCHER_COUNTERS_COLS 10

/* Returns the slot, pid, start time and counters of every live dispatcher. */
Datum
dispatcher_counters(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;

	InitMaterializedSRF(fcinfo, 0);
	if (notiflow_shared == NULL)
		return (Datum) 0;

	for (int i = 0; i < NOTIFLOW_MAX_DISPATCHERS; i++)
	{
		DispatcherSlot *s = &notiflow_shared->dispatchers[i];
		Datum		values[DISPATCHER_COUNTERS_COLS];
		bool		nulls[DISPATCHER_COUNTERS_COLS] = {0};
		pid_t		pid;
		TimestampTz started_at;

		SpinLockAcquire(&notiflow_shared->mutex);
		pid = s->pid;
		started_at = s->started_at;
		SpinLockRelease(&notiflow_shared->mutex);
		if (pid == 0)
			continue;

		values[0] = Int32GetDatum(i);
		values[1] = Int32GetDatum(pid);
		values[2] = TimestampTzGetDatum(started_at);
		nulls[2] = started_at == 0;
		values[3] = Int64GetDatum((int64) pg_atomic_read_u64(&s->claimed));
		values[4] = Int64GetDatum((int64) pg_atomic_read_u64(&s->sent));
		values[5] = Int64GetDatum((int64) pg_atomic_read_u64(&s->retried));
		values[6] = Int64GetDatum((int64) pg_atomic_read_u64(&s->failed));
		values[7] = Int64GetDatum((int64) pg_atomic_read_u64(&s->in_flight));
		values[8] = Int64GetDatum((int64) pg_atomic_read_u64(&s->claimed_after_front));
		values[9] = Int64GetDatum((int64) pg_atomic_read_u64(&s->record_retries));
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/* Returns whether the library was preloaded (the workers' shared memory exists). */
Datum
workers_preloaded(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(notiflow_shared != NULL);
}
