/*
 * delivery_repo.c — data access for deliveries and the provider choice.
 *
 * Callers are connected to SPI.  The engine creates deliveries here
 * (set-based), the resume path reads their summary per action node, and the
 * delivery workers record outcomes through delivery_repo_set_status.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "nodes/parsenodes.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

#include "access/xact.h"

#include "delivery_repo.h"
#include "row_writer.h"
#include "spi_util.h"
#include "worker.h"

static SpiStatement insert_stmt = {
	"INSERT INTO notiflow.deliveries"
	"       (execution_id, node_id, channel, provider, recipient, content, status,"
	"        last_error, finished_at)"
	" SELECT t.e, t.n, t.c, t.p, t.r, t.ct, t.s, t.err,"
	"        CASE WHEN t.s <> 'queued' THEN now() END"
	"   FROM unnest($1::int8[], $2::text[], $3::text[], $4::text[], $5::text[],"
	"               $6::jsonb[], $7::text[], $8::text[]) AS t(e, n, c, p, r, ct, s, err)",
	8, {INT8ARRAYOID, TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID,
	JSONBARRAYOID, TEXTARRAYOID, TEXTARRAYOID}
};

static SpiStatement providers_stmt = {
	"SELECT name, kind FROM notiflow.providers"
	" WHERE channel = $1 AND enabled ORDER BY priority, name",
	1, {TEXTOID}
};

/*
 * An action node's deliveries summarised: total, pending, succeeded, and the
 * deliveries as a jsonb array (read by read_summary).
 */
#define SUMMARY_TOTALS \
	"count(*)::int4," \
	"       (count(*) FILTER (WHERE status IN ('queued', 'sending')))::int4," \
	"       (count(*) FILTER (WHERE status IN ('sent', 'delivered')))::int4,"
#define SUMMARY_DELIVERIES \
	"jsonb_agg(jsonb_strip_nulls(jsonb_build_object(" \
	"           'id', id, 'status', status, 'provider', provider, 'recipient', recipient," \
	"           'attempts', attempts, 'provider_message_id', provider_message_id," \
	"           'error', last_error)) ORDER BY id)"

static SpiStatement summary_stmt = {
	"SELECT " SUMMARY_TOTALS " coalesce(" SUMMARY_DELIVERIES ", '[]')"
	"  FROM notiflow.deliveries WHERE execution_id = $1 AND node_id = $2",
	2, {INT8OID, TEXTOID}
};

/*
 * Records a status when the transition is allowed (queued/sending → anything;
 * sent → delivered or failed; delivered → failed) and, in any case, a
 * provider message id the delivery does not have yet (a "delivered" event may
 * overtake the dispatcher's own "sent").  "sending" comes with a lease
 * (notiflow.lease_time, $5 ms, or longer for a slow provider: provider_lease_ms),
 * as from a claim: a delivery nobody records
 * goes back to the queue when it runs out.  Returns the execution and whether
 * the status changed.
 */
static SpiStatement set_status_stmt = {
	"WITH cur AS (SELECT id, status AS old,"
	"                    (status IN ('queued', 'sending')"
	"                     OR (status = 'sent' AND $2 IN ('delivered', 'failed'))"
	"                     OR (status = 'delivered' AND $2 = 'failed')) AS allowed"
	"               FROM notiflow.deliveries WHERE id = $1 FOR UPDATE)"
	" UPDATE notiflow.deliveries d"
	"    SET status = CASE WHEN cur.allowed THEN $2 ELSE d.status END,"
	"        provider_message_id = coalesce(d.provider_message_id, $3),"
	"        last_error = CASE WHEN cur.allowed THEN coalesce($4, d.last_error) ELSE d.last_error END,"
	"        updated_at = now(),"
	"        lease_expires_at = CASE WHEN NOT cur.allowed THEN d.lease_expires_at"
	"                                WHEN $2 = 'sending'"
	"                                THEN clock_timestamp()"
	"                                     + coalesce((SELECT notiflow.provider_lease_ms(p.config, $5, $6)"
	"                                                   FROM notiflow.providers p WHERE p.name = d.provider), $5)"
	"                                       * interval '1 millisecond' END,"
	"        sent_at = CASE WHEN cur.allowed AND $2 IN ('sent', 'delivered')"
	"                       THEN coalesce(d.sent_at, now()) ELSE d.sent_at END,"
	"        finished_at = CASE WHEN NOT cur.allowed THEN d.finished_at"
	"                           WHEN $2 IN ('queued', 'sending') THEN NULL"
	"                           ELSE coalesce(d.finished_at, now()) END"
	"   FROM cur WHERE d.id = cur.id AND (cur.allowed OR (d.provider_message_id IS NULL AND $3 IS NOT NULL))"
	" RETURNING d.execution_id, cur.allowed, d.node_id",
	6, {INT8OID, TEXTOID, TEXTOID, TEXTOID, INT4OID, INT4OID}
};

