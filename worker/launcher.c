/*
 * launcher.c — the "notiflow launcher" background worker.
 *
 * Registered at preload time (worker_shmem.c), it starts
 * notiflow.dispatch_workers dispatchers as dynamic background workers in
 * notiflow.database_name, restarts any that stops, stops extra ones when the
 * setting is lowered (SIGHUP), and starts none while that database is being
 * dropped.  It is connected to no database (it reads no table).
 *
 * It also runs one "notiflow kafka consumer" per row of
 * notiflow.kafka_subscriptions.  Staying out of the database (so that a
 * missing or dropped database never stops the launcher), it learns the
 * subscriptions through a short-lived "notiflow kafka sync" worker:
 *
 *   - a statement trigger on kafka_subscriptions asks, at commit, for a sync
 *     (worker_shmem.c moves kafka_generation and sets this latch);
 *   - the launcher starts the sync worker whenever the generation it last
 *     saw published differs (and once at start, and after a DROP DATABASE);
 *   - the sync worker (kafka_subscription.c) reads the generation, then the
 *     table, and publishes (id, revision, name) of every subscription with
 *     the generation it read; a change committed meanwhile moves the
 *     generation again, so nothing is missed;
 *   - the launcher then starts a consumer for each new subscription or
 *     revision and terminates those no longer listed.
 *
 * A consumer that finds its subscription gone (DROP EXTENSION fires no
 * trigger) asks for a sync and exits.  Workers that stop are started again
 * at most every RESTART_INTERVAL_MS, so a database that does not exist yet
 * costs one failed connection per interval.
 */
#include "postgres.h"

#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/timestamp.h"

#include "worker.h"

#define RESTART_INTERVAL_MS 5000

static BackgroundWorkerHandle *handles[NOTIFLOW_MAX_DISPATCHERS];
static TimestampTz started_at[NOTIFLOW_MAX_DISPATCHERS];
static BackgroundWorkerHandle *kafka_handles[NOTIFLOW_MAX_KAFKA_CONSUMERS];
static TimestampTz kafka_started_at[NOTIFLOW_MAX_KAFKA_CONSUMERS];
static BackgroundWorkerHandle *sync_handle = NULL;
static TimestampTz sync_started_at = 0;
static uint64 sync_target = 0;	/* the generation the last sync was started for */

/* Registers a dynamic worker in notiflow.database_name; false (with a warning) when none is free. */
static bool
start_worker(const char *function, const char *name, const char *type, Datum arg,
			 BackgroundWorkerHandle **handle)
{
	BackgroundWorker worker;

	if (*handle != NULL)		/* the handle of the worker this one replaces */
	{
		pfree(*handle);
		*handle = NULL;
	}
	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = BGW_NEVER_RESTART;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "notiflow");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "%s", function);
	snprintf(worker.bgw_name, BGW_MAXLEN, "%s", name);
	snprintf(worker.bgw_type, BGW_MAXLEN, "%s", type);
	worker.bgw_main_arg = arg;
	worker.bgw_notify_pid = MyProcPid;
	if (!RegisterDynamicBackgroundWorker(&worker, handle))
	{
		*handle = NULL;
		ereport(WARNING,
				(errmsg("notiflow launcher could not start %s", name),
				 errhint("Raise max_worker_processes.")));
		return false;
	}
	return true;
}

/* Starts the dispatcher of slot i. */
static void
start_dispatcher(int i)
{
	char		name[BGW_MAXLEN];

	snprintf(name, sizeof(name), "notiflow dispatcher %d", i);
	started_at[i] = GetCurrentTimestamp();
	start_worker("notiflow_dispatcher_main", name, "notiflow dispatcher", Int32GetDatum(i), &handles[i]);
}

/* True when the worker of a handle is starting or running. */
static bool
worker_alive(BackgroundWorkerHandle *handle)
{
	pid_t		pid;

	if (handle == NULL)
		return false;
	return GetBackgroundWorkerPid(handle, &pid) != BGWH_STOPPED;
}

/* Milliseconds since a timestamp. */
static long
ms_since(TimestampTz then, TimestampTz now)
{
	return (long) ((now - then) / 1000);
}

