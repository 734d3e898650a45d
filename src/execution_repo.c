/*
 * execution_repo.c — data access for executions and their steps.
 *
 * Callers are connected to SPI.  Rows are written set-based (arrays unnested
 * in one statement) so that a trigger, or a fan-out to thousands of
 * recipients, costs a fixed number of statements.  An execution's steps are
 * stored in its own row (executions.steps, a jsonb array read through the
 * view execution_steps): one heap tuple per execution instead of one per
 * node, and a resume rewrites them with the HOT update of its status.
 */
#include "postgres.h"

#include "access/twophase.h"
#include "catalog/pg_type.h"
#include "commands/sequence.h"
#include "miscadmin.h"
#include "storage/lock.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/jsonb.h"

#include "access/xact.h"

#include "delivery_repo.h"
#include "execution_repo.h"
#include "jsonb_util.h"
#include "notiflow.h"
#include "row_writer.h"
#include "spi_util.h"
#include "worker.h"

/*
 * An idempotency key outlives retention: an execution archived
 * (notiflow_archive.executions) still answers for its key, or a message
 * read again from a topic that keeps more than notiflow.retention, or a
 * client's retry, started it again.  The live one first (Append keeps the
 * order; the archive is not read when it is found).
 */
static SpiStatement find_idempotent_stmt = {
	"SELECT id FROM notiflow.executions WHERE workflow_key = $1 AND idempotency_key = $2"
	" UNION ALL"
	" SELECT id FROM notiflow_archive.executions WHERE workflow_key = $1 AND idempotency_key = $2"
	" LIMIT 1",
	2, {TEXTOID, TEXTOID}
};

/*
 * The parts of the statement that writes new executions with their
 * deliveries: $1–$10 the executions' columns (execution_row) and $11, $12
 * their workflow key and version, $13–$20 their deliveries
 * (delivery_repo_row), each column an array.
 */
#define NEW_EXECUTIONS \
	"  INSERT INTO notiflow.executions AS x" \
	"         (id, workflow_key, workflow_version, status, payload, context, recipient," \
	"          subscriber_id, idempotency_key, error, wake_at, steps, finished_at)" \
	"  SELECT t.id, $11, $12, t.status, t.payload, t.context, t.recipient, t.subscriber_id," \
	"         t.idempotency_key, t.error, t.wake_at, t.steps," \
	"         CASE WHEN t.status IN ('completed', 'failed', 'cancelled') THEN now() END" \
	"    FROM unnest($1::int8[], $2::text[], $3::jsonb[], $4::jsonb[], $5::jsonb[]," \
	"                $6::text[], $7::text[], $8::text[], $9::timestamptz[], $10::jsonb[])" \
	"         AS t(id, status, payload, context, recipient, subscriber_id, idempotency_key, error," \
	"              wake_at, steps)"
#define NEW_DELIVERIES \
	"  INSERT INTO notiflow.deliveries" \
	"         (execution_id, node_id, channel, provider, recipient, content, status," \
	"          last_error, finished_at)" \
	"  SELECT v.e, v.n, v.c, v.p, v.r, v.ct, v.s, v.err, CASE WHEN v.s <> 'queued' THEN now() END" \
	"    FROM unnest($13::int8[], $14::text[], $15::text[], $16::text[], $17::text[]," \
	"                $18::jsonb[], $19::text[], $20::text[]) AS v(e, n, c, p, r, ct, s, err)"
#define NEW_ARGTYPES \
	{INT8ARRAYOID, TEXTARRAYOID, JSONBARRAYOID, JSONBARRAYOID, JSONBARRAYOID, \
	 TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID, TIMESTAMPTZARRAYOID, JSONBARRAYOID, \
	 TEXTOID, INT4OID, \
	 INT8ARRAYOID, TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID, \
	 JSONBARRAYOID, TEXTARRAYOID, TEXTARRAYOID}

/*
 * New executions with their deliveries in one statement: one executor start
 * instead of two.  An execution whose idempotency key is taken is skipped
 * (ON CONFLICT DO NOTHING), and so are its deliveries.
 */
static SpiStatement insert_stmt = {
	"WITH e AS (" NEW_EXECUTIONS " ON CONFLICT DO NOTHING RETURNING x.id),"
	" d AS (" NEW_DELIVERIES " WHERE v.e IN (SELECT id FROM e))"
	" SELECT id FROM e",
	20, NEW_ARGTYPES
};