/*
 * One delivery's columns, in the order of the statements' arrays and of
 * delivery_columns: execution_id, node_id, channel, provider, recipient,
 * content, status, last_error.  Returns true when it is queued.
 */
#define DELIVERY_ROW_COLUMNS 8

static bool
delivery_row(const DeliveryRecord *d, Datum *v, bool *n)
{
	v[0] = Int64GetDatum(d->execution_id);
	n[0] = false;
	v[1] = CStringGetTextDatum(d->node_id);
	n[1] = false;
	v[2] = CStringGetTextDatum(d->channel);
	n[2] = false;
	v[3] = spi_text_or_null(d->provider, &n[3]);
	v[4] = spi_text_or_null(d->recipient, &n[4]);
	v[5] = JsonbPGetDatum(d->content);
	n[5] = false;
	v[6] = CStringGetTextDatum(d->status);
	n[6] = false;
	v[7] = spi_text_or_null(d->last_error, &n[7]);
	return strcmp(d->status, "queued") == 0;
}

/* Fills 8 array arguments from deliveries; returns true when one of them is queued. */
bool
delivery_repo_args(List *deliveries, Datum *args)
{
	static const Oid types[DELIVERY_ROW_COLUMNS] = {INT8OID, TEXTOID, TEXTOID, TEXTOID,
	TEXTOID, JSONBOID, TEXTOID, TEXTOID};
	SpiColumns	cols;
	ListCell   *lc;
	bool		queued = false;

	spi_columns_init(&cols, DELIVERY_ROW_COLUMNS, list_length(deliveries));
	foreach(lc, deliveries)
	{
		Datum		v[DELIVERY_ROW_COLUMNS];
		bool		n[DELIVERY_ROW_COLUMNS];

		queued |= delivery_row(lfirst(lc), v, n);
		spi_columns_add(&cols, v, n);
	}
	spi_columns_args(&cols, types, args);
	return queued;
}

/* The columns a new delivery gives: delivery_row's, then finished_at; the others take their defaults. */
static const char *const delivery_columns[] = {
	"execution_id", "node_id", "channel", "provider", "recipient", "content", "status",
	"last_error", "finished_at"
};
StaticAssertDecl(lengthof(delivery_columns) == DELIVERY_ROW_COLUMNS + 1,
				 "delivery_columns: delivery_row's columns, finished_at");

RowWriter *
delivery_repo_open_writer(void)
{
	return row_writer_open("deliveries", delivery_columns, lengthof(delivery_columns));
}

bool
delivery_repo_write(RowWriter *w, const DeliveryRecord *d)
{
	Datum		values[lengthof(delivery_columns)];
	bool		nulls[lengthof(delivery_columns)];
	bool		queued = delivery_row(d, values, nulls);

	nulls[DELIVERY_ROW_COLUMNS] = queued;
	values[DELIVERY_ROW_COLUMNS] = TimestampTzGetDatum(GetCurrentTransactionStartTimestamp());
	row_writer_insert(w, values, nulls);
	return queued;
}

/* Inserts deliveries set-based. */
void
delivery_repo_insert(List *deliveries)
{
	Datum		args[8];

	if (deliveries == NIL)
		return;
	if (delivery_repo_args(deliveries, args))
		notiflow_wake_dispatchers_at_commit();
	spi_run(&insert_stmt, args, NULL, false, 0, SPI_OK_INSERT);
}

/* Lists the enabled providers of a channel, lowest priority value first. */
List *
delivery_repo_providers(const char *channel)
{
	Datum		args[1] = {CStringGetTextDatum(channel)};
	List	   *providers = NIL;

	spi_run(&providers_stmt, args, NULL, true, 0, SPI_OK_SELECT);
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		ProviderRef *p = palloc(sizeof(ProviderRef));

		p->name = spi_text(r, 1);
		p->kind = spi_text(r, 2);
		providers = lappend(providers, p);
	}
	return providers;
}

/* Reads SUMMARY_TOTALS and SUMMARY_DELIVERIES of row r (columns from first). */
static void
read_summary(uint64 r, int first, DeliverySummary *out)
{
	bool		isnull;

	out->total = DatumGetInt32(spi_value(r, first, &isnull));
	out->pending = DatumGetInt32(spi_value(r, first + 1, &isnull));
	out->succeeded = DatumGetInt32(spi_value(r, first + 2, &isnull));
	out->deliveries = DatumGetJsonbPCopy(spi_value(r, first + 3, &isnull));
}

