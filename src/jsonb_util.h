/*
 * jsonb_util.h — small helpers over PostgreSQL's jsonb and jsonpath: reading
 * keys, building objects, and evaluating compiled jsonpaths against the
 * execution context.
 */
#ifndef NOTIFLOW_JSONB_UTIL_H
#define NOTIFLOW_JSONB_UTIL_H

#include "postgres.h"
#include "nodes/pg_list.h"
#include "utils/jsonb.h"
#include "utils/jsonpath.h"
#include "utils/timestamp.h"

/* The integer value of v, or def when v is NULL or not a number. */
extern int	jsonb_value_int(const JsonbValue *v, int def);

/*
 * The integer value of v bounded to [min, INT_MAX], or def when v is NULL or
 * not a number: never raises, for values a worker reads from rows written
 * by anyone (a raise would end the worker, and it would meet them again).
 */
extern int	jsonb_value_int_bounded(const JsonbValue *v, int def, int min);

/* The integer value of key in object obj, or def when it is missing or not a number. */
extern int	jsonb_get_int(Jsonb *obj, const char *key, int def);

/* Returns the value of key in object obj, or NULL (also when obj is not an object). */
extern JsonbValue *jsonb_get(Jsonb *obj, const char *key);

/* Returns the string value of key, or NULL when absent or not a string. */
extern char *jsonb_get_string(Jsonb *obj, const char *key);

/* Returns the value of key as a jsonb, or NULL when absent. */
extern Jsonb *jsonb_get_jsonb(Jsonb *obj, const char *key);

/* Makes jsonb values. */
extern Jsonb *jsonb_make_string(const char *s);
extern Jsonb *jsonb_make_int(int64 n);
extern Jsonb *jsonb_make_bool(bool b);
extern Jsonb *jsonb_make_null(void);
extern Jsonb *jsonb_make_empty_object(void);
extern Jsonb *jsonb_make_timestamptz(TimestampTz ts);

/* Builds an object from n keys and values (a NULL value is JSON null). */
extern Jsonb *jsonb_make_object(int n, const char *const *keys, Jsonb *const *values);

/* The same, leaving out the pairs whose value is NULL (as jsonb_strip_nulls would). */
extern Jsonb *jsonb_make_object_present(int n, const char *const *keys, Jsonb *const *values);

/* Builds an array of strings from a List of C strings. */
extern Jsonb *jsonb_make_string_array(List *strings);

/* Builds an array of the values (NULL: a JSON null), copied as they are. */
extern Jsonb *jsonb_make_array(int n, Jsonb *const *values);

/* Returns obj with key set to value (obj may be NULL: a new object). */
extern Jsonb *jsonb_with_key(Jsonb *obj, const char *key, Jsonb *value);

/* Returns obj with the nested path (a List of String) set to value, creating objects on the way. */
extern Jsonb *jsonb_with_path(Jsonb *obj, List *path, int skip, Jsonb *value);

/* Text of a scalar: the string itself, or the JSON text of anything else. */
extern char *jsonb_scalar_text(Jsonb *value);

/* Evaluates a jsonpath predicate; NULL result (not a boolean) sets *isnull. */
extern bool jsonpath_match(Jsonb *context, JsonPath *path, bool *isnull);

/* Returns the first item a jsonpath selects, or NULL when it selects nothing. */
extern Jsonb *jsonpath_first(Jsonb *context, JsonPath *path);

#endif							/* NOTIFLOW_JSONB_UTIL_H */
