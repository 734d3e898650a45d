/*
 * workflow_repo.c — data access for workflows and workflow_versions.
 *
 * Callers are connected to SPI.  Versions are immutable rows; each carries a
 * global id that the per-backend definition cache uses as its key, so a
 * workflow deleted and created again never reuses a cached definition.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"

#include "spi_util.h"
#include "workflow_repo.h"

static SpiStatement current_stmt = {
	"SELECT w.active, w.current_version, v.id"
	"  FROM notiflow.workflows w"
	"  JOIN notiflow.workflow_versions v"
	"    ON v.workflow_key = w.key AND v.version = w.current_version"
	" WHERE w.key = $1",
	1, {TEXTOID}
};

static SpiStatement definition_stmt = {
	"SELECT definition FROM notiflow.workflow_versions WHERE id = $1",
	1, {INT8OID}
};

static SpiStatement unchanged_stmt = {
	"SELECT w.current_version"
	"  FROM notiflow.workflows w"
	"  JOIN notiflow.workflow_versions v"
	"    ON v.workflow_key = w.key AND v.version = w.current_version"
	" WHERE w.key = $1 AND v.definition = $2 AND w.name = $3",
	3, {TEXTOID, JSONBOID, TEXTOID}
};

static SpiStatement lock_stmt = {
	"INSERT INTO notiflow.workflows AS w (key, name, current_version) VALUES ($1, $2, 1)"
	" ON CONFLICT (key) DO UPDATE"
	"   SET name = excluded.name, updated_at = now(),"
	"       current_version = greatest(w.current_version,"
	"                                  (SELECT max(version) FROM notiflow.workflow_versions"
	"                                    WHERE workflow_key = excluded.key)) + 1"
	" RETURNING current_version",
	2, {TEXTOID, TEXTOID}
};

static SpiStatement version_id_stmt = {
	"SELECT id FROM notiflow.workflow_versions WHERE workflow_key = $1 AND version = $2",
	2, {TEXTOID, INT4OID}
};

static SpiStatement insert_version_stmt = {
	"INSERT INTO notiflow.workflow_versions (workflow_key, version, definition) VALUES ($1, $2, $3)",
	3, {TEXTOID, INT4OID, JSONBOID}
};

/*
 * Reads the current version of a workflow, with a fresh snapshot (not
 * read-only): the statement's own snapshot, taken before a version committed
 * meanwhile, would give an older one that the cache then kept.
 */
bool
workflow_repo_current(const char *key, WorkflowRef *ref)
{
	Datum		args[1] = {CStringGetTextDatum(key)};
	bool		isnull;

	spi_run(&current_stmt, args, NULL, false, 1, SPI_OK_SELECT);
	if (SPI_processed == 0)
		return false;
	ref->active = DatumGetBool(spi_value(0, 1, &isnull));
	ref->version = DatumGetInt32(spi_value(0, 2, &isnull));
	ref->version_id = DatumGetInt64(spi_value(0, 3, &isnull));
	return true;
}

/*
 * The id of a workflow's version, or 0 when there is none.  Read with a fresh
 * snapshot (not read-only), as the locking read of the executions that name
 * it: a version committed with such an execution is seen.
 */
int64
workflow_repo_version_id(const char *key, int version)
{
	Datum		args[2] = {CStringGetTextDatum(key), Int32GetDatum(version)};

	return spi_first_int8(&version_id_stmt, args, false, 0);
}

/* Returns a version's definition in the caller's memory context (fresh snapshot, as above). */
Jsonb *
workflow_repo_definition(int64 version_id)
{
	Datum		args[1] = {Int64GetDatum(version_id)};
	bool		isnull;
	Datum		d;

	spi_run(&definition_stmt, args, NULL, false, 1, SPI_OK_SELECT);
	if (SPI_processed == 0)
		elog(ERROR, "notiflow: workflow version %lld vanished", (long long) version_id);
	d = spi_value(0, 1, &isnull);
	/* detoasted copy: a small definition is stored with a short varlena header */
	return DatumGetJsonbPCopy(d);
}

/* Stores a new version unless the definition is unchanged. */
int
workflow_repo_put(const char *key, const char *name, Jsonb *definition)
{
	Datum		args[3];
	bool		isnull;
	int			version;

	args[0] = CStringGetTextDatum(key);
	args[1] = JsonbPGetDatum(definition);
	args[2] = CStringGetTextDatum(name);
	spi_run(&unchanged_stmt, args, NULL, false, 1, SPI_OK_SELECT);
	if (SPI_processed == 1)
		return DatumGetInt32(spi_value(0, 1, &isnull));

	args[1] = CStringGetTextDatum(name);
	spi_run(&lock_stmt, args, NULL, false, 0, SPI_OK_INSERT_RETURNING);
	version = DatumGetInt32(spi_value(0, 1, &isnull));

	args[1] = Int32GetDatum(version);
	args[2] = JsonbPGetDatum(definition);
	spi_run(&insert_version_stmt, args, NULL, false, 0, SPI_OK_INSERT);
	return version;
}