/* Summarises one action node's deliveries. */
void
delivery_repo_summary(int64 execution_id, const char *node_id, DeliverySummary *out)
{
	Datum		args[2] = {Int64GetDatum(execution_id), CStringGetTextDatum(node_id)};

	spi_run(&summary_stmt, args, NULL, false, 1, SPI_OK_SELECT);
	read_summary(0, 1, out);
}

/* Records a delivery's new status unless it already ended. */
bool
delivery_repo_set_status(int64 delivery_id, const char *status,
						 const char *provider_message_id, const char *error,
						 int64 *execution_id, char **node_id)
{
	Datum		args[6];
	char		nulls[6] = {' ', ' ', ' ', ' ', ' ', ' '};
	bool		isnull;

	args[0] = Int64GetDatum(delivery_id);
	args[1] = CStringGetTextDatum(status);
	args[2] = provider_message_id ? CStringGetTextDatum(provider_message_id) : (Datum) 0;
	if (provider_message_id == NULL)
		nulls[2] = 'n';
	args[3] = error ? CStringGetTextDatum(error) : (Datum) 0;
	if (error == NULL)
		nulls[3] = 'n';
	args[4] = Int32GetDatum(notiflow_lease_ms);
	args[5] = Int32GetDatum(NOTIFLOW_LEASE_MARGIN_MS);
	spi_run(&set_status_stmt, args, nulls, false, 0, SPI_OK_UPDATE_RETURNING);
	if (SPI_processed == 0)
		return false;
	*execution_id = DatumGetInt64(spi_value(0, 1, &isnull));
	*node_id = spi_text(0, 3);
	return DatumGetBool(spi_value(0, 2, &isnull));
}

/* --- dispatcher statements --- */

/*
 * The claim, with a plan that holds for any limit: its generic plan is kept
 * (a custom plan for LIMIT $1 was made at every claim), and "= ANY (ARRAY(...))"
 * makes that plan fetch the claimed rows by the row versions it locked (a
 * TID scan, no index descent) whatever number the planner guesses for the
 * limit (a join planned for a tenth of the queue read all of it).  It walks
 * deliveries_due (unfinished deliveries by due time) and takes the queued
 * ones and those whose lease ran out; the update changes no indexed column
 * (HOT, see deliveries_due in the schema).  A row locked in a version newer
 * than the statement's snapshot is not updated, and stays queued for the
 * next claim.  RETURNING gives the claimed version's ctid, for
 * mark_sent_stmt.
 */
static SpiStatement claim_stmt = {
	"WITH slow AS MATERIALIZED (SELECT name, notiflow.provider_lease_ms(config, $2, $5) AS ms"
	"                             FROM notiflow.providers WHERE notiflow.provider_lease_ms(config, $2, $5) > $2)"
	" UPDATE notiflow.deliveries d"
	"   SET status = 'sending',"
	"       lease_expires_at = clock_timestamp()"
	"                          + coalesce((SELECT ms FROM slow WHERE name = d.provider), $2) * interval '1 millisecond',"
	"       updated_at = now()"
	" WHERE d.ctid = ANY (ARRAY("
	"         SELECT ctid FROM notiflow.deliveries"
	"          WHERE finished_at IS NULL AND next_attempt_at <= now()"
	"            AND (next_attempt_at, id) > ($3, $4)"
	"            AND (status = 'queued' OR lease_expires_at < now())"
	"          ORDER BY next_attempt_at, id LIMIT $1 FOR UPDATE SKIP LOCKED))"
	" RETURNING d.id, d.execution_id, d.channel, d.provider, d.recipient, d.content, d.attempts,"
	"           d.provider_attempts, d.ctid, d.next_attempt_at, d.lease_expires_at",
	5, {INT4OID, INT4OID, TIMESTAMPTZOID, INT8OID, INT4OID}, NULL, 0, CURSOR_OPT_GENERIC_PLAN
};

/*
 * The next due delivery and delay.  The queued deliveries come first in
 * deliveries_due after the ones in flight (claimed earlier, so due earlier):
 * the scan steps over at most those.
 */
static SpiStatement next_due_stmt = {
	"SELECT (extract(epoch FROM due - clock_timestamp()) * 1000)::float8, due <= now()"
	"  FROM (SELECT least("
	"          (SELECT min(next_attempt_at) FROM notiflow.deliveries"
	"            WHERE finished_at IS NULL AND status = 'queued'),"
	"          (SELECT min(wake_at) FROM notiflow.executions WHERE status = 'waiting')) AS due) d",
	0, {InvalidOid}
};