/*
 * The same without idempotency keys: nothing can conflict, so no arbiter
 * index check and no semi-joins (their hash joins were a tenth of a
 * trigger's CPU).
 */
static SpiStatement insert_plain_stmt = {
	"WITH e AS (" NEW_EXECUTIONS "), d AS (" NEW_DELIVERIES ")"
	" SELECT 1",
	20, NEW_ARGTYPES
};

static SpiStatement lock_idempotency_stmt = {
	"SELECT pg_advisory_xact_lock(hashtextextended('notiflow.idempotency:' || $1 || '/' || $2, 0))",
	2, {TEXTOID, TEXTOID}
};

static SpiStatement due_stmt = {
	"SELECT id FROM notiflow.executions"
	" WHERE status = 'waiting' AND wake_at <= now() AND NOT (id = ANY ($2))"
	" ORDER BY wake_at LIMIT $1 FOR UPDATE SKIP LOCKED",
	2, {INT4OID, INT8ARRAYOID}
};

static SpiStatement lock_many_stmt = {
	"SELECT e.id, e.workflow_key, e.workflow_version, e.status, e.payload, e.context, e.recipient,"
	"       e.subscriber_id, e.created_at, e.steps, e.ctid, e.error"
	"  FROM unnest($1::int8[]) AS k(wanted) JOIN notiflow.executions e ON e.id = k.wanted"
	" ORDER BY e.id FOR UPDATE OF e",
	1, {INT8ARRAYOID}
};

/*
 * Writes back executions locked by lock_many_stmt, each fetched by the row
 * version locked (a TID scan per row, no descent of the primary key; the
 * lock holds a version in place).  The id check is a guard.  Should the
 * transaction itself have changed a row since (a user's trigger, say), that
 * row has another version and is not returned: update_many_by_id_stmt then
 * writes it by id.
 */
static SpiStatement update_many_stmt = {
	"UPDATE notiflow.executions x"
	"   SET status = t.s, context = t.c, error = t.err, wake_at = t.w, steps = t.st, updated_at = now(),"
	"       finished_at = CASE WHEN t.s IN ('completed', 'failed', 'cancelled') THEN now() END"
	"  FROM unnest($1::int8[], $2::text[], $3::jsonb[], $4::text[], $5::timestamptz[], $6::jsonb[],"
	"              $7::tid[]) AS t(id, s, c, err, w, st, v)"
	" WHERE x.ctid = t.v AND x.id = t.id"
	" RETURNING x.id",
	7, {INT8ARRAYOID, TEXTARRAYOID, JSONBARRAYOID, TEXTARRAYOID, TIMESTAMPTZARRAYOID, JSONBARRAYOID,
	TIDARRAYOID}
};

static SpiStatement update_many_by_id_stmt = {
	"UPDATE notiflow.executions x"
	"   SET status = t.s, context = t.c, error = t.err, wake_at = t.w, steps = t.st, updated_at = now(),"
	"       finished_at = CASE WHEN t.s IN ('completed', 'failed', 'cancelled') THEN now() END"
	"  FROM unnest($1::int8[], $2::text[], $3::jsonb[], $4::text[], $5::timestamptz[], $6::jsonb[])"
	"       AS t(id, s, c, err, w, st)"
	" WHERE x.id = t.id",
	6, {INT8ARRAYOID, TEXTARRAYOID, JSONBARRAYOID, TEXTARRAYOID, TIMESTAMPTZARRAYOID, JSONBARRAYOID}
};

/* Locks executions, in id order (the order every path takes them in). */
static SpiStatement lock_ids_stmt = {
	"SELECT 1 FROM notiflow.executions WHERE id = ANY ($1::int8[]) ORDER BY id FOR UPDATE",
	1, {INT8ARRAYOID}
};

static SpiStatement wake_now_stmt = {
	"UPDATE notiflow.executions SET wake_at = now(), updated_at = now()"
	" WHERE id = ANY ($1::int8[]) AND status = 'waiting' AND (wake_at IS NULL OR wake_at > now())",
	1, {INT8ARRAYOID}
};

