/*
 * execution_repo.c — data access for executions and execution_steps.
 *
 * Callers are connected to SPI.  Rows are written set-based (arrays unnested
 * in one statement) so that a trigger, or a fan-out to thousands of
 * recipients, costs a fixed number of statements.
 */
#include "postgres.h"

#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/sequence.h"
#include "nodes/makefuncs.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"

#include "execution_repo.h"
#include "spi_util.h"

static SpiStatement find_idempotent_stmt = {
	"SELECT id FROM notiflow.executions WHERE workflow_key = $1 AND idempotency_key = $2",
	2, {TEXTOID, TEXTOID}
};

static SpiStatement insert_stmt = {
	"INSERT INTO notiflow.executions AS e"
	"       (id, workflow_key, workflow_version, status, payload, context, recipient,"
	"        subscriber_id, idempotency_key, error, wake_at, finished_at)"
	" SELECT t.id, $2, $3, t.status, t.payload, t.context, t.recipient, t.subscriber_id,"
	"        t.idempotency_key, t.error, t.wake_at,"
	"        CASE WHEN t.status IN ('completed', 'failed', 'cancelled') THEN now() END"
	"   FROM unnest($1::int8[], $4::text[], $5::jsonb[], $6::jsonb[], $7::jsonb[],"
	"               $8::text[], $9::text[], $10::text[], $11::timestamptz[])"
	"        AS t(id, status, payload, context, recipient, subscriber_id, idempotency_key, error, wake_at)"
	" ON CONFLICT DO NOTHING"
	" RETURNING e.id",
	11, {INT8ARRAYOID, TEXTOID, INT4OID, TEXTARRAYOID, JSONBARRAYOID, JSONBARRAYOID,
	JSONBARRAYOID, TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID, TIMESTAMPTZARRAYOID}
};

static SpiStatement lock_stmt = {
	"SELECT workflow_key, workflow_version, status, payload, context, recipient,"
	"       subscriber_id, created_at"
	"  FROM notiflow.executions WHERE id = $1 FOR UPDATE",
	1, {INT8OID}
};

static SpiStatement update_stmt = {
	"UPDATE notiflow.executions"
	"   SET status = $2, context = $3, error = $4, wake_at = $5, updated_at = now(),"
	"       finished_at = CASE WHEN $2 IN ('completed', 'failed', 'cancelled') THEN now() END"
	" WHERE id = $1",
	5, {INT8OID, TEXTOID, JSONBOID, TEXTOID, TIMESTAMPTZOID}
};

static SpiStatement steps_stmt = {
	"SELECT node_id, status, seq, output FROM notiflow.execution_steps"
	" WHERE execution_id = $1 ORDER BY seq",
	1, {INT8OID}
};

static SpiStatement save_steps_stmt = {
	"INSERT INTO notiflow.execution_steps AS s"
	"       (execution_id, node_id, node_type, seq, status, outcome, output, error,"
	"        started_at, finished_at)"
	" SELECT * FROM unnest($1::int8[], $2::text[], $3::text[], $4::int4[], $5::text[],"
	"                      $6::text[], $7::jsonb[], $8::text[], $9::timestamptz[],"
	"                      $10::timestamptz[])"
	" ON CONFLICT (execution_id, node_id) DO UPDATE"
	"   SET status = excluded.status, outcome = excluded.outcome, output = excluded.output,"
	"       error = excluded.error, finished_at = excluded.finished_at",
	10, {INT8ARRAYOID, TEXTARRAYOID, TEXTARRAYOID, INT4ARRAYOID, TEXTARRAYOID,
	TEXTARRAYOID, JSONBARRAYOID, TEXTARRAYOID, TIMESTAMPTZARRAYOID, TIMESTAMPTZARRAYOID}
};

static SpiStatement due_stmt = {
	"SELECT id FROM notiflow.executions"
	" WHERE status = 'waiting' AND wake_at <= now()"
	" ORDER BY wake_at LIMIT $1 FOR UPDATE SKIP LOCKED",
	1, {INT4OID}
};

/* Returns a datum for a possibly-NULL C string, setting *isnull. */
static Datum
text_or_null(const char *s, bool *isnull)
{
	*isnull = (s == NULL);
	return s ? CStringGetTextDatum(s) : (Datum) 0;
}

