/*
 * cron_remote.c — notiflow.cron_call(operation, jobnames, schedules,
 * commands): schedules, unschedules or reads notiflow's maintenance jobs in
 * pg_cron for the current database, wherever pg_cron lives.
 *
 * pg_cron keeps its jobs in one database (cron.database_name), and its
 * functions can only be called there.  When that is the current database,
 * the operation runs here through SPI, inside the caller's transaction.  When
 * it is another one, a short-lived dynamic background worker ("notiflow
 * cron") does it:
 *
 *   - the caller checks what connecting would check (the database exists and
 *     accepts connections, the current role may log in and has CONNECT on
 *     it), so the usual mistakes give a plain error instead of a failed
 *     worker;
 *   - it writes the request into a DSM segment and registers the worker with
 *     bgw_notify_pid = its own pid (no slot free: an error naming
 *     max_worker_processes);
 *   - the worker connects to pg_cron's database as the calling role
 *     (GetUserId() of the caller: the jobs belong to that role, and pg_cron
 *     checks that role's privileges; no password, and pg_hba.conf is not
 *     consulted, as for every background worker), runs the operation in one
 *     transaction of its own, writes the result (JSON) or the error
 *     (SQLSTATE, message, detail, hint) into the segment and exits;
 *   - the caller waits for its exit, then returns the result or raises the
 *     error with the worker's SQLSTATE.  A caller interrupted while waiting
 *     terminates the worker.
 *
 * The worker's transaction commits or aborts on its own: it is not rolled
 * back with the caller's.  An error while the worker connects (a FATAL, from
 * which it cannot recover) is caught by an emit_log_hook, so the caller sees
 * it too.  The library need not be preloaded: the postmaster loads it by
 * name into the worker.
 *
 * The operations (the SQL is here because it runs in pg_cron's database, where
 * notiflow may not be installed; search_path is pg_catalog, pg_temp):
 *   schedule   — for each job: left alone when pg_cron has it unchanged (name,
 *                role, schedule, command, database) and active, else
 *                cron.schedule_in_database() (which replaces a job of the
 *                same name and role, keeping its id; a deactivated one is
 *                unscheduled first: it comes back active, with a new id);
 *                result {jobname: jobid}
 *   unschedule — cron.unschedule() of the current role's jobs of these names;
 *                result {"removed": n}
 *   status     — the jobs of these names visible to the current role, with
 *                their last run; result [{jobname, jobid, ...}]
 * Each returns NULL when the pg_cron extension does not exist there.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_database.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "port/atomics.h"
#include "postmaster/bgworker.h"
#include "storage/dsm.h"
#include "storage/ipc.h"
#include "tcop/tcopprot.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

PG_FUNCTION_INFO_V1(cron_call);
PG_FUNCTION_INFO_V1(cron_database);

extern PGDLLEXPORT void notiflow_cron_main(Datum arg);

/* Room for the worker's answer (three jobs need well under 8 kB). */
#define CRON_RESULT_SIZE (64 * 1024)
#define CRON_TEXT_SIZE 1024
/* What is kept of a job's last return message in status. */
#define CRON_RETURN_MESSAGE_CHARS 500

typedef enum CronOperation
{
	CRON_SCHEDULE,
	CRON_UNSCHEDULE,
	CRON_STATUS
} CronOperation;

typedef enum CronOutcome
{
	CRON_PENDING = 0,			/* the worker has not answered (yet) */
	CRON_DONE,					/* result holds the answer */
	CRON_NO_EXTENSION,			/* pg_cron is not created in that database */
	CRON_FAILED					/* sqlerrcode, message, detail, hint */
} CronOutcome;

/* The DSM segment shared by the caller and its worker. */
typedef struct CronTask
{
	/* the request, written by the caller before the worker starts */
	CronOperation operation;
	Oid			database;		/* pg_cron's database */
	Oid			role;			/* connect as */
	char		target[NAMEDATALEN];	/* the database the jobs run in */
	int			njobs;
	Size		request_size;	/* data: jobname\0schedule\0command\0 per job */

	/* the answer, written by the worker; outcome last */
	int			sqlerrcode;
	char		message[CRON_TEXT_SIZE];
	char		detail[CRON_TEXT_SIZE];
	char		hint[CRON_TEXT_SIZE];
	Size		result_size;	/* data + request_size: the result, JSON */
	volatile CronOutcome outcome;
	char		data[FLEXIBLE_ARRAY_MEMBER];
} CronTask;

