/*
 * subscriber_repo.c — data access for subscribers.
 *
 * Callers are connected to SPI.  A subscriber is read as the recipient object
 * that templates and jsonpaths see, plus its preferences and the addresses
 * providers reported invalid.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"

#include "spi_util.h"
#include "subscriber_repo.h"

static SpiStatement load_stmt = {
	"SELECT jsonb_strip_nulls(jsonb_build_object("
	"           'subscriber_id', id, 'name', name, 'email', email, 'phone', phone,"
	"           'locale', locale, 'timezone', timezone, 'data', data, 'push', push,"
	"           'chat', chat)),"
	"       preferences, invalid_addresses"
	"  FROM notiflow.subscribers WHERE id = $1",
	1, {TEXTOID}
};

static SpiStatement load_many_stmt = {
	"SELECT id, jsonb_strip_nulls(jsonb_build_object("
	"           'subscriber_id', id, 'name', name, 'email', email, 'phone', phone,"
	"           'locale', locale, 'timezone', timezone, 'data', data, 'push', push,"
	"           'chat', chat)),"
	"       preferences, invalid_addresses"
	"  FROM unnest($1::text[]) AS k(wanted) JOIN notiflow.subscribers s ON s.id = k.wanted",
	1, {TEXTARRAYOID}
};

/* Reads the row at index r of a subscriber query (columns from 'first'). */
static void
read_subscriber(uint64 r, int first, SubscriberInfo *out)
{
	bool		isnull;
	ArrayType  *invalid;
	Datum	   *elems;
	bool	   *nulls;
	int			n;

	out->recipient = DatumGetJsonbPCopy(spi_value(r, first, &isnull));
	out->preferences = DatumGetJsonbPCopy(spi_value(r, first + 1, &isnull));
	out->invalid_addresses = NIL;
	invalid = DatumGetArrayTypeP(spi_value(r, first + 2, &isnull));
	deconstruct_array(invalid, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	for (int i = 0; i < n; i++)
		if (!nulls[i])
			out->invalid_addresses = lappend(out->invalid_addresses, TextDatumGetCString(elems[i]));
}

/* Loads many subscribers with one query; returns a List of SubscriberInfo * (found ones). */
List *
subscriber_repo_load_many(List *ids)
{
	Datum	   *elems = palloc(sizeof(Datum) * Max(list_length(ids), 1));
	Datum		args[1];
	ListCell   *lc;
	int			i = 0;
	List	   *found = NIL;

	foreach(lc, ids)
		elems[i++] = CStringGetTextDatum((char *) lfirst(lc));
	args[0] = spi_array(elems, NULL, i, TEXTOID);
	spi_run(&load_many_stmt, args, NULL, true, 0, SPI_OK_SELECT);
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		SubscriberInfo *info = palloc0(sizeof(SubscriberInfo));

		info->id = spi_text(r, 1);
		read_subscriber(r, 2, info);
		found = lappend(found, info);
	}
	return found;
}

/* Loads one subscriber. */
bool
subscriber_repo_load(const char *id, SubscriberInfo *out)
{
	Datum		args[1] = {CStringGetTextDatum(id)};

	spi_run(&load_stmt, args, NULL, true, 1, SPI_OK_SELECT);
	if (SPI_processed == 0)
		return false;
	out->id = pstrdup(id);
	read_subscriber(0, 1, out);
	return true;
}
