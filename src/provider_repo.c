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

static SpiStatement circuit_stmt = {
	"SELECT state, consecutive_failures,"
	"       coalesce(extract(epoch FROM clock_timestamp() - opened_at) * 1000, 0)::float8,"
	"       CASE WHEN state = 'half_open'"
	"            THEN extract(epoch FROM clock_timestamp() - updated_at) * 1000 ELSE 0 END::float8"
	"  FROM notiflow.provider_circuits WHERE provider = $1",
	1, {TEXTOID}
};

/*
 * Takes the probe of an open circuit, or of a half-open one whose probe was
 * taken more than $2 ms ago and never reported (its dispatcher died, or the
 * probe ended without a verdict: deferred, rate-limited, refused): updated_at
 * of a half-open circuit is when its probe was taken.  A row locked by
 * another transaction is skipped, not waited for: that one is taking the
 * probe or recording a verdict.  (Waiting, a claim stalled its dispatcher
 * behind an operator's open transaction, and two claims probing two
 * providers in opposite orders deadlocked.)
 */
static SpiStatement probe_stmt = {
	"UPDATE notiflow.provider_circuits SET state = 'half_open', updated_at = clock_timestamp()"
	" WHERE provider = (SELECT provider FROM notiflow.provider_circuits"
	"                    WHERE provider = $1"
	"                      AND (state = 'open'"
	"                           OR (state = 'half_open'"
	"                               AND updated_at < clock_timestamp() - $2 * interval '1 millisecond'))"
	"                      FOR UPDATE SKIP LOCKED)",
	2, {TEXTOID, INT4OID}
};

static SpiStatement circuit_result_stmt = {
	"INSERT INTO notiflow.provider_circuits AS c"
	"       (provider, state, consecutive_failures, opened_at, last_error)"
	" VALUES ($1, CASE WHEN NOT $2 AND $3 <= 1 THEN 'open' ELSE 'closed' END,"
	"         CASE WHEN $2 THEN 0 ELSE 1 END,"
	"         CASE WHEN NOT $2 AND $3 <= 1 THEN now() END, $4)"
	" ON CONFLICT (provider) DO UPDATE SET"
	"   consecutive_failures = CASE WHEN $2 THEN 0 ELSE c.consecutive_failures + 1 END,"
	"   state = CASE WHEN $2 THEN 'closed'"
	"                WHEN c.state = 'half_open' OR c.consecutive_failures + 1 >= $3 THEN 'open'"
	"                ELSE c.state END,"
	"   opened_at = CASE WHEN $2 THEN NULL"
	"                    WHEN c.state = 'half_open'"
	"                      OR (c.state = 'closed' AND c.consecutive_failures + 1 >= $3) THEN now()"
	"                    ELSE c.opened_at END,"
	"   last_error = coalesce($4, c.last_error), updated_at = now()",
	4, {TEXTOID, BOOLOID, INT4OID, TEXTOID}
};

/* Reads a circuit. */
void
provider_repo_circuit(const char *name, CircuitState *out)
{
	Datum		args[1] = {CStringGetTextDatum(name)};
	bool		isnull;

	memset(out, 0, sizeof(CircuitState));
	strlcpy(out->state, "closed", sizeof(out->state));
	spi_run(&circuit_stmt, args, NULL, false, 1, SPI_OK_SELECT);
	if (SPI_processed == 0)
		return;
	strlcpy(out->state, spi_text(0, 1), sizeof(out->state));
	out->failures = DatumGetInt32(spi_value(0, 2, &isnull));
	out->open_for_ms = DatumGetFloat8(spi_value(0, 3, &isnull));
	out->probe_for_ms = DatumGetFloat8(spi_value(0, 4, &isnull));
}

/* Takes the probe of an open circuit (or a lost probe's, older than lost_after_ms). */
bool
provider_repo_circuit_probe(const char *name, int lost_after_ms)
{
	Datum		args[2] = {CStringGetTextDatum(name), Int32GetDatum(lost_after_ms)};

	spi_run(&probe_stmt, args, NULL, false, 0, SPI_OK_UPDATE);
	return SPI_processed == 1;
}

static SpiStatement release_probe_stmt = {
	"UPDATE notiflow.provider_circuits SET state = 'open', updated_at = clock_timestamp()"
	" WHERE provider = $1 AND state = 'half_open'",
	1, {TEXTOID}
};

/* Gives a probe back without a verdict: the circuit is open again, cooled, for the next claim to probe. */
void
provider_repo_circuit_release_probe(const char *name)
{
	Datum		args[1] = {CStringGetTextDatum(name)};

	spi_run(&release_probe_stmt, args, NULL, false, 0, SPI_OK_UPDATE);
}

/* Records a result on the circuit. */
void
provider_repo_circuit_result(const char *name, bool success, int threshold, const char *error)
{
	Datum		args[4];
	char		nulls[4] = {' ', ' ', ' ', ' '};

	args[0] = CStringGetTextDatum(name);
	args[1] = BoolGetDatum(success);
	args[2] = Int32GetDatum(threshold);
	args[3] = error ? CStringGetTextDatum(error) : (Datum) 0;
	if (error == NULL)
		nulls[3] = 'n';
	spi_run(&circuit_result_stmt, args, nulls, false, 0, SPI_OK_INSERT);
}