#define CRON_TASK_SIZE(request_size) \
	(offsetof(CronTask, data) + (request_size) + CRON_RESULT_SIZE + 1)

/* The jobs of a request. */
typedef struct CronJobs
{
	int			n;
	char	  **jobnames;
	char	  **schedules;
	char	  **commands;
} CronJobs;

static const char *const operation_names[] = {"schedule", "unschedule", "status"};
static const char *const operation_verbs[] = {"schedule", "unschedule", "read"};

/* The task of the worker, for its emit_log_hook. */
static CronTask *worker_task = NULL;
static emit_log_hook_type prev_emit_log_hook = NULL;

/* ---------------------------------------------------------------------------
 * The operations (SPI, in the current transaction of pg_cron's database)
 */

/* Runs one statement with text arguments (NULL argtypes: all text); errors out when it fails. */
static void
run_sql(const char *sql, int nargs, Oid *argtypes, Datum *values)
{
	Oid			types[4] = {TEXTOID, TEXTOID, TEXTOID, TEXTOID};
	int			rc;

	Assert(nargs <= 4);
	rc = SPI_execute_with_args(sql, nargs, argtypes ? argtypes : types, values, NULL, false, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "notiflow: statement failed: %s (%s)", SPI_result_code_string(rc), sql);
}

/* Returns the text[] of the job names. */
static Datum
jobname_array(const CronJobs *jobs)
{
	Datum	   *elems = palloc(sizeof(Datum) * Max(jobs->n, 1));

	for (int i = 0; i < jobs->n; i++)
		elems[i] = CStringGetTextDatum(jobs->jobnames[i]);
	return PointerGetDatum(construct_array(elems, jobs->n, TEXTOID, -1, false, TYPALIGN_INT));
}

/* schedule: appends {jobname: jobid, ...} to out. */
static void
schedule_jobs(const CronJobs *jobs, const char *target, StringInfo out)
{
	appendStringInfoChar(out, '{');
	for (int i = 0; i < jobs->n; i++)
	{
		Datum		args[4];
		bool		isnull = true;
		int64		jobid = 0;

		args[0] = CStringGetTextDatum(jobs->jobnames[i]);
		args[1] = CStringGetTextDatum(jobs->schedules[i]);
		args[2] = CStringGetTextDatum(jobs->commands[i]);
		args[3] = CStringGetTextDatum(target);
		run_sql("SELECT c.jobid FROM cron.job c"
				" WHERE c.jobname = $1 AND c.username = CURRENT_USER AND c.schedule = $2"
				"   AND c.command = $3 AND c.database = $4 AND c.active"
				" ORDER BY c.jobid LIMIT 1",
				4, NULL, args);
		if (SPI_processed == 1)
			jobid = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		if (isnull)
		{
			/*
			 * new, changed or deactivated: pg_cron replaces a job of the same
			 * name and role, but (1.4) leaves one deactivated inactive, so
			 * that one is removed first and comes back with a new id
			 */
			run_sql("SELECT cron.unschedule(c.jobid) FROM cron.job c"
					" WHERE c.jobname = $1 AND c.username = CURRENT_USER AND NOT c.active",
					1, NULL, args);
			run_sql("SELECT cron.schedule_in_database($1, $2, $3, $4)", 4, NULL, args);
			jobid = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		}
		if (i > 0)
			appendStringInfoString(out, ", ");
		escape_json(out, jobs->jobnames[i]);
		appendStringInfo(out, ": " INT64_FORMAT, jobid);
	}
	appendStringInfoChar(out, '}');
}