static SpiStatement fail_stmt = {
	"UPDATE notiflow.executions"
	"   SET status = 'failed', error = $2, wake_at = NULL, updated_at = now(), finished_at = now()"
	" WHERE id = $1 AND status IN ('running', 'waiting')",
	2, {INT8OID, TEXTOID}
};

static SpiStatement lock_idempotency_many_stmt = {
	"SELECT count(pg_advisory_xact_lock(hashtextextended('notiflow.idempotency:' || $1 || '/' || k, 0)))"
	"  FROM (SELECT DISTINCT k FROM unnest($2::text[]) AS u(k) ORDER BY k) AS s",
	2, {TEXTOID, TEXTARRAYOID}
};

/*
 * = ANY on the unique index: one index scan for the batch, whatever the
 * statistics say; then the archive's (see find_idempotent_stmt), whose rows
 * come after the live ones.
 */
static SpiStatement find_idempotent_many_stmt = {
	"SELECT idempotency_key, id FROM notiflow.executions"
	" WHERE workflow_key = $1 AND idempotency_key = ANY ($2::text[])"
	" UNION ALL"
	" SELECT idempotency_key, id FROM notiflow_archive.executions"
	" WHERE workflow_key = $1 AND idempotency_key = ANY ($2::text[])",
	2, {TEXTOID, TEXTARRAYOID}
};

/*
 * How many keys (idempotency or correlation keys: advisory locks held until
 * the transaction ends) one transaction may lock: a quarter of the lock
 * table every session shares.
 */
int
execution_repo_key_lock_limit(void)
{
	return Max(max_locks_per_xact * (MaxBackends + max_prepared_xacts) / 4, 1);
}

/* Returns the next value of the executions id sequence. */
int64
execution_repo_next_id(void)
{
	Oid			seq = notiflow_relid("executions_id_seq");

	if (!OidIsValid(seq))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation \"notiflow.executions_id_seq\" does not exist")));
	return nextval_internal(seq, false);
}

/* Serialises the triggers that use one idempotency key. */
void
execution_repo_lock_idempotency(const char *workflow_key, const char *key)
{
	Datum		args[2] = {CStringGetTextDatum(workflow_key), CStringGetTextDatum(key)};

	spi_run(&lock_idempotency_stmt, args, NULL, false, 0, SPI_OK_SELECT);
}

/* Finds an execution by idempotency key. */
int64
execution_repo_find_idempotent(const char *workflow_key, const char *key)
{
	Datum		args[2] = {CStringGetTextDatum(workflow_key), CStringGetTextDatum(key)};

	return spi_first_int8(&find_idempotent_stmt, args, false, 0);
}

/*
 * One execution's columns, in the order of insert_stmt's arrays $1–$10 and of
 * execution_columns: id, status, payload, context, recipient, subscriber_id,
 * idempotency_key, error, wake_at, steps.
 */
#define EXECUTION_ROW_COLUMNS 10

static void
execution_row(const ExecutionRecord *e, Datum *v, bool *n)
{
	v[0] = Int64GetDatum(e->id);
	n[0] = false;
	v[1] = CStringGetTextDatum(e->status);
	n[1] = false;
	v[2] = JsonbPGetDatum(e->payload);
	n[2] = false;
	v[3] = JsonbPGetDatum(e->context);
	n[3] = false;
	n[4] = (e->recipient == NULL);
	v[4] = e->recipient ? JsonbPGetDatum(e->recipient) : (Datum) 0;
	v[5] = spi_text_or_null(e->subscriber_id, &n[5]);
	v[6] = spi_text_or_null(e->idempotency_key, &n[6]);
	v[7] = spi_text_or_null(e->error, &n[7]);
	n[8] = (e->wake_at == 0);
	v[8] = TimestampTzGetDatum(e->wake_at);
	v[9] = JsonbPGetDatum(e->steps);
	n[9] = false;
}