/*
 * The next lease to run out, read only when a claim found nothing more to
 * take: the due part of deliveries_due then holds the deliveries in flight
 * (and rows other dispatchers hold locked), not a backlog.  It also holds
 * dead entries: deliveries finished (or rows updated) since the last vacuum.
 * Planned with statistics from a moment when nothing was in flight, this was
 * a bitmap scan, which reads every dead entry again at each call (45 ms for
 * 200,000 of them), or without bitmaps a sequential scan of the table (300
 * ms).  An index scan marks the dead entries it meets, and the next scans
 * skip them (50 ms, then 2 ms, on the same 200,000):
 * delivery_repo_next_due_ms plans it with neither of the other two.  (Its
 * cost estimate also set off JIT, now off in dispatchers: worker_memory.c.)
 */
static SpiStatement next_lease_stmt = {
	"SELECT (extract(epoch FROM"
	"          (SELECT min(lease_expires_at) FROM notiflow.deliveries"
	"            WHERE finished_at IS NULL AND next_attempt_at <= now() AND status = 'sending')"
	"        - clock_timestamp()) * 1000)::float8",
	0, {InvalidOid}
};

static SpiStatement retry_stmt = {
	"UPDATE notiflow.deliveries"
	"   SET status = 'queued', attempts = attempts + 1, provider_attempts = provider_attempts + 1,"
	"       next_attempt_at = clock_timestamp() + $2 * interval '1 millisecond', last_error = $3,"
	"       lease_expires_at = NULL, updated_at = now()"
	" WHERE id = $1",
	3, {INT8OID, INT4OID, TEXTOID}
};

static SpiStatement defer_stmt = {
	"UPDATE notiflow.deliveries"
	"   SET status = 'queued', next_attempt_at = clock_timestamp() + $2 * interval '1 millisecond',"
	"       lease_expires_at = NULL, updated_at = now()"
	" WHERE id = $1",
	2, {INT8OID, INT4OID}
};

static SpiStatement fall_back_stmt = {
	"WITH d AS (SELECT id, channel, provider, tried_providers FROM notiflow.deliveries WHERE id = $1),"
	" nxt AS (SELECT p.name FROM notiflow.providers p, d"
	"          WHERE p.channel = d.channel AND p.enabled AND p.name IS DISTINCT FROM d.provider"
	"            AND NOT (p.name = ANY (d.tried_providers))"
	"            AND (d.channel NOT IN ('push', 'chat') OR p.kind = $2)"
	"          ORDER BY p.priority, p.name LIMIT 1)"
	" UPDATE notiflow.deliveries x"
	"    SET provider = nxt.name,"
	"        tried_providers = CASE WHEN x.provider IS NULL THEN x.tried_providers"
	"                               ELSE x.tried_providers || x.provider END,"
	"        left_providers = CASE WHEN x.provider IS NULL THEN x.left_providers"
	"                              ELSE x.left_providers || x.provider END,"
	"        provider_attempts = 0, attempts = x.attempts + 1, status = 'queued',"
	"        next_attempt_at = now(), last_error = $3, lease_expires_at = NULL, updated_at = now()"
	"   FROM nxt WHERE x.id = $1"
	" RETURNING x.provider",
	3, {INT8OID, TEXTOID, TEXTOID}
};

static SpiStatement dead_letter_stmt = {
	"WITH d AS (UPDATE notiflow.deliveries SET attempts = attempts + 1 WHERE id = $1 RETURNING *)"
	" INSERT INTO notiflow.dead_letters (source, reference, payload, details, error)"
	" SELECT 'delivery', d.id::text, convert_to($2, 'UTF8'),"
	"        jsonb_build_object('delivery_id', d.id, 'execution_id', d.execution_id,"
	"                           'node_id', d.node_id, 'channel', d.channel, 'recipient', d.recipient,"
	"                           'content', d.content, 'attempts', d.attempts,"
	"                           'providers', d.tried_providers || d.provider),"
	"        $3"
	"   FROM d",
	3, {INT8OID, TEXTOID, TEXTOID}
};

/*
 * Only an address of the subscriber's own (email, phone, a push device, a
 * chat address) is marked: one a node's "to" or a transform gave for one
 * execution is not theirs, and status callbacks do not mark it either.
 * A web push device's address is its subscription as JSON text.
 */
