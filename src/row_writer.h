/*
 * row_writer.h — inserts rows into one of notiflow's own tables without
 * planning or starting the executor, the way COPY FROM does: the heap insert,
 * the CHECK and NOT NULL constraints, the column defaults and every index,
 * partial ones included.  The engine writes a trigger's execution, steps and
 * deliveries through it; starting the executor for that one statement cost
 * about as much as the rest of the trigger.
 */
#ifndef NOTIFLOW_ROW_WRITER_H
#define NOTIFLOW_ROW_WRITER_H

#include "postgres.h"

typedef struct RowWriter RowWriter;

/*
 * Opens notiflow.<table> to insert rows that give the named columns (the
 * others take their defaults).  Returns NULL when the table needs the
 * executor, so that the caller runs its SQL statement instead: it has insert
 * triggers (a foreign key from it too) or rules, row-level security,
 * generated columns, is not a plain table or is a partition, lacks one of
 * the columns, the transaction is read-only, or the current user may not
 * insert into it (the statement then raises the usual error).  A unique
 * index that the row violates raises unique_violation, as INSERT does.
 */
extern RowWriter *row_writer_open(const char *table, const char *const *columns, int ncolumns);

/* Inserts one row: values and nulls in the order of the columns given to row_writer_open. */
extern void row_writer_insert(RowWriter *writer, const Datum *values, const bool *nulls);

/* Releases what row_writer_open took (the lock is kept until the transaction ends). */
extern void row_writer_close(RowWriter *writer);

#endif							/* NOTIFLOW_ROW_WRITER_H */