/* unschedule: appends {"removed": n} to out. */
static void
unschedule_jobs(const CronJobs *jobs, StringInfo out)
{
	Oid			array_type = TEXTARRAYOID;
	Oid			int8_type = INT8OID;
	Datum		names = jobname_array(jobs);
	int64	   *ids;
	uint64		n;

	run_sql("SELECT c.jobid FROM cron.job c"
			" WHERE c.jobname = ANY ($1) AND c.username = CURRENT_USER ORDER BY c.jobid",
			1, &array_type, &names);
	n = SPI_processed;
	ids = palloc(sizeof(int64) * Max(n, 1));
	for (uint64 i = 0; i < n; i++)
	{
		bool		isnull;

		ids[i] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull));
	}
	for (uint64 i = 0; i < n; i++)
	{
		Datum		id = Int64GetDatum(ids[i]);

		run_sql("SELECT cron.unschedule($1)", 1, &int8_type, &id);
	}
	appendStringInfo(out, "{\"removed\": " UINT64_FORMAT "}", n);
}

/* status: appends the jobs of these names and their last run, a JSON array, to out. */
static void
job_status(const CronJobs *jobs, StringInfo out)
{
	Oid			array_type = TEXTARRAYOID;
	Datum		names = jobname_array(jobs);

	run_sql("SELECT coalesce(jsonb_agg(jsonb_build_object("
			"         'jobname', c.jobname, 'jobid', c.jobid, 'username', c.username, 'active', c.active,"
			"         'schedule', c.schedule, 'command', c.command, 'database', c.database,"
			"         'last_status', r.status, 'last_start', r.start_time, 'last_end', r.end_time,"
			"         'last_message', left(r.return_message, " CppAsString2(CRON_RETURN_MESSAGE_CHARS) "))"
			"       ORDER BY c.jobname, c.username), '[]')::text"
			"  FROM cron.job c"
			"  LEFT JOIN LATERAL (SELECT d.status, d.start_time, d.end_time, d.return_message"
			"                       FROM cron.job_run_details d WHERE d.jobid = c.jobid"
			"                      ORDER BY d.runid DESC LIMIT 1) r ON true"
			" WHERE c.jobname = ANY ($1)",
			1, &array_type, &names);
	appendStringInfoString(out, SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1));
}

/*
 * Runs an operation in the current transaction and returns its result, JSON
 * (allocated in the caller's memory context), or NULL when pg_cron's
 * extension does not exist in this database.
 */
static char *
run_operation(CronOperation op, const CronJobs *jobs, const char *target)
{
	StringInfoData out;

	if (!OidIsValid(get_extension_oid("pg_cron", true)))
		return NULL;
	initStringInfo(&out);		/* outside SPI: repalloc keeps it there */
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "notiflow: SPI_connect failed");
	switch (op)
	{
		case CRON_SCHEDULE:
			schedule_jobs(jobs, target, &out);
			break;
		case CRON_UNSCHEDULE:
			unschedule_jobs(jobs, &out);
			break;
		case CRON_STATUS:
			job_status(jobs, &out);
			break;
	}
	SPI_finish();
	return out.data;
}

/* ---------------------------------------------------------------------------
 * The worker
 */

/* Keeps the first error of the worker in its task (once). */
static void
record_error(CronTask *task, ErrorData *edata)
{
	if (task->outcome != CRON_PENDING)
		return;
	task->sqlerrcode = edata->sqlerrcode;
	strlcpy(task->message, edata->message ? edata->message : "unknown error", CRON_TEXT_SIZE);
	strlcpy(task->detail, edata->detail ? edata->detail : "", CRON_TEXT_SIZE);
	strlcpy(task->hint, edata->hint ? edata->hint : "", CRON_TEXT_SIZE);
	pg_write_barrier();
	task->outcome = CRON_FAILED;
}

/* emit_log_hook of the worker: errors it cannot catch (FATAL while connecting) reach the caller too. */
static void
capture_error(ErrorData *edata)
{
	if (worker_task != NULL && edata->elevel >= ERROR)
		record_error(worker_task, edata);
	if (prev_emit_log_hook)
		prev_emit_log_hook(edata);
}

/* Reads the jobs of a request (pointers into the segment). */
static void
read_request(CronTask *task, CronJobs *jobs)
{
	char	   *p = task->data;

	jobs->n = task->njobs;
	jobs->jobnames = palloc(sizeof(char *) * Max(jobs->n, 1));
	jobs->schedules = palloc(sizeof(char *) * Max(jobs->n, 1));
	jobs->commands = palloc(sizeof(char *) * Max(jobs->n, 1));
	for (int i = 0; i < jobs->n; i++)
	{
		jobs->jobnames[i] = p;
		p += strlen(p) + 1;
		jobs->schedules[i] = p;
		p += strlen(p) + 1;
		jobs->commands[i] = p;
		p += strlen(p) + 1;
	}
	Assert(p == task->data + task->request_size);
}

