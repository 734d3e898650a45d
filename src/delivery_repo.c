/*
 * delivery_repo.c — data access for deliveries and the provider choice.
 *
 * Callers are connected to SPI.  The engine creates deliveries here
 * (set-based), the resume path reads their summary per action node, and the
 * delivery workers record outcomes through delivery_repo_set_status.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"

#include "delivery_repo.h"
#include "spi_util.h"

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

static SpiStatement summary_stmt = {
	"SELECT count(*)::int4,"
	"       (count(*) FILTER (WHERE status IN ('queued', 'sending')))::int4,"
	"       (count(*) FILTER (WHERE status IN ('sent', 'delivered')))::int4,"
	"       coalesce(jsonb_agg(jsonb_strip_nulls(jsonb_build_object("
	"           'id', id, 'status', status, 'provider', provider, 'recipient', recipient,"
	"           'attempts', attempts, 'provider_message_id', provider_message_id,"
	"           'error', last_error)) ORDER BY id), '[]')"
	"  FROM notiflow.deliveries WHERE execution_id = $1 AND node_id = $2",
	2, {INT8OID, TEXTOID}
};

static SpiStatement set_status_stmt = {
	"UPDATE notiflow.deliveries"
	"   SET status = $2, provider_message_id = coalesce($3, provider_message_id),"
	"       last_error = coalesce($4, last_error), updated_at = now(), lease_expires_at = NULL,"
	"       sent_at = CASE WHEN $2 IN ('sent', 'delivered') THEN coalesce(sent_at, now()) ELSE sent_at END,"
	"       finished_at = CASE WHEN $2 IN ('queued', 'sending') THEN NULL ELSE coalesce(finished_at, now()) END"
	" WHERE id = $1 AND (status IN ('queued', 'sending')"
	"                    OR (status = 'sent' AND $2 IN ('delivered', 'failed'))"
	"                    OR (status = 'delivered' AND $2 = 'failed'))"
	" RETURNING execution_id",
	4, {INT8OID, TEXTOID, TEXTOID, TEXTOID}
};

/* Inserts deliveries set-based. */
void
delivery_repo_insert(List *deliveries)
{
	int			n = list_length(deliveries);
	Datum	   *cols[8];
	bool	   *nulls[8];
	static const Oid types[8] = {INT8OID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, JSONBOID,
	TEXTOID, TEXTOID};
	Datum		args[8];
	ListCell   *lc;
	int			i = 0;

	if (n == 0)
		return;
	for (int c = 0; c < 8; c++)
	{
		cols[c] = palloc(sizeof(Datum) * n);
		nulls[c] = palloc0(sizeof(bool) * n);
	}
	foreach(lc, deliveries)
	{
		DeliveryRecord *d = lfirst(lc);

		cols[0][i] = Int64GetDatum(d->execution_id);
		cols[1][i] = CStringGetTextDatum(d->node_id);
		cols[2][i] = CStringGetTextDatum(d->channel);
		nulls[3][i] = (d->provider == NULL);
		cols[3][i] = d->provider ? CStringGetTextDatum(d->provider) : (Datum) 0;
		nulls[4][i] = (d->recipient == NULL);
		cols[4][i] = d->recipient ? CStringGetTextDatum(d->recipient) : (Datum) 0;
		cols[5][i] = JsonbPGetDatum(d->content);
		cols[6][i] = CStringGetTextDatum(d->status);
		nulls[7][i] = (d->last_error == NULL);
		cols[7][i] = d->last_error ? CStringGetTextDatum(d->last_error) : (Datum) 0;
		i++;
	}
	for (int c = 0; c < 8; c++)
		args[c] = spi_array(cols[c], nulls[c], n, types[c]);
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

/* Summarises one action node's deliveries. */
void
delivery_repo_summary(int64 execution_id, const char *node_id, DeliverySummary *out)
{
	Datum		args[2] = {Int64GetDatum(execution_id), CStringGetTextDatum(node_id)};
	bool		isnull;

	spi_run(&summary_stmt, args, NULL, false, 1, SPI_OK_SELECT);
	out->total = DatumGetInt32(spi_value(0, 1, &isnull));
	out->pending = DatumGetInt32(spi_value(0, 2, &isnull));
	out->succeeded = DatumGetInt32(spi_value(0, 3, &isnull));
	out->deliveries = DatumGetJsonbPCopy(spi_value(0, 4, &isnull));
}

/* Records a delivery's new status unless it already ended. */
bool
delivery_repo_set_status(int64 delivery_id, const char *status,
						 const char *provider_message_id, const char *error,
						 int64 *execution_id)
{
	Datum		args[4];
	char		nulls[4] = {' ', ' ', ' ', ' '};
	bool		isnull;

	args[0] = Int64GetDatum(delivery_id);
	args[1] = CStringGetTextDatum(status);
	args[2] = provider_message_id ? CStringGetTextDatum(provider_message_id) : (Datum) 0;
	if (provider_message_id == NULL)
		nulls[2] = 'n';
	args[3] = error ? CStringGetTextDatum(error) : (Datum) 0;
	if (error == NULL)
		nulls[3] = 'n';
	spi_run(&set_status_stmt, args, nulls, false, 0, SPI_OK_UPDATE_RETURNING);
	if (SPI_processed == 0)
		return false;
	*execution_id = DatumGetInt64(spi_value(0, 1, &isnull));
	return true;
}