/* Fills args[0..11] of insert_stmt from executions (all of one workflow version). */
static void
execution_args(List *executions, Datum *args)
{
	static const Oid types[EXECUTION_ROW_COLUMNS] = {INT8OID, TEXTOID, JSONBOID, JSONBOID,
	JSONBOID, TEXTOID, TEXTOID, TEXTOID, TIMESTAMPTZOID, JSONBOID};
	ExecutionRecord *first = linitial(executions);
	SpiColumns	cols;
	ListCell   *lc;

	spi_columns_init(&cols, EXECUTION_ROW_COLUMNS, list_length(executions));
	foreach(lc, executions)
	{
		Datum		v[EXECUTION_ROW_COLUMNS];
		bool		n[EXECUTION_ROW_COLUMNS];

		execution_row(lfirst(lc), v, n);
		spi_columns_add(&cols, v, n);
	}
	spi_columns_args(&cols, types, args);
	args[EXECUTION_ROW_COLUMNS] = CStringGetTextDatum(first->workflow_key);
	args[EXECUTION_ROW_COLUMNS + 1] = Int32GetDatum(first->version);
}

/* The columns the direct inserts give: execution_row's, then three more. */
static const char *const execution_columns[] = {
	"id", "status", "payload", "context", "recipient", "subscriber_id", "idempotency_key",
	"error", "wake_at", "steps", "workflow_key", "workflow_version", "finished_at"
};
StaticAssertDecl(lengthof(execution_columns) == EXECUTION_ROW_COLUMNS + 3,
				 "execution_columns: execution_row's columns, workflow_key, workflow_version, finished_at");

static bool
status_is_final(const char *status)
{
	return strcmp(status, "completed") == 0 || strcmp(status, "failed") == 0 ||
		strcmp(status, "cancelled") == 0;
}

/*
 * Writes the rows of execution_repo_insert without the executor
 * (row_writer.h).  Returns false, having written nothing, when a table needs
 * the statement.
 */
static bool
insert_direct(List *executions, List *deliveries)
{
	RowWriter  *ew;
	RowWriter  *dw = NULL;
	TimestampTz now = GetCurrentTransactionStartTimestamp();
	ListCell   *lc;
	bool		queued = false;

	ew = row_writer_open("executions", execution_columns, lengthof(execution_columns));
	if (ew == NULL)
		return false;
	if (deliveries != NIL && (dw = delivery_repo_open_writer()) == NULL)
	{
		row_writer_close(ew);
		return false;
	}

	foreach(lc, executions)
	{
		ExecutionRecord *e = lfirst(lc);
		Datum		v[lengthof(execution_columns)];
		bool		n[lengthof(execution_columns)] = {false};

		execution_row(e, v, n);
		v[EXECUTION_ROW_COLUMNS] = CStringGetTextDatum(e->workflow_key);
		v[EXECUTION_ROW_COLUMNS + 1] = Int32GetDatum(e->version);
		n[EXECUTION_ROW_COLUMNS + 2] = !status_is_final(e->status);
		v[EXECUTION_ROW_COLUMNS + 2] = TimestampTzGetDatum(now);
		row_writer_insert(ew, v, n);
		e->inserted = true;
	}
	foreach(lc, deliveries)
		queued |= delivery_repo_write(dw, lfirst(lc));
	if (queued)
		notiflow_wake_dispatchers_at_commit();

	row_writer_close(ew);
	if (dw)
		row_writer_close(dw);
	return true;
}

/*
 * Inserts new executions and their deliveries; marks the executions
 * inserted.  Without the executor when nothing can conflict: no execution has
 * an idempotency key, or the caller claimed them all (locked and looked up,
 * none twice) and the transaction reads committed data, so that the lookup
 * saw every execution created with them.  The statement's ON CONFLICT covers
 * the rest.
 */
void
execution_repo_insert(List *executions, List *deliveries, bool keys_claimed)
{
	Datum		args[20];
	ListCell   *lc;
	bool		keyed = false;

	foreach(lc, executions)
		keyed |= ((ExecutionRecord *) lfirst(lc))->idempotency_key != NULL;
	if ((!keyed || (keys_claimed && !IsolationUsesXactSnapshot())) &&
		insert_direct(executions, deliveries))
		return;
	execution_args(executions, args);
	if (delivery_repo_args(deliveries, args + EXECUTION_ROW_COLUMNS + 2))
		notiflow_wake_dispatchers_at_commit();
	foreach(lc, executions)
		((ExecutionRecord *) lfirst(lc))->inserted = !keyed;
	if (!keyed)
	{
		spi_run(&insert_plain_stmt, args, NULL, false, 0, SPI_OK_SELECT);
		return;
	}
	spi_run(&insert_stmt, args, NULL, false, 0, SPI_OK_SELECT);

	for (uint64 r = 0; r < SPI_processed; r++)
	{
		bool		isnull;
		int64		id = DatumGetInt64(spi_value(r, 1, &isnull));

		foreach(lc, executions)
		{
			ExecutionRecord *e = lfirst(lc);

			if (e->id == id)
			{
				e->inserted = true;
				break;
			}
		}
	}
}

