/*
 * provider_repo.c — data access for providers.  Callers are connected to SPI.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "utils/builtins.h"

#include "provider_repo.h"
#include "spi_util.h"

static SpiStatement load_stmt = {
	"SELECT name, channel, kind, config, enabled FROM notiflow.providers WHERE name = $1",
	1, {TEXTOID}
};

/* Loads one provider. */
bool
provider_repo_load(const char *name, ProviderRow *out)
{
	Datum		args[1] = {CStringGetTextDatum(name)};
	bool		isnull;

	spi_run(&load_stmt, args, NULL, true, 1, SPI_OK_SELECT);
	if (SPI_processed == 0)
		return false;
	out->name = spi_text(0, 1);
	out->channel = spi_text(0, 2);
	out->kind = spi_text(0, 3);
	out->config = DatumGetJsonbPCopy(spi_value(0, 4, &isnull));
	out->enabled = DatumGetBool(spi_value(0, 5, &isnull));
	return true;
}