/* Entry point of the "notiflow cron" worker; main_arg is the handle of its DSM segment. */
void
notiflow_cron_main(Datum main_arg)
{
	dsm_segment *seg;
	CronTask   *task;
	CronJobs	jobs;
	volatile bool has_extension = false;

	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	seg = dsm_attach(DatumGetUInt32(main_arg));
	if (seg == NULL)
		proc_exit(0);			/* the caller is gone: nobody to answer */
	dsm_pin_mapping(seg);
	task = dsm_segment_address(seg);
	worker_task = task;
	prev_emit_log_hook = emit_log_hook;
	emit_log_hook = capture_error;

	BackgroundWorkerInitializeConnectionByOid(task->database, task->role, 0);
	SetConfigOption("search_path", "pg_catalog, pg_temp", PGC_USERSET, PGC_S_SESSION);
	read_request(task, &jobs);

	PG_TRY();
	{
		char	   *activity = psprintf("notiflow: %s pg_cron jobs of database \"%s\"",
										operation_names[task->operation], task->target);
		char	   *result;

		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		PushActiveSnapshot(GetTransactionSnapshot());
		pgstat_report_activity(STATE_RUNNING, activity);
		result = run_operation(task->operation, &jobs, task->target);
		if (result != NULL)
		{
			Size		len = strlen(result);

			if (len > CRON_RESULT_SIZE)
				ereport(ERROR,
						(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
						 errmsg("pg_cron's answer is too large (%zu bytes)", len),
						 errdetail("At most %d bytes fit.", CRON_RESULT_SIZE)));
			memcpy(task->data + task->request_size, result, len + 1);
			task->result_size = len;
			has_extension = true;
		}
		PopActiveSnapshot();
		CommitTransactionCommand();
		pgstat_report_activity(STATE_IDLE, NULL);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(TopMemoryContext);
		edata = CopyErrorData();
		record_error(task, edata);
		PG_RE_THROW();			/* logged, and the transaction aborted, on the way out */
	}
	PG_END_TRY();

	pg_write_barrier();
	task->outcome = has_extension ? CRON_DONE : CRON_NO_EXTENSION;
	worker_task = NULL;
	proc_exit(0);
}

/* ---------------------------------------------------------------------------
 * The caller
 */

/* Errors out, plainly, when the worker could not connect to pg_cron's database as role. */
static void
check_can_connect(Oid database, const char *dbname, Oid role)
{
	HeapTuple	tuple;
	bool		canlogin;
	bool		allowconn;

	tuple = SearchSysCache1(AUTHOID, ObjectIdGetDatum(role));
	if (!HeapTupleIsValid(tuple))
		elog(ERROR, "notiflow: cache lookup failed for role %u", role);
	canlogin = ((Form_pg_authid) GETSTRUCT(tuple))->rolcanlogin;
	ReleaseSysCache(tuple);
	if (!canlogin)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("role \"%s\" may not log in to pg_cron's database \"%s\"",
						GetUserNameFromId(role, false), dbname),
				 errdetail("The pg_cron jobs of this database are managed from database \"%s\" "
						   "by a background worker connected as the current role, which has no LOGIN.",
						   dbname),
				 errhint("Call this as a role with LOGIN (the jobs run as that role).")));

	tuple = SearchSysCache1(DATABASEOID, ObjectIdGetDatum(database));
	if (!HeapTupleIsValid(tuple))
		elog(ERROR, "notiflow: cache lookup failed for database %u", database);
	allowconn = ((Form_pg_database) GETSTRUCT(tuple))->datallowconn;
	ReleaseSysCache(tuple);
	if (!allowconn)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("pg_cron's database \"%s\" does not accept connections", dbname),
				 errhint("ALTER DATABASE %s ALLOW_CONNECTIONS true, or correct cron.database_name.",
						 quote_identifier(dbname))));

	if (!superuser_arg(role) && pg_database_aclcheck(database, role, ACL_CONNECT) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for database %s", dbname),
				 errdetail("The pg_cron jobs of this database are managed from pg_cron's database \"%s\" "
						   "as the current role, \"%s\", which may not connect to it.",
						   dbname, GetUserNameFromId(role, false)),
				 errhint("GRANT CONNECT ON DATABASE %s TO %s.",
						 quote_identifier(dbname), quote_identifier(GetUserNameFromId(role, false)))));
}