/* Lists waiting executions whose delay is over, locking them; passes over n_passed_over ids. */
List *
execution_repo_due(int limit, const int64 *passed_over, int n_passed_over)
{
	Datum		args[2] = {Int32GetDatum(limit), spi_int8_array(passed_over, n_passed_over)};
	List	   *ids = NIL;

	spi_run(&due_stmt, args, NULL, false, 0, SPI_OK_SELECT);
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		bool		isnull;
		int64	   *id = palloc(sizeof(int64));

		*id = DatumGetInt64(spi_value(r, 1, &isnull));
		ids = lappend(ids, id);
	}
	return ids;
}

static List *stored_steps(Jsonb *steps);

List *
execution_repo_lock_many(int64 *ids, int n)
{
	Datum		args[1];
	List	   *locked = NIL;

	if (n == 0)
		return NIL;
	args[0] = spi_int8_array(ids, n);

	spi_run(&lock_many_stmt, args, NULL, false, 0, SPI_OK_SELECT);
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		LockedExecution *le = palloc0(sizeof(LockedExecution));
		ExecutionRecord *rec = &le->rec;
		bool		isnull;
		Datum		d;

		rec->id = DatumGetInt64(spi_value(r, 1, &isnull));
		rec->workflow_key = spi_text(r, 2);
		rec->version = DatumGetInt32(spi_value(r, 3, &isnull));
		rec->status = spi_text(r, 4);
		rec->payload = DatumGetJsonbPCopy(spi_value(r, 5, &isnull));
		rec->context = DatumGetJsonbPCopy(spi_value(r, 6, &isnull));
		d = spi_value(r, 7, &isnull);
		rec->recipient = isnull ? NULL : DatumGetJsonbPCopy(d);
		rec->subscriber_id = spi_text(r, 8);
		le->created_at = DatumGetTimestampTz(spi_value(r, 9, &isnull));
		d = spi_value(r, 10, &isnull);
		le->steps = isnull ? NIL : stored_steps(DatumGetJsonbP(d));
		ItemPointerCopy((ItemPointer) DatumGetPointer(spi_value(r, 11, &isnull)), &rec->tid);
		rec->error = spi_text(r, 12);
		locked = lappend(locked, le);
	}

	return locked;
}

/*
 * The layout of a step in executions.steps: an array (one per step, in seq
 * order) of [seq, node_id, node_type, status, outcome, output, error,
 * started_us, finished_us], the times in microseconds after the execution's
 * created_at; absent values are JSON nulls.  Compact on purpose: a trigger
 * writes it with every execution.  The view execution_steps gives it back as
 * rows with real timestamps.
 */
enum
{
	STEP_SEQ, STEP_NODE_ID, STEP_NODE_TYPE, STEP_STATUS, STEP_OUTCOME, STEP_OUTPUT, STEP_ERROR,
	STEP_STARTED_US, STEP_FINISHED_US, STEP_FIELDS
};

/* A stored step's string field, or NULL. */
static char *
step_string(JsonbContainer *step, int field)
{
	JsonbValue *v = getIthJsonbValueFromContainer(step, field);

	if (v == NULL || v->type != jbvString)
		return NULL;
	return pnstrdup(v->val.string.val, v->val.string.len);
}

char *
execution_repo_step_outcome(const StoredStep *s)
{
	return step_string(&s->stored->root, STEP_OUTCOME);
}