/* Lowers *next_ms to the time left until a restart RESTART_INTERVAL_MS after then is due. */
static void
restart_due_in(TimestampTz then, TimestampTz now, long *next_ms)
{
	long		left = RESTART_INTERVAL_MS - ms_since(then, now);

	if (*next_ms < 0 || left < *next_ms)
		*next_ms = left;
}

/*
 * Makes the running dispatchers match the configuration.  A dispatcher that
 * stopped is started again at most every RESTART_INTERVAL_MS (its database may
 * not exist yet); returns the milliseconds until such a restart is due, or -1.
 */
static long
reconcile(bool dropping)
{
	long		next_ms = -1;
	TimestampTz now = GetCurrentTimestamp();

	for (int i = 0; i < NOTIFLOW_MAX_DISPATCHERS; i++)
	{
		bool		wanted = i < notiflow_dispatch_workers && !dropping;
		bool		alive = worker_alive(handles[i]);

		if (wanted && !alive)
		{
			if (started_at[i] == 0 || ms_since(started_at[i], now) >= RESTART_INTERVAL_MS)
				start_dispatcher(i);
			else
				restart_due_in(started_at[i], now, &next_ms);
		}
		else if (!wanted && handles[i] != NULL)
		{
			if (alive && !dropping)
				TerminateBackgroundWorker(handles[i]);
			if (!alive)
			{
				pfree(handles[i]);
				handles[i] = NULL;
			}
		}
	}
	return next_ms;
}

/* Starts the sync worker when the published subscriptions are out of date. */
static void
kafka_sync_if_needed(TimestampTz now, long *next_ms)
{
	uint64		generation = pg_atomic_read_u64(&notiflow_shared->kafka_generation);
	bool		synced;
	uint64		synced_generation;
	bool		failed;

	if (worker_alive(sync_handle))
		return;
	if (sync_handle != NULL)
	{
		pfree(sync_handle);
		sync_handle = NULL;
	}
	SpinLockAcquire(&notiflow_shared->mutex);
	synced = notiflow_shared->kafka_synced;
	synced_generation = notiflow_shared->kafka_synced_generation;
	SpinLockRelease(&notiflow_shared->mutex);
	if (synced && synced_generation == generation)
		return;
	/* a sync that ended without publishing its generation failed: wait before the next */
	failed = sync_started_at != 0 && (!synced || synced_generation < sync_target);
	if (failed && ms_since(sync_started_at, now) < RESTART_INTERVAL_MS)
	{
		restart_due_in(sync_started_at, now, next_ms);
		return;
	}
	sync_target = generation;
	sync_started_at = now;
	start_worker("notiflow_kafka_sync_main", "notiflow kafka sync", "notiflow kafka sync", (Datum) 0,
				 &sync_handle);
}

/* True when the subscription of a slot is in the published list. */
static bool
kafka_still_wanted(const KafkaWanted *slot, const KafkaWanted *wanted, int count)
{
	for (int i = 0; i < count; i++)
		if (wanted[i].subscription_id == slot->subscription_id && wanted[i].revision == slot->revision)
			return true;
	return false;
}

/* Starts the consumer of slot i for its subscription. */
static void
start_kafka_consumer(int i)
{
	char		name[BGW_MAXLEN];

	snprintf(name, sizeof(name), "notiflow kafka consumer %s", notiflow_shared->kafka_consumers[i].want.name);
	kafka_started_at[i] = GetCurrentTimestamp();
	start_worker("notiflow_kafka_consumer_main", name, "notiflow kafka consumer", Int32GetDatum(i),
				 &kafka_handles[i]);
}

/*
 * Makes the running Kafka consumers match the published subscriptions: one
 * consumer per subscription and revision.  Returns the milliseconds until a
 * restart is due, or -1.
 */
