/*
 * worker_shmem.c — shared memory of the workers, the commit-time wake-up of
 * the dispatchers and of the launcher, and the guard that makes the workers
 * leave a database that is being dropped.
 *
 * Locking: the spinlock protects slot ownership (pid/latch), the marks of
 * databases being dropped and the published list of Kafka subscriptions;
 * counters and the Kafka generation are atomics.  A transaction that queued
 * deliveries registers a transaction callback; at commit it sets the latch of
 * every live dispatcher, so a delivery leaves within one loop of the worker
 * and no worker polls the table.  A transaction that changed
 * notiflow.kafka_subscriptions (or dropped the extension) moves the Kafka
 * generation at commit and sets the launcher's latch, so consumers start and
 * stop without a restart.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
#include "commands/dbcommands.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "storage/ipc.h"
#include "storage/proc.h"
#include "storage/procarray.h"
#include "storage/shmem.h"
#include "tcop/utility.h"
#include "utils/acl.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "worker.h"

NotiflowShared *notiflow_shared = NULL;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;
static ProcessUtility_hook_type prev_process_utility_hook = NULL;
static bool wake_at_commit = false;
static bool kafka_sync_at_commit = false;
static int	kafka_sync_level = 0;	/* the outermost (sub)transaction level that asked for it */
static bool xact_callback_registered = false;

/* Asks for the shared memory the workers need. */
static void
notiflow_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(sizeof(NotiflowShared)));
}

/* Creates or attaches the shared state. */
static void
notiflow_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	notiflow_shared = ShmemInitStruct("notiflow", sizeof(NotiflowShared), &found);
	if (!found)
	{
		memset(notiflow_shared, 0, sizeof(NotiflowShared));
		SpinLockInit(&notiflow_shared->mutex);
		SpinLockInit(&notiflow_shared->rate_mutex);
		for (int i = 0; i < NOTIFLOW_MAX_DISPATCHERS; i++)
		{
			DispatcherSlot *s = &notiflow_shared->dispatchers[i];

			pg_atomic_init_u64(&s->claimed, 0);
			pg_atomic_init_u64(&s->claimed_after_front, 0);
			pg_atomic_init_u64(&s->sent, 0);
			pg_atomic_init_u64(&s->retried, 0);
			pg_atomic_init_u64(&s->failed, 0);
			pg_atomic_init_u64(&s->in_flight, 0);
			pg_atomic_init_u64(&s->record_retries, 0);
		}
		pg_atomic_init_u64(&notiflow_shared->kafka_generation, 1);
	}
	LWLockRelease(AddinShmemInitLock);
}

/* Sets the latch of every live dispatcher (after the spinlock: SetLatch may signal). */
static void
wake_dispatchers(void)
{
	Latch	   *latches[NOTIFLOW_MAX_DISPATCHERS];
	int			n = 0;

	if (notiflow_shared == NULL)
		return;
	SpinLockAcquire(&notiflow_shared->mutex);
	for (int i = 0; i < NOTIFLOW_MAX_DISPATCHERS; i++)
		if (notiflow_shared->dispatchers[i].pid != 0 && notiflow_shared->dispatchers[i].latch)
			latches[n++] = notiflow_shared->dispatchers[i].latch;
	SpinLockRelease(&notiflow_shared->mutex);
	for (int i = 0; i < n; i++)
		SetLatch(latches[i]);
}

/* Moves the Kafka generation and wakes the launcher. */
void
notiflow_kafka_request_sync(void)
{
	Latch	   *latch;

	if (notiflow_shared == NULL)
		return;
	pg_atomic_fetch_add_u64(&notiflow_shared->kafka_generation, 1);
	SpinLockAcquire(&notiflow_shared->mutex);
	latch = notiflow_shared->launcher_latch;
	SpinLockRelease(&notiflow_shared->mutex);
	if (latch)
		SetLatch(latch);
}