/*
 * Runs an operation in pg_cron's database cron_db through a worker and
 * returns its result (NULL: no pg_cron extension there); raises the worker's
 * error.
 */
static char *
run_in_cron_database(const char *cron_db, CronOperation op, const CronJobs *jobs, const char *target)
{
	Oid			database = get_database_oid(cron_db, true);
	Oid			role = GetUserId();
	Size		request_size = 0;
	dsm_segment *seg;
	CronTask   *task;
	char	   *p;
	BackgroundWorker worker;
	BackgroundWorkerHandle *handle;
	volatile BgwHandleStatus status;
	char	   *result = NULL;

	if (!OidIsValid(database))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_DATABASE),
				 errmsg("pg_cron's database \"%s\" does not exist", cron_db),
				 errdetail("cron.database_name names it."),
				 errhint("Create that database and CREATE EXTENSION pg_cron in it, or correct cron.database_name.")));
	check_can_connect(database, cron_db, role);

	for (int i = 0; i < jobs->n; i++)
		request_size += strlen(jobs->jobnames[i]) + strlen(jobs->schedules[i]) + strlen(jobs->commands[i]) + 3;
	seg = dsm_create(CRON_TASK_SIZE(request_size), 0);
	task = dsm_segment_address(seg);
	memset(task, 0, offsetof(CronTask, data));
	task->operation = op;
	task->database = database;
	task->role = role;
	strlcpy(task->target, target, NAMEDATALEN);
	task->njobs = jobs->n;
	task->request_size = request_size;
	task->outcome = CRON_PENDING;
	p = task->data;
	for (int i = 0; i < jobs->n; i++)
	{
		p = stpcpy(p, jobs->jobnames[i]) + 1;
		p = stpcpy(p, jobs->schedules[i]) + 1;
		p = stpcpy(p, jobs->commands[i]) + 1;
	}

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	/* also on a hot standby, where it fails (read-only) instead of never starting */
	worker.bgw_start_time = BgWorkerStart_ConsistentState;
	worker.bgw_restart_time = BGW_NEVER_RESTART;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "notiflow");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "notiflow_cron_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "notiflow cron for database %s", target);
	snprintf(worker.bgw_type, BGW_MAXLEN, "notiflow cron");
	worker.bgw_main_arg = UInt32GetDatum(dsm_segment_handle(seg));
	worker.bgw_notify_pid = MyProcPid;
	if (!RegisterDynamicBackgroundWorker(&worker, &handle))
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("could not %s the notiflow maintenance jobs: no background worker slot is free",
						operation_verbs[op]),
				 errdetail("pg_cron lives in database \"%s\", which is reached through a background worker.",
						   cron_db),
				 errhint("Try again when fewer background workers run, or raise max_worker_processes.")));

	PG_TRY();
	{
		status = WaitForBackgroundWorkerShutdown(handle);
	}
	PG_CATCH();
	{
		/* interrupted (cancel, statement_timeout): do not leave the worker behind */
		TerminateBackgroundWorker(handle);
		PG_RE_THROW();
	}
	PG_END_TRY();
	if (status == BGWH_POSTMASTER_DIED)
		ereport(ERROR,
				(errcode(ERRCODE_ADMIN_SHUTDOWN),
				 errmsg("could not %s the notiflow maintenance jobs: the postmaster exited", operation_verbs[op])));

	pg_read_barrier();
	switch (task->outcome)
	{
		case CRON_DONE:
			result = pnstrdup(task->data + task->request_size, task->result_size);
			break;
		case CRON_NO_EXTENSION:
			break;
		case CRON_FAILED:
			ereport(ERROR,
					(errcode(task->sqlerrcode ? task->sqlerrcode : ERRCODE_INTERNAL_ERROR),
					 errmsg("could not %s the notiflow maintenance jobs in pg_cron's database \"%s\": %s",
							operation_verbs[op], cron_db, task->message),
					 task->detail[0] ? errdetail_internal("%s", task->detail)
					 : errdetail("A background worker ran the request in database \"%s\" as role \"%s\"; "
								 "it changed nothing.", cron_db, GetUserNameFromId(role, false)),
					 task->hint[0] ? errhint("%s", task->hint)
					 : task->sqlerrcode == ERRCODE_INSUFFICIENT_PRIVILEGE
					 ? errhint("In database \"%s\" the role needs USAGE on schema cron, and EXECUTE on "
							   "cron.schedule_in_database() to schedule (pg_cron grants it to nobody).", cron_db)
					 : 0));
			break;
		case CRON_PENDING:
			ereport(ERROR,
					(errcode(ERRCODE_INTERNAL_ERROR),
					 errmsg("could not %s the notiflow maintenance jobs: the background worker reaching "
							"pg_cron's database \"%s\" exited without an answer", operation_verbs[op], cron_db),
					 errhint("See the server log.")));
			break;
	}
	dsm_detach(seg);
	return result;
}