static long
reconcile_kafka(bool dropping)
{
	long		next_ms = -1;
	TimestampTz now = GetCurrentTimestamp();
	KafkaWanted wanted[NOTIFLOW_MAX_KAFKA_CONSUMERS];
	int			count;

	if (dropping)
	{
		/* start nothing; what the database held is read again afterwards */
		SpinLockAcquire(&notiflow_shared->mutex);
		notiflow_shared->kafka_synced = false;
		SpinLockRelease(&notiflow_shared->mutex);
		return -1;
	}
	kafka_sync_if_needed(now, &next_ms);

	SpinLockAcquire(&notiflow_shared->mutex);
	if (!notiflow_shared->kafka_synced)
	{
		SpinLockRelease(&notiflow_shared->mutex);
		return next_ms;
	}
	count = notiflow_shared->kafka_wanted_count;
	memcpy(wanted, notiflow_shared->kafka_wanted, sizeof(KafkaWanted) * count);
	SpinLockRelease(&notiflow_shared->mutex);

	/* stop what is no longer wanted, restart what stopped */
	for (int i = 0; i < NOTIFLOW_MAX_KAFKA_CONSUMERS; i++)
	{
		KafkaConsumerSlot *slot = &notiflow_shared->kafka_consumers[i];
		bool		alive = worker_alive(kafka_handles[i]);

		if (slot->want.subscription_id == 0)
			continue;
		if (kafka_still_wanted(&slot->want, wanted, count))
		{
			if (alive)
				continue;
			if (ms_since(kafka_started_at[i], now) >= RESTART_INTERVAL_MS)
				start_kafka_consumer(i);
			else
				restart_due_in(kafka_started_at[i], now, &next_ms);
		}
		else if (alive)
			TerminateBackgroundWorker(kafka_handles[i]);
		else
		{
			if (kafka_handles[i] != NULL)
				pfree(kafka_handles[i]);
			kafka_handles[i] = NULL;
			SpinLockAcquire(&notiflow_shared->mutex);
			memset(&slot->want, 0, sizeof(slot->want));
			SpinLockRelease(&notiflow_shared->mutex);
		}
	}

	/* start a consumer for every subscription that has none */
	for (int w = 0; w < count; w++)
	{
		int			free_slot = -1;
		bool		running = false;

		for (int i = 0; i < NOTIFLOW_MAX_KAFKA_CONSUMERS && !running; i++)
		{
			KafkaWanted *have = &notiflow_shared->kafka_consumers[i].want;

			if (have->subscription_id == wanted[w].subscription_id)
				running = true; /* or an older revision still stopping */
			else if (have->subscription_id == 0 && free_slot < 0)
				free_slot = i;
		}
		if (running || free_slot < 0)
			continue;
		SpinLockAcquire(&notiflow_shared->mutex);
		notiflow_shared->kafka_consumers[free_slot].want = wanted[w];
		SpinLockRelease(&notiflow_shared->mutex);
		start_kafka_consumer(free_slot);
	}
	return next_ms;
}

/*
 * Stops the workers this launcher started when it exits: a launcher started
 * again knows none of them and would start a second set beside them.
 */
static void
launcher_exit(int code, Datum arg)
{
	for (int i = 0; i < NOTIFLOW_MAX_DISPATCHERS; i++)
		if (handles[i] != NULL)
			TerminateBackgroundWorker(handles[i]);
	for (int i = 0; i < NOTIFLOW_MAX_KAFKA_CONSUMERS; i++)
		if (kafka_handles[i] != NULL)
			TerminateBackgroundWorker(kafka_handles[i]);
	if (sync_handle != NULL)
		TerminateBackgroundWorker(sync_handle);
}

void
notiflow_launcher_main(Datum arg)
{
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	/* no database: only so that the launcher shows in pg_stat_activity */
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);

	SpinLockAcquire(&notiflow_shared->mutex);
	notiflow_shared->launcher_pid = MyProcPid;
	notiflow_shared->launcher_latch = MyLatch;
	SpinLockRelease(&notiflow_shared->mutex);
	before_shmem_exit(launcher_exit, (Datum) 0);

	ereport(LOG, (errmsg("notiflow launcher started: %d dispatcher(s) in database \"%s\"",
						 notiflow_dispatch_workers, notiflow_database_name)));
	for (;;)
	{
		long		timeout;
		long		kafka_timeout;
		bool		dropping;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		dropping = notiflow_database_dropping(InvalidOid);

		timeout = reconcile(dropping);
		kafka_timeout = reconcile_kafka(dropping);
		if (kafka_timeout >= 0 && (timeout < 0 || kafka_timeout < timeout))
			timeout = kafka_timeout;
		/*
		 * woken by SIGHUP, by a worker's exit (bgw_notify_pid), by a change
		 * of the Kafka subscriptions, or when a restart is due
		 */
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 timeout < 0 ? RESTART_INTERVAL_MS : timeout, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}