static SpiStatement mark_invalid_stmt = {
	"UPDATE notiflow.subscribers s"
	"   SET invalid_addresses = s.invalid_addresses || d.recipient, updated_at = now()"
	"  FROM notiflow.deliveries d JOIN notiflow.executions e ON e.id = d.execution_id"
	" WHERE d.id = $1 AND s.id = e.subscriber_id AND d.recipient IS NOT NULL"
	"   AND NOT (d.recipient = ANY (s.invalid_addresses))"
	"   AND (d.recipient IN (s.email, s.phone)"
	"        OR EXISTS (SELECT 1 FROM jsonb_each(s.push) p,"
	"                        jsonb_array_elements(CASE WHEN jsonb_typeof(p.value) = 'array' THEN p.value END) dev"
	"                    WHERE dev #>> '{}' = d.recipient)"
	"        OR EXISTS (SELECT 1 FROM jsonb_each_text(s.chat) c WHERE c.value = d.recipient))",
	1, {INT8OID}
};

/*
 * A delivery is still the claim's when it is sending under the lease the
 * claim gave it: a new claim (the lease ran out) gives another, and an event
 * or a user that finished it changed the status.  Locks it for the record.
 */
static SpiStatement still_claimed_stmt = {
	"SELECT 1 FROM notiflow.deliveries"
	" WHERE id = $1 AND status = 'sending' AND lease_expires_at = $2 FOR UPDATE",
	2, {INT8OID, TIMESTAMPTZOID}
};

static SpiStatement lock_stmt = {
	"SELECT 1 FROM notiflow.deliveries WHERE id = ANY ($1) ORDER BY id FOR UPDATE",
	1, {INT8ARRAYOID}
};

static SpiStatement count_attempt_stmt = {
	"UPDATE notiflow.deliveries SET attempts = attempts + 1, provider_attempts = provider_attempts + 1"
	" WHERE id = $1",
	1, {INT8OID}
};

static SpiStatement extend_lease_stmt = {
	"UPDATE notiflow.deliveries"
	"   SET lease_expires_at = clock_timestamp() + $3 * interval '1 millisecond'"
	" WHERE ctid = $1 AND id = $2 AND status = 'sending'"
	" RETURNING ctid, lease_expires_at",
	3, {TIDOID, INT8OID, INT4OID}
};

/*
 * Gives a delivery its claim just took a longer lease (lease_ms from now):
 * one whose provider may take longer to answer than notiflow.lease_time.
 * Updates *tid and *lease to the new row version and lease; false (and
 * nothing changed) when the claim's version is gone.
 */
bool
delivery_repo_extend_lease(int64 delivery_id, ItemPointer tid, int lease_ms, TimestampTz *lease)
{
	Datum		args[3] = {PointerGetDatum(tid), Int64GetDatum(delivery_id), Int32GetDatum(lease_ms)};
	bool		isnull;

	spi_run(&extend_lease_stmt, args, NULL, false, 0, SPI_OK_UPDATE_RETURNING);
	if (SPI_processed != 1)
		return false;
	ItemPointerCopy((ItemPointer) DatumGetPointer(spi_value(0, 1, &isnull)), tid);
	*lease = DatumGetTimestampTz(spi_value(0, 2, &isnull));
	return true;
}

/* Claims due deliveries. */
List *
delivery_repo_claim(int limit, int lease_ms, const QueuePosition *after, QueuePosition *last)
{
	Datum		args[5] = {Int32GetDatum(limit), Int32GetDatum(lease_ms),
		TimestampTzGetDatum(after ? after->at : DT_NOBEGIN), Int64GetDatum(after ? after->id : 0),
	Int32GetDatum(NOTIFLOW_LEASE_MARGIN_MS)};
	List	   *claimed = NIL;

	spi_run(&claim_stmt, args, NULL, false, 0, SPI_OK_UPDATE_RETURNING);
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		ClaimedDelivery *c = palloc0(sizeof(ClaimedDelivery));
		bool		isnull;
		QueuePosition pos;

		c->id = DatumGetInt64(spi_value(r, 1, &isnull));
		c->execution_id = DatumGetInt64(spi_value(r, 2, &isnull));
		c->channel = spi_text(r, 3);
		c->provider = spi_text(r, 4);
		c->recipient = spi_text(r, 5);
		c->content = DatumGetJsonbPCopy(spi_value(r, 6, &isnull));
		c->attempts = DatumGetInt32(spi_value(r, 7, &isnull));
		c->provider_attempts = DatumGetInt32(spi_value(r, 8, &isnull));
		ItemPointerCopy((ItemPointer) DatumGetPointer(spi_value(r, 9, &isnull)), &c->tid);
		/* the rows come back in no particular order */
		pos.at = DatumGetTimestampTz(spi_value(r, 10, &isnull));
		pos.id = c->id;
		c->lease = DatumGetTimestampTz(spi_value(r, 11, &isnull));
		if (r == 0 || queue_position_after(&pos, last))
			*last = pos;
		claimed = lappend(claimed, c);
	}
	return claimed;
}