/* Reads executions.steps back (in seq order). */
static List *
stored_steps(Jsonb *steps)
{
	List	   *list = NIL;
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;

	if (steps == NULL || !JB_ROOT_IS_ARRAY(steps) || JB_ROOT_IS_SCALAR(steps))
		return NIL;
	it = JsonbIteratorInit(&steps->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		StoredStep *s;
		JsonbValue *f;

		if (tok != WJB_ELEM || v.type != jbvBinary)
			continue;
		s = palloc0(sizeof(StoredStep));
		s->stored = JsonbValueToJsonb(&v);
		s->node_id = step_string(&s->stored->root, STEP_NODE_ID);
		s->status = step_string(&s->stored->root, STEP_STATUS);
		s->node_type = step_string(&s->stored->root, STEP_NODE_TYPE);
		if (s->node_id == NULL || s->status == NULL)
			continue;			/* not a step: nothing to resume from */
		s->seq = jsonb_value_int(getIthJsonbValueFromContainer(&s->stored->root, STEP_SEQ), 0);
		f = getIthJsonbValueFromContainer(&s->stored->root, STEP_OUTPUT);
		if (f != NULL && f->type != jbvNull)
			s->output = JsonbValueToJsonb(f);
		list = lappend(list, s);
	}
	return list;
}

/*
 * A step as an element of executions.steps; started (when not NULL) is the
 * start time of the stored step it replaces, which it keeps.
 */
static Jsonb *
step_jsonb(const StepRecord *s, TimestampTz created_at, Jsonb *started)
{
	Jsonb	   *vals[STEP_FIELDS];

	vals[STEP_SEQ] = jsonb_make_int(s->seq);
	vals[STEP_NODE_ID] = jsonb_make_string(s->node_id);
	vals[STEP_NODE_TYPE] = jsonb_make_string(s->node_type);
	vals[STEP_STATUS] = jsonb_make_string(s->status);
	vals[STEP_OUTCOME] = s->outcome ? jsonb_make_string(s->outcome) : NULL;
	vals[STEP_OUTPUT] = s->output;
	vals[STEP_ERROR] = s->error ? jsonb_make_string(s->error) : NULL;
	vals[STEP_STARTED_US] = started ? started : jsonb_make_int(s->started_at - created_at);
	vals[STEP_FINISHED_US] = s->finished_at ? jsonb_make_int(s->finished_at - created_at) : NULL;
	return jsonb_make_array(STEP_FIELDS, vals);
}

Jsonb *
execution_repo_steps(List *stored, List *records, TimestampTz created_at)
{
	int			n_records = list_length(records);
	Jsonb	  **elems = palloc(sizeof(Jsonb *) * Max(list_length(stored) + n_records, 1));
	bool	   *placed = palloc0(sizeof(bool) * Max(n_records, 1));
	int			n = 0;
	ListCell   *lc;
	ListCell   *rc;

	foreach(lc, stored)
	{
		StoredStep *s = lfirst(lc);
		Jsonb	   *elem = s->stored;

		/* a step recorded again (a waiting one that ended) keeps its place */
		foreach(rc, records)
		{
			StepRecord *r = lfirst(rc);

			if (!placed[foreach_current_index(rc)] && strcmp(r->node_id, s->node_id) == 0)
			{
				JsonbValue *started = getIthJsonbValueFromContainer(&s->stored->root, STEP_STARTED_US);

				/* a waiting step that ended: it started when it began waiting */
				elem = step_jsonb(r, created_at,
								  started && started->type == jbvNumeric ? JsonbValueToJsonb(started) : NULL);
				placed[foreach_current_index(rc)] = true;
				break;
			}
		}
		elems[n++] = elem;
	}
	foreach(rc, records)
		if (!placed[foreach_current_index(rc)])
			elems[n++] = step_jsonb(lfirst(rc), created_at, NULL);
	return jsonb_make_array(n, elems);
}

/* The arguments of update_many_stmt (and, the first six, update_many_by_id_stmt) for recs. */
static void
update_many_args(List *recs, Datum *args)
{
	static const Oid types[7] = {INT8OID, TEXTOID, JSONBOID, TEXTOID, TIMESTAMPTZOID, JSONBOID, TIDOID};
	SpiColumns	cols;
	ListCell   *lc;

	spi_columns_init(&cols, 7, list_length(recs));
	foreach(lc, recs)
	{
		ExecutionRecord *rec = lfirst(lc);
		Datum		v[7];
		bool		n[7] = {false};

		v[0] = Int64GetDatum(rec->id);
		v[1] = CStringGetTextDatum(rec->status);
		v[2] = JsonbPGetDatum(rec->context);
		v[3] = spi_text_or_null(rec->error, &n[3]);
		v[4] = TimestampTzGetDatum(rec->wake_at);
		n[4] = (rec->wake_at == 0);
		v[5] = JsonbPGetDatum(rec->steps);
		v[6] = PointerGetDatum(&rec->tid);
		spi_columns_add(&cols, v, n);
	}
	spi_columns_args(&cols, types, args);
}