/* Returns the next value of the executions id sequence. */
int64
execution_repo_next_id(void)
{
	Oid			seq = RangeVarGetRelid(makeRangeVar("notiflow", "executions_id_seq", -1),
									   NoLock, false);

	return nextval_internal(seq, false);
}

/* Finds an execution by idempotency key. */
int64
execution_repo_find_idempotent(const char *workflow_key, const char *key)
{
	Datum		args[2] = {CStringGetTextDatum(workflow_key), CStringGetTextDatum(key)};
	bool		isnull;

	spi_run(&find_idempotent_stmt, args, NULL, false, 1, SPI_OK_SELECT);
	if (SPI_processed == 0)
		return 0;
	return DatumGetInt64(spi_value(0, 1, &isnull));
}

/* Inserts executions set-based and marks the ones actually inserted. */
void
execution_repo_insert(List *executions)
{
	int			n = list_length(executions);
	Datum	   *ids = palloc(sizeof(Datum) * n);
	Datum	   *status = palloc(sizeof(Datum) * n);
	Datum	   *payload = palloc(sizeof(Datum) * n);
	Datum	   *context = palloc(sizeof(Datum) * n);
	Datum	   *recipient = palloc(sizeof(Datum) * n);
	Datum	   *subscriber = palloc(sizeof(Datum) * n);
	Datum	   *idem = palloc(sizeof(Datum) * n);
	Datum	   *error = palloc(sizeof(Datum) * n);
	Datum	   *wake = palloc(sizeof(Datum) * n);
	bool	   *recipient_null = palloc(sizeof(bool) * n);
	bool	   *subscriber_null = palloc(sizeof(bool) * n);
	bool	   *idem_null = palloc(sizeof(bool) * n);
	bool	   *error_null = palloc(sizeof(bool) * n);
	bool	   *wake_null = palloc(sizeof(bool) * n);
	Datum		args[11];
	ListCell   *lc;
	int			i = 0;
	ExecutionRecord *first = linitial(executions);

	foreach(lc, executions)
	{
		ExecutionRecord *e = lfirst(lc);

		ids[i] = Int64GetDatum(e->id);
		status[i] = CStringGetTextDatum(e->status);
		payload[i] = JsonbPGetDatum(e->payload);
		context[i] = JsonbPGetDatum(e->context);
		recipient_null[i] = (e->recipient == NULL);
		recipient[i] = e->recipient ? JsonbPGetDatum(e->recipient) : (Datum) 0;
		subscriber[i] = text_or_null(e->subscriber_id, &subscriber_null[i]);
		idem[i] = text_or_null(e->idempotency_key, &idem_null[i]);
		error[i] = text_or_null(e->error, &error_null[i]);
		wake_null[i] = (e->wake_at == 0);
		wake[i] = TimestampTzGetDatum(e->wake_at);
		e->inserted = false;
		i++;
	}
	args[0] = spi_array(ids, NULL, n, INT8OID);
	args[1] = CStringGetTextDatum(first->workflow_key);
	args[2] = Int32GetDatum(first->version);
	args[3] = spi_array(status, NULL, n, TEXTOID);
	args[4] = spi_array(payload, NULL, n, JSONBOID);
	args[5] = spi_array(context, NULL, n, JSONBOID);
	args[6] = spi_array(recipient, recipient_null, n, JSONBOID);
	args[7] = spi_array(subscriber, subscriber_null, n, TEXTOID);
	args[8] = spi_array(idem, idem_null, n, TEXTOID);
	args[9] = spi_array(error, error_null, n, TEXTOID);
	args[10] = spi_array(wake, wake_null, n, TIMESTAMPTZOID);
	spi_run(&insert_stmt, args, NULL, false, 0, SPI_OK_INSERT_RETURNING);

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

/* Locks one execution and reads its state. */
bool
execution_repo_lock(int64 id, ExecutionRecord *rec, TimestampTz *created_at)
{
	Datum		args[1] = {Int64GetDatum(id)};
	bool		isnull;
	Datum		d;

	spi_run(&lock_stmt, args, NULL, false, 1, SPI_OK_SELECT);
	if (SPI_processed == 0)
		return false;
	memset(rec, 0, sizeof(ExecutionRecord));
	rec->id = id;
	rec->workflow_key = spi_text(0, 1);
	rec->version = DatumGetInt32(spi_value(0, 2, &isnull));
	rec->status = spi_text(0, 3);
	rec->payload = DatumGetJsonbPCopy(spi_value(0, 4, &isnull));
	rec->context = DatumGetJsonbPCopy(spi_value(0, 5, &isnull));
	d = spi_value(0, 6, &isnull);
	rec->recipient = isnull ? NULL : DatumGetJsonbPCopy(d);
	rec->subscriber_id = spi_text(0, 7);
	*created_at = DatumGetTimestampTz(spi_value(0, 8, &isnull));
	return true;
}

/* Saves an execution's status and context. */
void
execution_repo_update(ExecutionRecord *rec)
{
	Datum		args[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', ' '};
	bool		isnull;

	args[0] = Int64GetDatum(rec->id);
	args[1] = CStringGetTextDatum(rec->status);
	args[2] = JsonbPGetDatum(rec->context);
	args[3] = text_or_null(rec->error, &isnull);
	if (isnull)
		nulls[3] = 'n';
	args[4] = TimestampTzGetDatum(rec->wake_at);
	if (rec->wake_at == 0)
		nulls[4] = 'n';
	spi_run(&update_stmt, args, nulls, false, 0, SPI_OK_UPDATE);
}

/* Reads the steps of an execution in the order they ran. */
List *
execution_repo_steps(int64 execution_id)
{
	Datum		args[1] = {Int64GetDatum(execution_id)};
	List	   *steps = NIL;

	spi_run(&steps_stmt, args, NULL, false, 0, SPI_OK_SELECT);
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		StoredStep *s = palloc0(sizeof(StoredStep));
		bool		isnull;
		Datum		d;

		s->node_id = spi_text(r, 1);
		s->status = spi_text(r, 2);
		s->seq = DatumGetInt32(spi_value(r, 3, &isnull));
		d = spi_value(r, 4, &isnull);
		s->output = isnull ? NULL : DatumGetJsonbPCopy(d);
		steps = lappend(steps, s);
	}
	return steps;
}

/* Upserts steps set-based. */
void
execution_repo_save_steps(List *steps)
{
	int			n = list_length(steps);
	Datum	   *cols[10];
	bool	   *nulls[10];
	static const Oid types[10] = {INT8OID, TEXTOID, TEXTOID, INT4OID, TEXTOID, TEXTOID,
	JSONBOID, TEXTOID, TIMESTAMPTZOID, TIMESTAMPTZOID};
	Datum		args[10];
	ListCell   *lc;
	int			i = 0;

	if (n == 0)
		return;
	for (int c = 0; c < 10; c++)
	{
		cols[c] = palloc(sizeof(Datum) * n);
		nulls[c] = palloc0(sizeof(bool) * n);
	}
	foreach(lc, steps)
	{
		StepRecord *s = lfirst(lc);

		cols[0][i] = Int64GetDatum(s->execution_id);
		cols[1][i] = CStringGetTextDatum(s->node_id);
		cols[2][i] = CStringGetTextDatum(s->node_type);
		cols[3][i] = Int32GetDatum(s->seq);
		cols[4][i] = CStringGetTextDatum(s->status);
		cols[5][i] = text_or_null(s->outcome, &nulls[5][i]);
		nulls[6][i] = (s->output == NULL);
		cols[6][i] = s->output ? JsonbPGetDatum(s->output) : (Datum) 0;
		cols[7][i] = text_or_null(s->error, &nulls[7][i]);
		cols[8][i] = TimestampTzGetDatum(s->started_at);
		nulls[9][i] = (s->finished_at == 0);
		cols[9][i] = TimestampTzGetDatum(s->finished_at);
		i++;
	}
	for (int c = 0; c < 10; c++)
		args[c] = spi_array(cols[c], nulls[c], n, types[c]);
	spi_run(&save_steps_stmt, args, NULL, false, 0, SPI_OK_INSERT);
}

/* Lists waiting executions whose delay is over, locking them. */
List *
execution_repo_due(int limit)
{
	Datum		args[1] = {Int32GetDatum(limit)};
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
