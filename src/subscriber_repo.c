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

/* Loads one subscriber. */
bool
subscriber_repo_load(const char *id, SubscriberInfo *out)
{
	Datum		args[1] = {CStringGetTextDatum(id)};
	bool		isnull;
	ArrayType  *invalid;
	Datum	   *elems;
	bool	   *nulls;
	int			n;

	spi_run(&load_stmt, args, NULL, true, 1, SPI_OK_SELECT);
	if (SPI_processed == 0)
		return false;
	out->recipient = DatumGetJsonbPCopy(spi_value(0, 1, &isnull));
	out->preferences = DatumGetJsonbPCopy(spi_value(0, 2, &isnull));
	out->invalid_addresses = NIL;
	invalid = DatumGetArrayTypeP(spi_value(0, 3, &isnull));
	deconstruct_array(invalid, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	for (int i = 0; i < n; i++)
		if (!nulls[i])
			out->invalid_addresses = lappend(out->invalid_addresses, TextDatumGetCString(elems[i]));
	return true;
}