/* Wakes the dispatchers, or the launcher, after a commit that asked for it. */
static void
wake_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			if (wake_at_commit)
				wake_dispatchers();
			if (kafka_sync_at_commit)
				notiflow_kafka_request_sync();
			wake_at_commit = false;
			kafka_sync_at_commit = false;
			break;
		case XACT_EVENT_PRE_PREPARE:
			/* the launcher would have to learn of it at COMMIT PREPARED, maybe much later */
			if (kafka_sync_at_commit)
				ereport(ERROR,
						(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						 errmsg("cannot PREPARE a transaction that changed Kafka subscriptions"),
						 errhint("Change notiflow.kafka_subscriptions in a transaction of its own.")));
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:	/* COMMIT PREPARED wakes the dispatchers (below) */
			wake_at_commit = false;
			kafka_sync_at_commit = false;
			break;
		default:
			break;
	}
}

/*
 * A subtransaction rolled back takes its Kafka change with it (a prepared
 * transaction is refused only for a change that stays); one committed
 * passes it to its parent.
 */
static void
wake_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
					  SubTransactionId parentSubid, void *arg)
{
	int			level = GetCurrentTransactionNestLevel();

	if (!kafka_sync_at_commit)
		return;
	if (event == SUBXACT_EVENT_ABORT_SUB && kafka_sync_level >= level)
		kafka_sync_at_commit = false;
	else if (event == SUBXACT_EVENT_COMMIT_SUB && kafka_sync_level == level)
		kafka_sync_level = level - 1;
}

/* Registers the commit callbacks once per backend. */
static void
register_xact_callback(void)
{
	if (!xact_callback_registered)
	{
		RegisterXactCallback(wake_xact_callback, NULL);
		RegisterSubXactCallback(wake_subxact_callback, NULL);
		xact_callback_registered = true;
	}
}

void
notiflow_wake_dispatchers_at_commit(void)
{
	if (notiflow_shared == NULL)
		return;
	register_xact_callback();
	wake_at_commit = true;
}

void
notiflow_kafka_sync_at_commit(void)
{
	if (notiflow_shared == NULL)
		return;
	register_xact_callback();
	if (!kafka_sync_at_commit || GetCurrentTransactionNestLevel() < kafka_sync_level)
		kafka_sync_level = GetCurrentTransactionNestLevel();
	kafka_sync_at_commit = true;
}

/*
 * Sets the latches of the workers connected to a database; returns how many
 * there are.
 */
static int
wake_workers_in(Oid dboid)
{
	Latch	   *latches[NOTIFLOW_MAX_DISPATCHERS + NOTIFLOW_MAX_KAFKA_CONSUMERS];
	int			n = 0;

	SpinLockAcquire(&notiflow_shared->mutex);
	for (int i = 0; i < NOTIFLOW_MAX_DISPATCHERS; i++)
	{
		DispatcherSlot *s = &notiflow_shared->dispatchers[i];

		if (s->pid != 0 && s->database == dboid && s->latch)
			latches[n++] = s->latch;
	}
	for (int i = 0; i < NOTIFLOW_MAX_KAFKA_CONSUMERS; i++)
	{
		KafkaConsumerSlot *s = &notiflow_shared->kafka_consumers[i];

		if (s->pid != 0 && s->database == dboid && s->latch)
			latches[n++] = s->latch;
	}
	SpinLockRelease(&notiflow_shared->mutex);
	for (int i = 0; i < n; i++)
		SetLatch(latches[i]);
	return n;
}

/* Clears this backend's dropping mark (pid) or a dead backend's; true when one was cleared. */
static bool
clear_dropping_mark(pid_t pid)
{
	bool		cleared = false;

	SpinLockAcquire(&notiflow_shared->mutex);
	for (int i = 0; i < NOTIFLOW_MAX_DROPPING; i++)
		if (notiflow_shared->dropping[i].pid == pid)
		{
			notiflow_shared->dropping[i].pid = 0;
			notiflow_shared->dropping[i].database = InvalidOid;
			cleared = true;
		}
	SpinLockRelease(&notiflow_shared->mutex);
	return cleared;
}