/* Milliseconds until the time one of the statements returns; -1 when it returns NULL. */
static long
ms_until(SpiStatement *stmt)
{
	bool		isnull;
	Datum		d;

	spi_run(stmt, NULL, NULL, true, 1, SPI_OK_SELECT);
	d = spi_value(0, 1, &isnull);
	if (isnull)
		return -1;
	return (long) Max(DatumGetFloat8(d), 0.0);
}

/*
 * Returns milliseconds until something is due; *overdue tells whether it was
 * due already when the transaction began (when the claim looked), not only
 * since.
 */
long
delivery_repo_next_due_ms(bool drained, bool *overdue)
{
	long		due = ms_until(&next_due_stmt);
	bool		isnull;
	long		lease;

	*overdue = due >= 0 && DatumGetBool(spi_value(0, 2, &isnull)) && !isnull;

	if (!drained)
		return due;
	{
		int			nest = NewGUCNestLevel();

		(void) set_config_option("enable_bitmapscan", "off", PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_SAVE, true, 0, false);
		(void) set_config_option("enable_seqscan", "off", PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_SAVE, true, 0, false);
		lease = ms_until(&next_lease_stmt);
		AtEOXact_GUC(true, nest);
	}
	if (due < 0 || (lease >= 0 && lease < due))
	{
		/* a lease that ran out, yet its row was not claimed: another transaction holds it */
		*overdue = lease == 0;
		return lease;
	}
	return due;
}

/* Records one attempt (through the batch statement). */
void
delivery_repo_record_attempt(int64 delivery_id, int attempt, const char *provider,
							 long status_code, int curl_code, double latency_ms,
							 const char *error_class, const char *error, const char *excerpt)
{
	AttemptRecord a = {delivery_id, attempt, provider, status_code, curl_code, latency_ms,
	error_class, error, excerpt};

	delivery_repo_record_attempts(&a, 1);
}

/* Schedules a retry. */
void
delivery_repo_retry_later(int64 delivery_id, int delay_ms, const char *error)
{
	Datum		args[3] = {Int64GetDatum(delivery_id), Int32GetDatum(delay_ms),
	CStringGetTextDatum(error ? error : "")};

	spi_run(&retry_stmt, args, NULL, false, 0, SPI_OK_UPDATE);
}

/* Defers without counting an attempt. */
void
delivery_repo_defer(int64 delivery_id, int delay_ms)
{
	Datum		args[2] = {Int64GetDatum(delivery_id), Int32GetDatum(delay_ms)};

	spi_run(&defer_stmt, args, NULL, false, 0, SPI_OK_UPDATE);
}

/* Moves to the next provider. */
char *
delivery_repo_fall_back(int64 delivery_id, const char *kind, const char *error)
{
	Datum		args[3] = {Int64GetDatum(delivery_id), CStringGetTextDatum(kind ? kind : ""),
	CStringGetTextDatum(error ? error : "")};

	spi_run(&fall_back_stmt, args, NULL, false, 0, SPI_OK_UPDATE_RETURNING);
	return SPI_processed == 0 ? NULL : spi_text(0, 1);
}

/* Files a dead letter. */
void
delivery_repo_dead_letter(int64 delivery_id, const char *request_body, const char *error)
{
	Datum		args[3] = {Int64GetDatum(delivery_id), CStringGetTextDatum(request_body ? request_body : ""),
	CStringGetTextDatum(error ? error : "failed")};

	spi_run(&dead_letter_stmt, args, NULL, false, 0, SPI_OK_INSERT);
}

/* Marks the address invalid on the subscriber. */
void
delivery_repo_mark_address_invalid(int64 delivery_id)
{
	Datum		args[1] = {Int64GetDatum(delivery_id)};

	spi_run(&mark_invalid_stmt, args, NULL, false, 0, SPI_OK_UPDATE);
}

bool
delivery_repo_still_claimed(int64 delivery_id, TimestampTz lease)
{
	Datum		args[2] = {Int64GetDatum(delivery_id), TimestampTzGetDatum(lease)};

	spi_run(&still_claimed_stmt, args, NULL, false, 1, SPI_OK_SELECT);
	return SPI_processed == 1;
}

void
delivery_repo_lock(int64 *ids, int n)
{
	spi_run_with_ids(&lock_stmt, ids, n, SPI_OK_SELECT);
}

static SpiStatement early_apply_stmt = {
	"SELECT notiflow.apply_early_delivery_events($1)", 1, {INT8ARRAYOID}
};

static SpiStatement early_sweep_stmt = {
	"SELECT notiflow.apply_early_delivery_events(NULL)", 0, {InvalidOid}
};

