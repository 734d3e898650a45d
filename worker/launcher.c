/*
 * launcher.c — the "notiflow launcher" background worker.
 *
 * Registered at preload time (worker_shmem.c), it starts
 * notiflow.dispatch_workers dispatchers as dynamic background workers in
 * notiflow.database_name, restarts any that stops, stops extra ones when the
 * setting is lowered (SIGHUP), and starts none while that database is being
 * dropped.  It is connected to no database (it reads no table).
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

/* Starts the dispatcher of slot i. */
static void
start_dispatcher(int i)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = BGW_NEVER_RESTART;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "notiflow");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "notiflow_dispatcher_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "notiflow dispatcher %d", i);
	snprintf(worker.bgw_type, BGW_MAXLEN, "notiflow dispatcher");
	worker.bgw_main_arg = Int32GetDatum(i);
	worker.bgw_notify_pid = MyProcPid;
	started_at[i] = GetCurrentTimestamp();
	if (!RegisterDynamicBackgroundWorker(&worker, &handles[i]))
	{
		handles[i] = NULL;
		ereport(WARNING,
				(errmsg("notiflow launcher could not start dispatcher %d", i),
				 errhint("Raise max_worker_processes.")));
	}
}

/* True when slot i's dispatcher is starting or running. */
static bool
dispatcher_alive(int i)
{
	pid_t		pid;

	if (handles[i] == NULL)
		return false;
	return GetBackgroundWorkerPid(handles[i], &pid) != BGWH_STOPPED;
}

/*
 * Makes the running dispatchers match the configuration.  A dispatcher that
 * stopped is started again at most every RESTART_INTERVAL_MS (its database may
 * not exist yet); returns the milliseconds until such a restart is due, or -1.
 */
static long
reconcile(void)
{
	bool		dropping;
	long		next_ms = -1;
	TimestampTz now = GetCurrentTimestamp();

	SpinLockAcquire(&notiflow_shared->mutex);
	dropping = OidIsValid(notiflow_shared->dropping_database);
	SpinLockRelease(&notiflow_shared->mutex);

	for (int i = 0; i < NOTIFLOW_MAX_DISPATCHERS; i++)
	{
		bool		wanted = i < notiflow_dispatch_workers && !dropping;
		bool		alive = dispatcher_alive(i);

		if (wanted && !alive)
		{
			long		since = (long) ((now - started_at[i]) / 1000);

			if (started_at[i] == 0 || since >= RESTART_INTERVAL_MS)
				start_dispatcher(i);
			else if (next_ms < 0 || RESTART_INTERVAL_MS - since < next_ms)
				next_ms = RESTART_INTERVAL_MS - since;
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

	ereport(LOG, (errmsg("notiflow launcher started: %d dispatcher(s) in database \"%s\"",
						 notiflow_dispatch_workers, notiflow_database_name)));
	for (;;)
	{
		long		timeout;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		timeout = reconcile();
		/* woken by SIGHUP, by a dispatcher's exit (bgw_notify_pid), or when a restart is due */
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 timeout < 0 ? RESTART_INTERVAL_MS : timeout, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}
