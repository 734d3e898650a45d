/*
 * safe_input.h — calls a type input function and turns its error into a
 * message instead of an abort, for validating user input (jsonpaths,
 * intervals, timestamps) where every problem must be reported.
 */
#ifndef NOTIFLOW_SAFE_INPUT_H
#define NOTIFLOW_SAFE_INPUT_H

#include "postgres.h"
#include "fmgr.h"

/*
 * Calls input function fn on src (in a subtransaction).  Returns true and
 * sets *result (allocated in the current memory context) when it parses;
 * otherwise returns false and sets *error to the input function's message.
 */
extern bool safe_input(PGFunction fn, const char *src, Datum *result, char **error);

#endif							/* NOTIFLOW_SAFE_INPUT_H */