static SpiStatement early_kept_stmt = {
	"SELECT EXISTS (SELECT 1 FROM notiflow.delivery_events_early)", 0, {InvalidOid}
};

bool
delivery_repo_early_events_kept(void)
{
	bool		isnull;

	spi_run(&early_kept_stmt, NULL, NULL, true, 1, SPI_OK_SELECT);
	return DatumGetBool(spi_value(0, 1, &isnull)) && !isnull;
}

void
delivery_repo_sweep_early_events(void)
{
	spi_run(&early_sweep_stmt, NULL, NULL, false, 0, SPI_OK_SELECT);
}

void
delivery_repo_apply_early_events(int64 *ids, int n)
{
	spi_run_with_ids(&early_apply_stmt, ids, n, SPI_OK_SELECT);
}

/* Counts a successful attempt. */
void
delivery_repo_count_attempt(int64 delivery_id)
{
	Datum		args[1] = {Int64GetDatum(delivery_id)};

	spi_run(&count_attempt_stmt, args, NULL, false, 0, SPI_OK_UPDATE);
}

/* --- set-based recording --- */

static SpiStatement attempts_stmt = {
	"INSERT INTO notiflow.delivery_attempts"
	"       (delivery_id, attempt, provider, status_code, curl_code, latency_ms, error_class, error,"
	"        response_excerpt)"
	" SELECT t.d, t.a, t.p, t.s, t.c, t.l, t.k, t.e, t.x"
	"   FROM unnest($1::int8[], $2::int4[], $3::text[], $4::int4[], $5::int4[], $6::float8[],"
	"               $7::text[], $8::text[], $9::text[]) AS t(d, a, p, s, c, l, k, e, x)",
	9, {INT8ARRAYOID, INT4ARRAYOID, TEXTARRAYOID, INT4ARRAYOID, INT4ARRAYOID, FLOAT8ARRAYOID,
	TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID}
};

/*
 * The "sent" transition of set_status_stmt plus count_attempt_stmt, for many
 * rows at once.  Each row is fetched by the version its claim left (a TID
 * scan per row, no descent of the primary key; "ctid = ANY (...)" and a join
 * by id was planned as a nested loop over the unnested values, quadratic in
 * the batch).  A row changed since (a provider's event, a lease that ran
 * out) has another version and is normally not matched: the caller records
 * it by id.  (A change committed while this statement runs is rechecked on
 * the newest version, which may match if it is still sending: the same
 * result as by id.)  The id check guards against a table rewritten
 * meanwhile (VACUUM FULL), where a ctid may hold another row.
 */
static SpiStatement mark_sent_stmt = {
	"UPDATE notiflow.deliveries d"
	"   SET status = 'sent', attempts = d.attempts + 1, provider_attempts = d.provider_attempts + 1,"
	"       provider_message_id = coalesce(d.provider_message_id, t.m), updated_at = now(),"
	"       lease_expires_at = NULL, sent_at = coalesce(d.sent_at, now()),"
	"       finished_at = coalesce(d.finished_at, now())"
	"  FROM unnest($1::int8[], $2::text[], $3::tid[]) AS t(id, m, v)"
	" WHERE d.ctid = t.v AND d.id = t.id AND d.status = 'sending'"
	" RETURNING d.id, d.execution_id, d.node_id, d.provider, d.recipient, d.attempts,"
	"           d.provider_message_id, d.last_error",
	3, {INT8ARRAYOID, TEXTARRAYOID, TIDARRAYOID}
};

static SpiStatement summaries_stmt = {
	"SELECT execution_id, node_id, " SUMMARY_TOTALS " " SUMMARY_DELIVERIES
	"  FROM unnest($1::int8[]) AS k(wanted) JOIN notiflow.deliveries d ON d.execution_id = k.wanted"
	" GROUP BY execution_id, node_id",
	1, {INT8ARRAYOID}
};

/* The columns attempts_stmt and the row writer give, in their order. */
static const char *const attempt_columns[] = {
	"delivery_id", "attempt", "provider", "status_code", "curl_code", "latency_ms",
	"error_class", "error", "response_excerpt"
};

/* One attempt's values in attempt_columns' order (a status or curl code of 0 is NULL). */
static void
attempt_row(const AttemptRecord *a, Datum *v, bool *nulls)
{
	v[0] = Int64GetDatum(a->delivery_id);
	nulls[0] = false;
	v[1] = Int32GetDatum(a->attempt);
	nulls[1] = false;
	v[2] = CStringGetTextDatum(a->provider ? a->provider : "");
	nulls[2] = false;
	v[3] = Int32GetDatum((int32) a->status_code);
	nulls[3] = a->status_code == 0;
	v[4] = Int32GetDatum(a->curl_code);
	nulls[4] = a->curl_code == 0;
	v[5] = Float8GetDatum(a->latency_ms);
	nulls[5] = false;
	v[6] = CStringGetTextDatum(a->error_class);
	nulls[6] = false;
	v[7] = spi_text_or_null(a->error, &nulls[7]);
	v[8] = spi_text_or_null(a->excerpt, &nulls[8]);
}

