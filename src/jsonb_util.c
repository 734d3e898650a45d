/*
 * jsonb_util.c — helpers over PostgreSQL's jsonb and jsonpath.
 *
 * Everything goes through the server's own jsonb functions (jsonb_concat,
 * jsonb_path_match, jsonb_path_query_first): notiflow has no JSON parser or
 * expression language of its own.
 */
#include "postgres.h"

#include "fmgr.h"
#include "nodes/value.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/memutils.h"
#include "utils/numeric.h"

#include "jsonb_util.h"

/* Returns the value of key in obj. */
JsonbValue *
jsonb_get(Jsonb *obj, const char *key)
{
	if (obj == NULL || !JB_ROOT_IS_OBJECT(obj))
		return NULL;
	return getKeyJsonValueFromContainer(&obj->root, key, strlen(key), NULL);
}

/* Returns the string value of key. */
char *
jsonb_get_string(Jsonb *obj, const char *key)
{
	JsonbValue *v = jsonb_get(obj, key);

	if (v == NULL || v->type != jbvString)
		return NULL;
	return pnstrdup(v->val.string.val, v->val.string.len);
}

/* Returns the value of key as a jsonb. */
Jsonb *
jsonb_get_jsonb(Jsonb *obj, const char *key)
{
	JsonbValue *v = jsonb_get(obj, key);

	return v ? JsonbValueToJsonb(v) : NULL;
}

/* Makes a jsonb string. */
Jsonb *
jsonb_make_string(const char *s)
{
	JsonbValue	v;

	v.type = jbvString;
	v.val.string.val = (char *) s;
	v.val.string.len = strlen(s);
	return JsonbValueToJsonb(&v);
}

/* Makes a jsonb number. */
Jsonb *
jsonb_make_int(int64 n)
{
	JsonbValue	v;

	v.type = jbvNumeric;
	v.val.numeric = int64_to_numeric(n);
	return JsonbValueToJsonb(&v);
}

/* Makes a jsonb boolean. */
Jsonb *
jsonb_make_bool(bool b)
{
	JsonbValue	v;

	v.type = jbvBool;
	v.val.boolean = b;
	return JsonbValueToJsonb(&v);
}

/* Makes a jsonb null. */
Jsonb *
jsonb_make_null(void)
{
	JsonbValue	v;

	v.type = jbvNull;
	return JsonbValueToJsonb(&v);
}

/* Makes {}. */
Jsonb *
jsonb_make_empty_object(void)
{
	return jsonb_make_object(0, NULL, NULL);
}

/* Builds an array of strings from a List of C strings. */
Jsonb *
jsonb_make_string_array(List *strings)
{
	JsonbParseState *state = NULL;
	JsonbValue *res;
	ListCell   *lc;

	pushJsonbValue(&state, WJB_BEGIN_ARRAY, NULL);
	foreach(lc, strings)
	{
		JsonbValue	v;

		v.type = jbvString;
		v.val.string.val = (char *) lfirst(lc);
		v.val.string.len = strlen(v.val.string.val);
		pushJsonbValue(&state, WJB_ELEM, &v);
	}
	res = pushJsonbValue(&state, WJB_END_ARRAY, NULL);
	return JsonbValueToJsonb(res);
}

/* Builds an object from keys and values. */
Jsonb *
jsonb_make_object(int n, const char *const *keys, Jsonb *const *values)
{
	JsonbParseState *state = NULL;
	JsonbValue *res;

	pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
	for (int i = 0; i < n; i++)
	{
		JsonbValue	k;
		JsonbValue	v;

		k.type = jbvString;
		k.val.string.val = (char *) keys[i];
		k.val.string.len = strlen(keys[i]);
		pushJsonbValue(&state, WJB_KEY, &k);
		if (values[i] == NULL)
		{
			v.type = jbvNull;
			pushJsonbValue(&state, WJB_VALUE, &v);
		}
		else if (JB_ROOT_IS_SCALAR(values[i]))
		{
			JsonbExtractScalar(&values[i]->root, &v);
			pushJsonbValue(&state, WJB_VALUE, &v);
		}
		else
		{
			v.type = jbvBinary;
			v.val.binary.data = &values[i]->root;
			v.val.binary.len = VARSIZE(values[i]) - VARHDRSZ;
			pushJsonbValue(&state, WJB_VALUE, &v);
		}
	}
	res = pushJsonbValue(&state, WJB_END_OBJECT, NULL);
	return JsonbValueToJsonb(res);
}

/* Returns obj || {key: value}. */
Jsonb *
jsonb_with_key(Jsonb *obj, const char *key, Jsonb *value)
{
	Jsonb	   *pair = jsonb_make_object(1, &key, &value);

	if (obj == NULL || !JB_ROOT_IS_OBJECT(obj))
		return pair;
	return DatumGetJsonbP(DirectFunctionCall2(jsonb_concat, JsonbPGetDatum(obj),
											  JsonbPGetDatum(pair)));
}

/* Sets a nested path, creating intermediate objects. */
Jsonb *
jsonb_with_path(Jsonb *obj, List *path, int skip, Jsonb *value)
{
	const char *key = strVal(list_nth(path, skip));
	Jsonb	   *child;

	if (skip == list_length(path) - 1)
		return jsonb_with_key(obj, key, value);
	child = jsonb_get_jsonb(obj, key);
	if (child == NULL || !JB_ROOT_IS_OBJECT(child))
		child = NULL;
	return jsonb_with_key(obj, key, jsonb_with_path(child, path, skip + 1, value));
}

/* Returns the text of a scalar. */
char *
jsonb_scalar_text(Jsonb *value)
{
	JsonbValue	v;

	if (JB_ROOT_IS_SCALAR(value) && JsonbExtractScalar(&value->root, &v) && v.type == jbvString)
		return pnstrdup(v.val.string.val, v.val.string.len);
	return JsonbToCString(NULL, &value->root, VARSIZE(value));
}

/* Calls a jsonb_path_* function (target, path, vars {}, silent true). */
static Datum
call_jsonpath_function(PGFunction fn, Jsonb *context, JsonPath *path, bool *isnull)
{
	LOCAL_FCINFO(fcinfo, 4);
	static Jsonb *empty_vars = NULL;
	Datum		result;

	if (empty_vars == NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

		empty_vars = jsonb_make_empty_object();
		MemoryContextSwitchTo(old);
	}
	InitFunctionCallInfoData(*fcinfo, NULL, 4, InvalidOid, NULL, NULL);
	fcinfo->args[0].value = JsonbPGetDatum(context);
	fcinfo->args[0].isnull = false;
	fcinfo->args[1].value = PointerGetDatum(path);
	fcinfo->args[1].isnull = false;
	fcinfo->args[2].value = JsonbPGetDatum(empty_vars);
	fcinfo->args[2].isnull = false;
	fcinfo->args[3].value = BoolGetDatum(true);
	fcinfo->args[3].isnull = false;
	result = fn(fcinfo);
	*isnull = fcinfo->isnull;
	return result;
}

/* Evaluates a jsonpath predicate. */
bool
jsonpath_match(Jsonb *context, JsonPath *path, bool *isnull)
{
	Datum		d = call_jsonpath_function(jsonb_path_match, context, path, isnull);

	return *isnull ? false : DatumGetBool(d);
}

/* Returns the first item selected by a jsonpath. */
Jsonb *
jsonpath_first(Jsonb *context, JsonPath *path)
{
	bool		isnull;
	Datum		d = call_jsonpath_function(jsonb_path_query_first, context, path, &isnull);

	return isnull ? NULL : DatumGetJsonbP(d);
}
