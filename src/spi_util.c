/*
 * spi_util.c — prepared SPI plans kept for the life of the backend.
 *
 * Statements are prepared on first use and kept with SPI_keepplan; the plan
 * cache revalidates them when the tables they read change (for example after
 * the extension is dropped and created again), so nothing is re-parsed per call.
 *
 * A kept plan is not rebuilt when a table merely grows: one planned while
 * the queue tables were nearly empty (a fresh installation) keeps its
 * sequential scans until autovacuum analyzes them.  The long-lived workers
 * therefore call spi_replan_if_due() in their loops (every NOTIFLOW_REPLAN_MS): the
 * next use of each statement prepares it again, and the planner sees the
 * tables' current size.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/timestamp.h"

#include "spi_util.h"

static uint64 plan_epoch = 1;

void
spi_replan_all(void)
{
	plan_epoch++;
}

void
spi_replan_if_due(void)
{
	static TimestampTz replanned_at = 0;
	TimestampTz now = GetCurrentTimestamp();

	if (TimestampDifferenceExceeds(replanned_at, now, NOTIFLOW_REPLAN_MS))
	{
		spi_replan_all();
		replanned_at = now;
	}
}

/* Prepares (once per plan epoch) and runs a kept statement. */
int
spi_run(SpiStatement *stmt, Datum *values, const char *nulls,
		bool read_only, long limit, int expect)
{
	int			rc;

	if (stmt->plan != NULL && stmt->epoch != plan_epoch)
	{
		SPI_freeplan(stmt->plan);
		stmt->plan = NULL;
	}
	if (stmt->plan == NULL)
	{
		SPIPlanPtr	plan = SPI_prepare_cursor(stmt->sql, stmt->nargs, stmt->argtypes,
											  stmt->cursor_options);

		if (plan == NULL)
			elog(ERROR, "notiflow: could not prepare statement: %s (%s)",
				 SPI_result_code_string(SPI_result), stmt->sql);
		if (SPI_keepplan(plan) != 0)
			elog(ERROR, "notiflow: could not keep prepared statement");
		stmt->plan = plan;
		stmt->epoch = plan_epoch;
	}
	rc = SPI_execute_plan(stmt->plan, values, nulls, read_only, limit);
	if (rc < 0 || (expect > 0 && rc != expect))
		elog(ERROR, "notiflow: statement failed: %s (%s)", SPI_result_code_string(rc), stmt->sql);
	return rc;
}

/* Returns one value of the last result. */
Datum
spi_value(int row, int col, bool *isnull)
{
	return SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col, isnull);
}

int64
spi_first_int8(SpiStatement *stmt, Datum *values, bool read_only, int64 none)
{
	bool		isnull;

	spi_run(stmt, values, NULL, read_only, 1, SPI_OK_SELECT);
	if (SPI_processed == 0)
		return none;
	return DatumGetInt64(spi_value(0, 1, &isnull));
}

/* Returns one value of the last result as text. */
char *
spi_text(int row, int col)
{
	bool		isnull;
	Datum		d = spi_value(row, col, &isnull);

	return isnull ? NULL : TextDatumGetCString(d);
}

/* Builds an array datum of elemtype from elems. */
Datum
spi_array(Datum *elems, bool *nulls, int n, Oid elemtype)
{
	int16		typlen;
	bool		typbyval;
	char		typalign;
	int			dims[1];
	int			lbs[1];

	if (n == 0)
		return PointerGetDatum(construct_empty_array(elemtype));
	get_typlenbyvalalign(elemtype, &typlen, &typbyval, &typalign);
	dims[0] = n;
	lbs[0] = 1;
	return PointerGetDatum(construct_md_array(elems, nulls, 1, dims, lbs,
											  elemtype, typlen, typbyval, typalign));
}

void
spi_columns_init(SpiColumns *cols, int ncols, int maxrows)
{
	cols->ncols = ncols;
	cols->nrows = 0;
	cols->values = palloc(sizeof(Datum *) * ncols);
	cols->nulls = palloc(sizeof(bool *) * ncols);
	for (int c = 0; c < ncols; c++)
	{
		cols->values[c] = palloc(sizeof(Datum) * Max(maxrows, 1));
		cols->nulls[c] = palloc0(sizeof(bool) * Max(maxrows, 1));
	}
}

void
spi_columns_add(SpiColumns *cols, const Datum *values, const bool *nulls)
{
	for (int c = 0; c < cols->ncols; c++)
	{
		cols->values[c][cols->nrows] = values[c];
		cols->nulls[c][cols->nrows] = nulls != NULL && nulls[c];
	}
	cols->nrows++;
}

void
spi_columns_args(const SpiColumns *cols, const Oid *elemtypes, Datum *args)
{
	for (int c = 0; c < cols->ncols; c++)
		args[c] = spi_array(cols->values[c], cols->nulls[c], cols->nrows, elemtypes[c]);
}

Datum
spi_text_or_null(const char *s, bool *isnull)
{
	*isnull = (s == NULL);
	return s ? CStringGetTextDatum(s) : (Datum) 0;
}

Datum
spi_int8_array(const int64 *ids, int n)
{
	Datum	   *elems = palloc(sizeof(Datum) * Max(n, 1));

	for (int i = 0; i < n; i++)
		elems[i] = Int64GetDatum(ids[i]);
	return spi_array(elems, NULL, n, INT8OID);
}

void
spi_run_with_ids(SpiStatement *stmt, const int64 *ids, int n, int expected)
{
	Datum		args[1];

	if (n == 0)
		return;
	args[0] = spi_int8_array(ids, n);
	spi_run(stmt, args, NULL, false, 0, expected);
}

HTAB *
spi_int64_hash(const char *name, int64 size, Size entrysize)
{
	HASHCTL		ctl;

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(int64);
	ctl.entrysize = entrysize;
	ctl.hcxt = CurrentMemoryContext;
	return hash_create(name, Max(size, 16), &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
}
