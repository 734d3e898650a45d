/*
 * safe_input.h — runs code whose error must become a value instead of an
 * abort: a type input function (validating jsonpaths, intervals, timestamps,
 * where every problem must be reported), or any piece of work that may fail
 * alone (an adapter's build, one Kafka message) while its neighbours go on.
 */
#ifndef NOTIFLOW_SAFE_INPUT_H
#define NOTIFLOW_SAFE_INPUT_H

#include "postgres.h"
#include "fmgr.h"

/*
 * Calls input function fn on src (in a subtransaction).  Returns true and
 * sets *result (allocated in the current memory context) when it parses;
 * otherwise returns false and sets *error to the input function's message.
 * An error that is not the input's fault (out of memory, a cancel: see
 * error_is_transient) is raised again, not reported as bad input.
 */
extern bool safe_input(PGFunction fn, const char *src, Datum *result, char **error);

/*
 * safe_input that turns every error into false, transient ones too (but a
 * cancel or shutdown: the caller's transaction is to end): for a caller that
 * must go on whatever happened (a dispatcher reading a provider's answer
 * after the request was sent; a stop's cancel makes it record again).
 */
extern bool safe_input_any(PGFunction fn, const char *src, Datum *result, char **error);

/*
 * Runs fn(arg) in an internal subtransaction, in the current memory context.
 * Returns NULL when it completed; otherwise rolls the subtransaction back and
 * returns the error it raised (copied into the current memory context).
 */
extern ErrorData *run_in_subtransaction(void (*fn) (void *arg), void *arg);

/*
 * True when an error caught by run_in_subtransaction is not the input's
 * fault (a cancel, a deadlock, resources exhausted...): a caller that would
 * reject the input for it raises it again instead (ReThrowError).
 */
extern bool error_is_transient(const ErrorData *edata);

/*
 * True for the transient errors that come from another transaction's locks
 * (a deadlock's victim, a serialization failure, a lock not available): the
 * same work run again in a later transaction, once the other has ended, goes
 * through.
 */
extern bool error_is_lock_conflict(const ErrorData *edata);

/* True for a cancel or a shutdown request (SQLSTATE class 57, operator intervention). */
extern bool error_is_interrupt(const ErrorData *edata);

#endif							/* NOTIFLOW_SAFE_INPUT_H */
