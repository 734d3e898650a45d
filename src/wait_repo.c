/*
 * wait_repo.c — data access for wait nodes: the event inbox and
 * execution_waits (see src/sql/35_events.sql for the locking rules).
 * Callers are connected to SPI.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "utils/builtins.h"

#include "spi_util.h"
#include "wait_repo.h"

static SpiStatement lock_stmt = {
	"SELECT notiflow.lock_correlation_key($1)",
	1, {TEXTOID}
};

/*
 * An event is not consumed by the first wait that takes it: every execution
 * that reaches a wait on the key before the event expires takes it (the
 * executions of one trigger_many, one per recipient, wait on the same
 * order), as every wait open on the key when an event comes gets it.  But an
 * execution takes each event once along a path: a wait does not take one
 * that a wait it is reached from ($4) took ($3, their inbox_ids); waits on
 * parallel branches each take it, as they do when it comes while they are
 * open.  One descent of event_inbox_key per name (the names of a wait are
 * distinct), which stops at the first event it may take: a busy key keeps
 * every event of the last notiflow.event_ttl.
 */
static SpiStatement take_stmt = {
	"SELECT coalesce(jsonb_object_agg(n.name, e.data), '{}'), coalesce(array_agg(e.id), '{}')"
	"  FROM unnest($2::text[]) AS n(name)"
	" CROSS JOIN LATERAL"
	"       (SELECT i.id, i.data FROM notiflow.event_inbox i"
	"         WHERE i.correlation_key = $1 AND i.name = n.name AND i.expires_at > now()"
	"           AND NOT EXISTS (SELECT FROM notiflow.execution_waits w"
	"                            WHERE w.execution_id = $3 AND w.node_id = ANY ($4)"
	"                              AND i.id = ANY (w.inbox_ids))"
	"         ORDER BY i.id LIMIT 1) e",
	4, {TEXTOID, TEXTARRAYOID, INT8OID, TEXTARRAYOID}
};

static SpiStatement insert_stmt = {
	"INSERT INTO notiflow.execution_waits"
	"       (execution_id, node_id, correlation_key, events, received, status, deadline, finished_at, inbox_ids)"
	" VALUES ($1, $2, $3, $4, $5, $6, $7, CASE WHEN $6 = 'waiting' THEN NULL ELSE now() END, $8)",
	8, {INT8OID, TEXTOID, TEXTOID, TEXTARRAYOID, JSONBOID, TEXTOID, TIMESTAMPTZOID, INT8ARRAYOID}
};

static SpiStatement settle_stmt = {
	"UPDATE notiflow.execution_waits"
	"   SET status = CASE WHEN status = 'waiting' AND deadline <= clock_timestamp() THEN 'timeout'"
	"                     ELSE status END,"
	"       finished_at = CASE WHEN status = 'waiting' AND deadline <= clock_timestamp() THEN now()"
	"                          ELSE finished_at END"
	" WHERE execution_id = $1 AND node_id = $2"
	" RETURNING status, received, deadline",
	2, {INT8OID, TEXTOID}
};

/* Builds a text[] from a List of C strings. */
static Datum
names_array(List *names)
{
	Datum	   *elems = palloc(sizeof(Datum) * Max(list_length(names), 1));
	ListCell   *lc;
	int			i = 0;

	foreach(lc, names)
		elems[i++] = CStringGetTextDatum((char *) lfirst(lc));
	return spi_array(elems, NULL, i, TEXTOID);
}

/* Takes the correlation key's advisory lock. */
void
wait_repo_lock_key(const char *key)
{
	Datum		args[1] = {CStringGetTextDatum(key)};

	spi_run(&lock_stmt, args, NULL, false, 0, SPI_OK_SELECT);
}

/* lock_correlation_key's lock, not waiting for it */
static SpiStatement try_lock_stmt = {
	"SELECT pg_try_advisory_xact_lock(notiflow.correlation_key_lock_id($1))",
	1, {TEXTOID}
};

/* Takes the correlation key's advisory lock if nobody holds it; false when another transaction does. */
bool
wait_repo_try_lock_key(const char *key)
{
	Datum		args[1] = {CStringGetTextDatum(key)};
	bool		isnull;

	spi_run(&try_lock_stmt, args, NULL, false, 1, SPI_OK_SELECT);
	return DatumGetBool(spi_value(0, 1, &isnull)) && !isnull;
}