/* Deconstructs a text[] argument without nulls; *n is its length. */
static char **
text_array_arg(FunctionCallInfo fcinfo, int argno, const char *name, int *n)
{
	Datum	   *elems;
	bool	   *nulls;
	char	  **out;

	deconstruct_array_builtin(PG_GETARG_ARRAYTYPE_P(argno), TEXTOID, &elems, &nulls, n);
	out = palloc(sizeof(char *) * Max(*n, 1));
	for (int i = 0; i < *n; i++)
	{
		if (nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("%s must not contain nulls", name),
					 errdetail("%s[%d] is null.", name, i + 1)));
		out[i] = TextDatumGetCString(elems[i]);
	}
	return out;
}

/* cron.database_name (pg_cron keeps it from non-superusers; notiflow tells where its jobs go), or NULL. */
static const char *
cron_database_name(void)
{
	const char *name = GetConfigOption("cron.database_name", true, false);

	return name == NULL || name[0] == '\0' ? NULL : name;
}

/* notiflow.cron_database() → pg_cron's database: this one when pg_cron is here, else cron.database_name, or NULL. */
Datum
cron_database(PG_FUNCTION_ARGS)
{
	const char *name;

	if (OidIsValid(get_extension_oid("pg_cron", true)))
		name = get_database_name(MyDatabaseId);
	else
		name = cron_database_name();
	if (name == NULL)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(name));
}

/*
 * notiflow.cron_call(operation text, jobnames text[], schedules text[],
 * commands text[]) → jsonb, or NULL when pg_cron is not there.
 */
Datum
cron_call(PG_FUNCTION_ARGS)
{
	char	   *opname = text_to_cstring(PG_GETARG_TEXT_PP(0));
	CronOperation op = CRON_SCHEDULE;
	CronJobs	jobs;
	int			nschedules;
	int			ncommands;
	const char *target = get_database_name(MyDatabaseId);
	const char *cron_db;
	char	   *result;
	bool		found = false;

	for (int i = 0; i < (int) lengthof(operation_names); i++)
		if (strcmp(opname, operation_names[i]) == 0)
		{
			op = (CronOperation) i;
			found = true;
		}
	if (!found)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown pg_cron operation \"%s\"", opname),
				 errdetail("operation: expected schedule, unschedule or status")));
	jobs.jobnames = text_array_arg(fcinfo, 1, "jobnames", &jobs.n);
	jobs.schedules = text_array_arg(fcinfo, 2, "schedules", &nschedules);
	jobs.commands = text_array_arg(fcinfo, 3, "commands", &ncommands);
	if (nschedules != jobs.n || ncommands != jobs.n)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("jobnames, schedules and commands must have the same length"),
				 errdetail("jobnames: %d, schedules: %d, commands: %d", jobs.n, nschedules, ncommands)));

	if (OidIsValid(get_extension_oid("pg_cron", true)))
		result = run_operation(op, &jobs, target);
	else
	{
		cron_db = cron_database_name();
		if (cron_db == NULL || strcmp(cron_db, target) == 0)
			PG_RETURN_NULL();
		result = run_in_cron_database(cron_db, op, &jobs, target);
	}
	if (result == NULL)
		PG_RETURN_NULL();
	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(result)));
}