/*
 * Logs attempts: through the row writer, or attempts_stmt when the table
 * needs the executor (the writer's share of a dispatcher's CPU was 4.5%
 * where the statement's had been 5.6%, in profiles of the dispatch
 * benchmark).
 */
void
delivery_repo_record_attempts(AttemptRecord *attempts, int n)
{
	static const Oid types[lengthof(attempt_columns)] = {INT8OID, INT4OID, TEXTOID, INT4OID,
	INT4OID, FLOAT8OID, TEXTOID, TEXTOID, TEXTOID};
	Datum		args[lengthof(attempt_columns)];
	SpiColumns	cols;
	RowWriter  *w;

	if (n == 0)
		return;
	w = row_writer_open("delivery_attempts", attempt_columns, lengthof(attempt_columns));
	if (w != NULL)
	{
		for (int i = 0; i < n; i++)
		{
			Datum		v[lengthof(attempt_columns)];
			bool		nulls[lengthof(attempt_columns)];

			attempt_row(&attempts[i], v, nulls);
			row_writer_insert(w, v, nulls);
		}
		row_writer_close(w);
		return;
	}
	spi_columns_init(&cols, lengthof(attempt_columns), n);
	for (int i = 0; i < n; i++)
	{
		Datum		v[lengthof(attempt_columns)];
		bool		nulls[lengthof(attempt_columns)];

		attempt_row(&attempts[i], v, nulls);
		spi_columns_add(&cols, v, nulls);
	}
	spi_columns_args(&cols, types, args);
	spi_run(&attempts_stmt, args, NULL, false, 0, SPI_OK_INSERT);
}

List *
delivery_repo_mark_sent(int64 *ids, char **message_ids, ItemPointerData *tids, int n)
{
	Datum		args[3];
	Datum	   *msgv;
	bool	   *msgnull;
	Datum	   *tidv;
	List	   *changed = NIL;

	if (n == 0)
		return NIL;
	msgv = palloc(sizeof(Datum) * n);
	msgnull = palloc0(sizeof(bool) * n);
	tidv = palloc(sizeof(Datum) * n);
	for (int i = 0; i < n; i++)
	{
		msgv[i] = spi_text_or_null(message_ids[i], &msgnull[i]);
		tidv[i] = PointerGetDatum(&tids[i]);
	}
	args[0] = spi_int8_array(ids, n);
	args[1] = spi_array(msgv, msgnull, n, TEXTOID);
	args[2] = spi_array(tidv, NULL, n, TIDOID);
	spi_run(&mark_sent_stmt, args, NULL, false, 0, SPI_OK_UPDATE_RETURNING);
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		FinishedDelivery *f = palloc0(sizeof(FinishedDelivery));
		bool		isnull;

		f->delivery_id = DatumGetInt64(spi_value(r, 1, &isnull));
		f->execution_id = DatumGetInt64(spi_value(r, 2, &isnull));
		f->node_id = spi_text(r, 3);
		f->status = "sent";
		f->provider = spi_text(r, 4);
		f->recipient = spi_text(r, 5);
		f->attempts = DatumGetInt32(spi_value(r, 6, &isnull));
		f->provider_message_id = spi_text(r, 7);
		f->last_error = spi_text(r, 8);
		f->complete = true;
		changed = lappend(changed, f);
	}
	return changed;
}

HTAB *
delivery_repo_summaries(int64 *execution_ids, int n)
{
	Datum		args[1];
	HTAB	   *result = spi_int64_hash("notiflow delivery summaries", n, sizeof(ExecutionSummaries));

	if (n == 0)
		return result;
	args[0] = spi_int8_array(execution_ids, n);
	spi_run(&summaries_stmt, args, NULL, false, 0, SPI_OK_SELECT);
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		bool		isnull;
		bool		found;
		int64		id = DatumGetInt64(spi_value(r, 1, &isnull));
		ExecutionSummaries *e = hash_search(result, &id, HASH_ENTER, &found);
		NodeSummary *ns = palloc0(sizeof(NodeSummary));

		if (!found)
			e->nodes = NIL;
		ns->node_id = spi_text(r, 2);
		read_summary(r, 3, &ns->summary);
		e->nodes = lappend(e->nodes, ns);
	}
	return result;
}