/*
 * Whether a live backend is dropping a database (InvalidOid: any).  A mark
 * is cleared by its backend when the statement ends, also by an error, and
 * at its exit (a FATAL: terminated while it waited); one whose backend is
 * gone all the same is cleared here.
 */
bool
notiflow_database_dropping(Oid database)
{
	DroppingMark marks[NOTIFLOW_MAX_DROPPING];
	int			n = 0;
	bool		dropping = false;

	if (notiflow_shared == NULL)
		return false;
	SpinLockAcquire(&notiflow_shared->mutex);
	for (int i = 0; i < NOTIFLOW_MAX_DROPPING; i++)
	{
		DroppingMark *m = &notiflow_shared->dropping[i];

		if (m->pid != 0 && (!OidIsValid(database) || m->database == database))
			marks[n++] = *m;
	}
	SpinLockRelease(&notiflow_shared->mutex);
	for (int i = 0; i < n; i++)
	{
		if (BackendPidGetProc(marks[i].pid) != NULL)
			dropping = true;
		else
			(void) clear_dropping_mark(marks[i].pid);
	}
	return dropping;
}

/* At backend exit, also by FATAL (the hook's PG_FINALLY does not run then). */
static void
clear_dropping_mark_at_exit(int code, Datum arg)
{
	Latch	   *latch;

	if (notiflow_shared == NULL || !clear_dropping_mark(MyProcPid))
		return;
	SpinLockAcquire(&notiflow_shared->mutex);
	latch = notiflow_shared->launcher_latch;
	SpinLockRelease(&notiflow_shared->mutex);
	if (latch)
		SetLatch(latch);		/* the launcher starts the workers again now */
}

/*
 * Has the workers connected to a database leave it before it is dropped,
 * and waits (at most 10 s) until they did.  Only for a DROP DATABASE that
 * can go through: run by the database's owner (or a superuser), as a
 * top-level statement outside a transaction block, of a database that is
 * no template.  Anyone else's DROP DATABASE, which fails, would otherwise
 * stop the workers, and with them their requests in flight.  (One that
 * fails later, because other sessions are connected, has stopped them; the
 * launcher starts them again.)
 */
static void
leave_database(const char *dbname, ProcessUtilityContext context)
{
	static bool exit_callback_registered = false;
	bool		marked = false;
	Oid			dboid = get_database_oid(dbname, true);
	TimestampTz deadline = GetCurrentTimestamp() + 10 * USECS_PER_SEC;
	HeapTuple	tuple;
	bool		is_template;

	/* the workers connect to notiflow.database_name (set at server start) alone */
	if (!OidIsValid(dboid) || notiflow_shared == NULL || dboid == MyDatabaseId ||
		strcmp(dbname, notiflow_database_name) != 0 ||
		context != PROCESS_UTILITY_TOPLEVEL || IsTransactionBlock() ||
		!pg_database_ownercheck(dboid, GetUserId()))
		return;
	tuple = SearchSysCache1(DATABASEOID, ObjectIdGetDatum(dboid));
	if (!HeapTupleIsValid(tuple))
		return;
	is_template = ((Form_pg_database) GETSTRUCT(tuple))->datistemplate;
	ReleaseSysCache(tuple);
	if (is_template)
		return;					/* refused: templates cannot be dropped */
	if (!exit_callback_registered)
	{
		before_shmem_exit(clear_dropping_mark_at_exit, (Datum) 0);
		exit_callback_registered = true;
	}
	SpinLockAcquire(&notiflow_shared->mutex);
	for (int i = 0; i < NOTIFLOW_MAX_DROPPING && !marked; i++)
		if (notiflow_shared->dropping[i].pid == 0)
		{
			notiflow_shared->dropping[i].pid = MyProcPid;
			notiflow_shared->dropping[i].database = dboid;
			marked = true;
		}
	SpinLockRelease(&notiflow_shared->mutex);
	if (!marked)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("too many sessions are dropping database \"%s\" at once", dbname),
				 errdetail("At most %d can wait for the notiflow workers to leave it.", NOTIFLOW_MAX_DROPPING)));
	while (wake_workers_in(dboid) > 0 && GetCurrentTimestamp() <= deadline)
	{
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, 20,
						 PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
}