void
execution_repo_update_many(List *recs)
{
	Datum		args[7];
	HTAB	   *written;
	List	   *rest = NIL;
	ListCell   *lc;

	if (recs == NIL)
		return;
	update_many_args(recs, args);
	spi_run(&update_many_stmt, args, NULL, false, 0, SPI_OK_UPDATE_RETURNING);
	if (SPI_processed == (uint64) list_length(recs))
		return;
	/* the rows that moved to another version meanwhile, by id */
	written = spi_int64_hash("notiflow executions written", Max(SPI_processed, 1), sizeof(int64));
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		bool		isnull;
		int64		id = DatumGetInt64(spi_value(r, 1, &isnull));

		(void) hash_search(written, &id, HASH_ENTER, NULL);
	}
	foreach(lc, recs)
	{
		ExecutionRecord *rec = lfirst(lc);

		if (hash_search(written, &rec->id, HASH_FIND, NULL) == NULL)
			rest = lappend(rest, rec);
	}
	update_many_args(rest, args);
	spi_run(&update_many_by_id_stmt, args, NULL, false, 0, SPI_OK_UPDATE);
}

void
execution_repo_lock_ids(int64 *ids, int n)
{
	spi_run_with_ids(&lock_ids_stmt, ids, n, SPI_OK_SELECT);
}

void
execution_repo_wake_now(int64 *ids, int n)
{
	spi_run_with_ids(&wake_now_stmt, ids, n, SPI_OK_UPDATE);
}

bool
execution_repo_fail(int64 id, const char *error)
{
	Datum		args[2] = {Int64GetDatum(id), CStringGetTextDatum(error ? error : "failed")};

	spi_run(&fail_stmt, args, NULL, false, 0, SPI_OK_UPDATE);
	return SPI_processed > 0;
}

HTAB *
execution_repo_claim_idempotent(const char *workflow_key, List *keys)
{
	int			n = list_length(keys);
	Datum	   *elems = palloc(sizeof(Datum) * Max(n, 1));
	Datum		args[2];
	HASHCTL		ctl;
	HTAB	   *found;
	ListCell   *lc;
	int			i = 0;
	int			limit;

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = NOTIFLOW_IDEMPOTENCY_KEY_LEN;
	ctl.entrysize = sizeof(IdempotentExecution);
	ctl.hcxt = CurrentMemoryContext;
	found = hash_create("notiflow idempotency keys", Max(n, 16), &ctl, HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	if (n == 0)
		return found;

	/*
	 * Each key is locked until the transaction ends, in the lock table every
	 * session shares: a batch that filled it would fail with "out of shared
	 * memory", and make other sessions' lock requests fail meanwhile.  A
	 * batch may take a quarter of it.
	 */
	limit = execution_repo_key_lock_limit();
	if (n > limit)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("too many idempotency keys in one call"),
				 errdetail("%d executions with an idempotency key; each key is locked until the transaction ends, and at most %d fit in a quarter of the server's lock table (max_locks_per_transaction × (max_connections + worker processes + max_prepared_transactions)).",
						   n, limit),
				 errhint("Split the recipients into calls of at most %d, each in its own transaction, or raise max_locks_per_transaction.",
						 limit)));
	foreach(lc, keys)
		elems[i++] = CStringGetTextDatum((char *) lfirst(lc));
	args[0] = CStringGetTextDatum(workflow_key);
	args[1] = spi_array(elems, NULL, n, TEXTOID);
	spi_run(&lock_idempotency_many_stmt, args, NULL, false, 0, SPI_OK_SELECT);
	spi_run(&find_idempotent_many_stmt, args, NULL, false, 0, SPI_OK_SELECT);
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		char	   *key = spi_text(r, 1);
		bool		isnull;
		bool		seen;
		IdempotentExecution *e;

		if (strlen(key) >= NOTIFLOW_IDEMPOTENCY_KEY_LEN)
			continue;			/* the caller looks it up alone */
		e = hash_search(found, key, HASH_ENTER, &seen);
		/* the live one first: a key used again before the archive answered for it is in both */
		if (!seen)
			e->execution_id = DatumGetInt64(spi_value(r, 2, &isnull));
	}
	return found;
}
