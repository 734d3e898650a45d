/*
 * spi_util.h — prepared SPI plans kept for the life of the backend, and
 * small helpers to build their array arguments.  Every repository module
 * (workflow_repo.c, execution_repo.c, delivery_repo.c, subscriber_repo.c)
 * keeps its statements as static SpiStatements and runs them through here.
 */
#ifndef NOTIFLOW_SPI_UTIL_H
#define NOTIFLOW_SPI_UTIL_H

#include "postgres.h"
#include "executor/spi.h"
#include "utils/hsearch.h"

#define SPI_MAX_ARGS 32

typedef struct SpiStatement
{
	const char *sql;
	int			nargs;
	Oid			argtypes[SPI_MAX_ARGS];
	SPIPlanPtr	plan;			/* prepared on first use, then kept */
	uint64		epoch;			/* the plan epoch it was prepared in */
	int			cursor_options; /* CURSOR_OPT_GENERIC_PLAN: never a custom plan */
} SpiStatement;

/* How often the background workers have their statements planned again. */
#define NOTIFLOW_REPLAN_MS 10000

/* Has every statement prepared again at its next use (see spi_util.c). */
extern void spi_replan_all(void);

/* Calls spi_replan_all() when NOTIFLOW_REPLAN_MS have passed since it last did (workers' loops). */
extern void spi_replan_if_due(void);

/*
 * Runs a statement with the given arguments (nulls: ' ' or 'n' per argument,
 * or NULL when none is null) and returns the SPI result code; errors out
 * when the statement fails or does not return expect (if expect > 0).
 */
extern int	spi_run(SpiStatement *stmt, Datum *values, const char *nulls,
					bool read_only, long limit, int expect);

/* Returns column col (1-based) of row row of SPI_tuptable, setting *isnull. */
extern Datum spi_value(int row, int col, bool *isnull);

/*
 * Runs a statement that returns at most one row with an int8 first column
 * (spi_run's values and read_only); returns that value, or none when there
 * is no row.
 */
extern int64 spi_first_int8(SpiStatement *stmt, Datum *values, bool read_only, int64 none);

/* Returns column col of row row as a palloc'd C string, or NULL. */
extern char *spi_text(int row, int col);

/* Builds a one-dimensional array of the given element type. */
extern Datum spi_array(Datum *elems, bool *nulls, int n, Oid elemtype);

/*
 * The column arrays of a set-based statement (unnest($1::t1[], $2::t2[], ...)):
 * filled a row at a time from the same row builders that direct writes use,
 * then turned into the statement's array arguments.
 */
typedef struct SpiColumns
{
	int			ncols;
	int			nrows;			/* rows added */
	Datum	  **values;			/* [column][row] */
	bool	  **nulls;
} SpiColumns;

/* Prepares ncols columns for up to maxrows rows. */
extern void spi_columns_init(SpiColumns *cols, int ncols, int maxrows);

/* Adds a row: ncols values and nulls (NULL: none null). */
extern void spi_columns_add(SpiColumns *cols, const Datum *values, const bool *nulls);

/* Stores one array per column in args[0..ncols-1], column c of element type elemtypes[c]. */
extern void spi_columns_args(const SpiColumns *cols, const Oid *elemtypes, Datum *args);

/* A text datum for a C string, or a null (*isnull set) for NULL. */
extern Datum spi_text_or_null(const char *s, bool *isnull);

/* Builds an int8[] of n ids. */
extern Datum spi_int8_array(const int64 *ids, int n);

/* Runs a statement whose one argument is an int8[] of n ids (not at all when n is 0). */
extern void spi_run_with_ids(SpiStatement *stmt, const int64 *ids, int n, int expected);

/* Builds a hash table keyed by int64 (HASH_BLOBS) with entries of entrysize bytes. */
extern HTAB *spi_int64_hash(const char *name, int64 size, Size entrysize);

#endif							/* NOTIFLOW_SPI_UTIL_H */