/* Reads the inbox events of a key (they stay for other waits); *inbox_ids their ids. */
Jsonb *
wait_repo_take_inbox(const char *key, List *names, int64 execution_id, List *waits_before,
					 Datum *inbox_ids)
{
	Datum		args[4];
	bool		isnull;

	args[0] = CStringGetTextDatum(key);
	args[1] = names_array(names);
	args[2] = Int64GetDatum(execution_id);
	args[3] = names_array(waits_before);
	spi_run(&take_stmt, args, NULL, false, 0, SPI_OK_SELECT);
	*inbox_ids = PointerGetDatum(DatumGetArrayTypePCopy(spi_value(0, 2, &isnull)));
	return DatumGetJsonbPCopy(spi_value(0, 1, &isnull));
}

/* Records a wait, with the ids of the inbox events it took. */
void
wait_repo_insert(int64 execution_id, const char *node_id, const char *key, List *names,
				 Jsonb *received, const char *status, TimestampTz deadline, Datum inbox_ids)
{
	Datum		args[8];
	char		nulls[8] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};

	args[0] = Int64GetDatum(execution_id);
	args[1] = CStringGetTextDatum(node_id);
	args[2] = CStringGetTextDatum(key);
	args[3] = names_array(names);
	args[4] = JsonbPGetDatum(received);
	args[5] = CStringGetTextDatum(status);
	args[6] = TimestampTzGetDatum(deadline);
	args[7] = inbox_ids;
	if (deadline == 0)
		nulls[6] = 'n';
	spi_run(&insert_stmt, args, nulls, false, 0, SPI_OK_INSERT);
}

/* Locks a wait, times it out when due, and reads it. */
char *
wait_repo_settle(int64 execution_id, const char *node_id, Jsonb **received, TimestampTz *deadline)
{
	Datum		args[2] = {Int64GetDatum(execution_id), CStringGetTextDatum(node_id)};
	bool		isnull;
	Datum		d;

	spi_run(&settle_stmt, args, NULL, false, 0, SPI_OK_UPDATE_RETURNING);
	if (SPI_processed == 0)
		return NULL;
	*received = DatumGetJsonbPCopy(spi_value(0, 2, &isnull));
	d = spi_value(0, 3, &isnull);
	*deadline = isnull ? 0 : DatumGetTimestampTz(d);
	return spi_text(0, 1);
}

static SpiStatement execution_event_stmt = {
	"WITH given AS ("
	"  UPDATE notiflow.execution_waits"
	"     SET received = received || jsonb_build_object($2::text, $3::jsonb),"
	"         status = CASE WHEN (SELECT bool_and((received || jsonb_build_object($2::text, $3::jsonb)) ? e)"
	"                               FROM unnest(events) e) THEN 'completed' ELSE status END,"
	"         finished_at = CASE WHEN (SELECT bool_and((received || jsonb_build_object($2::text, $3::jsonb)) ? e)"
	"                                    FROM unnest(events) e) THEN now() ELSE finished_at END"
	"   WHERE execution_id = $1 AND status = 'waiting' AND $2 = ANY (events) AND NOT received ? $2"
	"     AND (deadline IS NULL OR deadline > clock_timestamp())"
	"  RETURNING status)"
	" SELECT count(*) FILTER (WHERE status = 'completed') > 0 FROM given",
	3, {INT8OID, TEXTOID, JSONBOID}
};

static SpiStatement waiting_stmt = {
	"SELECT DISTINCT w.execution_id"
	"  FROM unnest($1::int8[]) AS k(wanted) JOIN notiflow.execution_waits w ON w.execution_id = k.wanted"
	" WHERE w.status = 'waiting'",
	1, {INT8ARRAYOID}
};

/* Gives an execution-scoped event to its waits; true when it completed one. */
bool
wait_repo_execution_event(int64 execution_id, const char *name, Jsonb *data)
{
	Datum		args[3] = {Int64GetDatum(execution_id), CStringGetTextDatum(name), JsonbPGetDatum(data)};
	bool		isnull;

	spi_run(&execution_event_stmt, args, NULL, false, 1, SPI_OK_SELECT);
	return DatumGetBool(spi_value(0, 1, &isnull)) && !isnull;
}

List *
wait_repo_waiting_executions(int64 *execution_ids, int n)
{
	Datum		args[1];
	List	   *waiting = NIL;

	if (n == 0)
		return NIL;
	args[0] = spi_int8_array(execution_ids, n);
	spi_run(&waiting_stmt, args, NULL, false, 0, SPI_OK_SELECT);
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		bool		isnull;
		int64	   *id = palloc(sizeof(int64));

		*id = DatumGetInt64(spi_value(r, 1, &isnull));
		waiting = lappend(waiting, id);
	}
	return waiting;
}