/* True for DROP EXTENSION notiflow. */
static bool
drops_notiflow(Node *stmt)
{
	ListCell   *lc;

	if (!IsA(stmt, DropStmt) || ((DropStmt *) stmt)->removeType != OBJECT_EXTENSION)
		return false;
	foreach(lc, ((DropStmt *) stmt)->objects)
		if (strcmp(strVal(lfirst(lc)), "notiflow") == 0)
			return true;
	return false;
}

/* True for COMMIT PREPARED. */
static bool
commits_prepared(Node *stmt)
{
	return IsA(stmt, TransactionStmt) &&
		((TransactionStmt *) stmt)->kind == TRANS_STMT_COMMIT_PREPARED;
}

/*
 * Lets DROP DATABASE through: the workers leave the database first.  After
 * DROP EXTENSION notiflow the launcher reads the Kafka subscriptions again
 * (there are none left), so the consumers stop.  After COMMIT PREPARED the
 * dispatchers are woken: the prepared transaction may have queued
 * deliveries, and its own commit callback ran at PREPARE TRANSACTION, when
 * nothing was visible yet.  (The prepared transaction is committed when
 * FinishPreparedTransaction returns.)  A transaction that changed Kafka
 * subscriptions cannot be prepared (wake_xact_callback).
 */
static void
notiflow_process_utility(PlannedStmt *pstmt, const char *queryString, bool readOnlyTree,
						 ProcessUtilityContext context, ParamListInfo params,
						 QueryEnvironment *queryEnv, DestReceiver *dest, QueryCompletion *qc)
{
	if (drops_notiflow(pstmt->utilityStmt))
		notiflow_kafka_sync_at_commit();	/* dropping the tables fires no trigger */
	PG_TRY();
	{
		/* in the PG_TRY: a cancel during its wait must not leave the mark set */
		if (IsA(pstmt->utilityStmt, DropdbStmt))
			leave_database(((DropdbStmt *) pstmt->utilityStmt)->dbname, context);
		if (prev_process_utility_hook)
			prev_process_utility_hook(pstmt, queryString, readOnlyTree, context, params,
									  queryEnv, dest, qc);
		else
			standard_ProcessUtility(pstmt, queryString, readOnlyTree, context, params,
									queryEnv, dest, qc);
		if (commits_prepared(pstmt->utilityStmt))
			wake_dispatchers();	/* one latch each: cheap even when it queued nothing */
	}
	PG_FINALLY();
	{
		/* only this backend's mark: another drop of the database may still be waiting */
		if (notiflow_shared != NULL && IsA(pstmt->utilityStmt, DropdbStmt) &&
			clear_dropping_mark(MyProcPid))
		{
			Latch	   *latch;

			SpinLockAcquire(&notiflow_shared->mutex);
			latch = notiflow_shared->launcher_latch;
			SpinLockRelease(&notiflow_shared->mutex);
			if (latch)
				SetLatch(latch);
		}
	}
	PG_END_TRY();
}

void
notiflow_workers_register(void)
{
	BackgroundWorker worker;

	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = notiflow_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = notiflow_shmem_startup;
	prev_process_utility_hook = ProcessUtility_hook;
	ProcessUtility_hook = notiflow_process_utility;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = 5;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "notiflow");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "notiflow_launcher_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "notiflow launcher");
	snprintf(worker.bgw_type, BGW_MAXLEN, "notiflow launcher");
	RegisterBackgroundWorker(&worker);
}
