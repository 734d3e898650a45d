/*
 * jsonb_util.c — helpers over PostgreSQL's jsonb and jsonpath.
 *
 * Everything goes through the server's own jsonb functions (iterators,
 * jsonb_path_match, jsonb_path_query_first): notiflow has no JSON parser or
 * expression language of its own.  The shortcuts are the engine's hottest
 * helpers: jsonb_make_object and jsonb_make_array lay out a container in
 * jsonb's binary format (utils/jsonb.h) around values that are already
 * jsonb, copying them as they are, where pushJsonbValue would unpack every
 * nested value and serialize it again; the scalar makers lay out their one
 * value directly.  The bytes are the same as the server's own functions make.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "nodes/value.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/datetime.h"
#include "utils/json.h"
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
int
jsonb_value_int(const JsonbValue *v, int def)
{
	if (v == NULL || v->type != jbvNumeric)
		return def;
	return DatumGetInt32(DirectFunctionCall1(numeric_int4, NumericGetDatum(v->val.numeric)));
}

int
jsonb_value_int_bounded(const JsonbValue *v, int def, int min)
{
	bool		out_of_range = false;
	int32		i;

	if (v == NULL || v->type != jbvNumeric)
		return def;
	i = numeric_int4_opt_error(v->val.numeric, &out_of_range);
	if (!out_of_range)
		return Max(i, min);
	/* beyond int4 (rare): its sign says which bound */
	return DatumGetFloat8(DirectFunctionCall1(numeric_float8_no_overflow,
											  NumericGetDatum(v->val.numeric))) < 0 ? min : PG_INT32_MAX;
}

int
jsonb_get_int(Jsonb *obj, const char *key, int def)
{
	return jsonb_value_int(jsonb_get(obj, key), def);
}

Jsonb *
jsonb_get_jsonb(Jsonb *obj, const char *key)
{
	JsonbValue *v = jsonb_get(obj, key);

	return v ? JsonbValueToJsonb(v) : NULL;
}

/*
 * A scalar jsonb laid out directly: jsonb stores a scalar as a one-element
 * array flagged JB_FSCALAR, its JEntry holding the type and (the first entry
 * of an array carries an offset) the end of its data.  The bytes are those
 * JsonbValueToJsonb makes, without its parse state and buffers.
 */
static Jsonb *
make_scalar(uint32 type, const void *data, Size len)
{
	Size		size = VARHDRSZ + sizeof(uint32) + sizeof(JEntry) + len;
	Jsonb	   *result;

	if (len > JENTRY_OFFLENMASK)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("string too long to represent as jsonb string"),
				 errdetail("Due to an implementation restriction, jsonb strings cannot exceed %d bytes.",
						   JENTRY_OFFLENMASK)));
	result = palloc(size);
	SET_VARSIZE(result, size);
	result->root.header = 1 | JB_FARRAY | JB_FSCALAR;
	result->root.children[0] = type | (uint32) len | JENTRY_HAS_OFF;
	if (len > 0)
		memcpy(&result->root.children[1], data, len);
	return result;
}

/* Makes a jsonb string. */
Jsonb *
jsonb_make_string(const char *s)
{
	return make_scalar(JENTRY_ISSTRING, s, strlen(s));
}

/* Makes a jsonb number (the data of a scalar starts int-aligned: no padding). */
Jsonb *
jsonb_make_int(int64 n)
{
	Numeric		num = int64_to_numeric(n);

	return make_scalar(JENTRY_ISNUMERIC, num, VARSIZE_ANY(num));
}

/* Makes a jsonb boolean. */
Jsonb *
jsonb_make_bool(bool b)
{
	return make_scalar(b ? JENTRY_ISBOOL_TRUE : JENTRY_ISBOOL_FALSE, NULL, 0);
}

/* Makes a jsonb null. */
Jsonb *
jsonb_make_null(void)
{
	return make_scalar(JENTRY_ISNULL, NULL, 0);
}

/* Makes {}. */
Jsonb *
jsonb_make_empty_object(void)
{
	return jsonb_make_object(0, NULL, NULL);
}

/* Makes a timestamp a JSON string in ISO 8601 (as to_jsonb does), whatever DateStyle says. */
Jsonb *
jsonb_make_timestamptz(TimestampTz ts)
{
	char		buf[MAXDATELEN + 1];

	JsonEncodeDateTime(buf, TimestampTzGetDatum(ts), TIMESTAMPTZOID, NULL);
	return jsonb_make_string(buf);
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

/* jsonb's key order: shorter first, then bytewise. */
static int
key_cmp(const char *a, const char *b)
{
	size_t		la = strlen(a);
	size_t		lb = strlen(b);

	if (la != lb)
		return la < lb ? -1 : 1;
	return memcmp(a, b, la);
}

/* Pads buf with zero bytes to a 4-byte boundary (jsonb aligns numerics and containers). */
static void
pad_to_int(StringInfo buf)
{
	while (buf->len % sizeof(uint32) != 0)
		appendStringInfoChar(buf, '\0');
}

/*
 * Appends a value's data to buf in jsonb's binary format and returns its
 * JEntry (with the data's length).
 */
static JEntry
append_value(StringInfo buf, Jsonb *v)
{
	int			before = buf->len;

	if (v == NULL)
		return JENTRY_ISNULL;
	if (JB_ROOT_IS_SCALAR(v))
	{
		/* the one element's entry and data, read in place (make_scalar's layout) */
		JEntry		entry = v->root.children[0];
		const char *data = (const char *) &v->root.children[1];
		uint32		len = JBE_OFFLENFLD(entry);

		if (JBE_ISNULL(entry))
			return JENTRY_ISNULL;
		if (JBE_ISBOOL_TRUE(entry))
			return JENTRY_ISBOOL_TRUE;
		if (JBE_ISBOOL_FALSE(entry))
			return JENTRY_ISBOOL_FALSE;
		if (JBE_ISSTRING(entry))
		{
			appendBinaryStringInfo(buf, data, len);
			return JENTRY_ISSTRING | len;
		}
		if (JBE_ISNUMERIC(entry))
		{
			pad_to_int(buf);
			appendBinaryStringInfo(buf, data, VARSIZE_ANY(data));
			return JENTRY_ISNUMERIC | (uint32) (buf->len - before);
		}
		elog(ERROR, "notiflow: unexpected jsonb scalar entry %08x", entry);
	}
	/* a container keeps its bytes: its offsets are relative to itself */
	pad_to_int(buf);
	appendBinaryStringInfo(buf, (char *) &v->root, VARSIZE(v) - VARHDRSZ);
	return JENTRY_ISCONTAINER | (uint32) (buf->len - before);
}

/*
 * Turns the lengths of n JEntries into jsonb's form: every
 * JB_OFFSET_STRIDE'th entry holds the end offset of its data instead.
 */
static void
set_offsets(JEntry *entries, int n)
{
	uint32		totallen = 0;

	for (int i = 0; i < n; i++)
	{
		uint32		len = JBE_OFFLENFLD(entries[i]);

		totallen += len;
		if (totallen > JENTRY_OFFLENMASK)
			ereport(ERROR,
					(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
					 errmsg("total size of jsonb elements exceeds the maximum of %d bytes",
							JENTRY_OFFLENMASK)));
		if (i % JB_OFFSET_STRIDE == 0)
			entries[i] = (entries[i] & JENTRY_TYPEMASK) | totallen | JENTRY_HAS_OFF;
	}
}

/* Builds an array of the values (NULL: a JSON null), copied as they are. */
Jsonb *
jsonb_make_array(int n, Jsonb *const *values)
{
	StringInfoData buf;
	JEntry	   *entries = palloc0(sizeof(JEntry) * Max(n, 1));
	uint32		header = n | JB_FARRAY;
	int			data_start;
	Jsonb	   *result;

	initStringInfo(&buf);
	enlargeStringInfo(&buf, VARHDRSZ + sizeof(uint32) + n * sizeof(JEntry));
	buf.len = VARHDRSZ;
	appendBinaryStringInfo(&buf, (char *) &header, sizeof(header));
	data_start = buf.len;
	buf.len += n * sizeof(JEntry);
	buf.data[buf.len] = '\0';
	for (int i = 0; i < n; i++)
		entries[i] = append_value(&buf, values[i]);
	set_offsets(entries, n);
	memcpy(buf.data + data_start, entries, sizeof(JEntry) * n);
	result = (Jsonb *) buf.data;
	SET_VARSIZE(result, buf.len);
	return result;
}

/* Builds an object from keys and values. */
Jsonb *
jsonb_make_object(int n, const char *const *keys, Jsonb *const *values)
{
	int		   *order = palloc(sizeof(int) * Max(n, 1));
	int			kept = 0;
	StringInfoData buf;
	JEntry	   *entries;
	int			data_start;
	Jsonb	   *result;

	/*
	 * The pairs in jsonb's key order (shorter keys first, then bytewise); of
	 * equal keys the last one given wins, as in jsonb_build_object.
	 */
	for (int i = 0; i < n; i++)
		order[i] = i;
	for (int i = 1; i < n; i++)
	{
		int			cur = order[i];
		int			j = i;

		while (j > 0 && key_cmp(keys[order[j - 1]], keys[cur]) > 0)
		{
			order[j] = order[j - 1];
			j--;
		}
		order[j] = cur;
	}
	for (int i = 0; i < n; i++)
	{
		if (i + 1 < n && key_cmp(keys[order[i]], keys[order[i + 1]]) == 0)
			continue;			/* a later one of equal keys follows: it wins */
		order[kept++] = order[i];
	}

	/*
	 * Assembled directly in jsonb's binary format: the values are copied as
	 * they are instead of being unpacked into JsonbValues and serialized
	 * again (which pushJsonbValue does with every nested container).
	 */
	initStringInfo(&buf);
	enlargeStringInfo(&buf, VARHDRSZ + sizeof(uint32) + 2 * kept * sizeof(JEntry));
	buf.len = VARHDRSZ;
	{
		uint32		header = kept | JB_FOBJECT;

		appendBinaryStringInfo(&buf, (char *) &header, sizeof(header));
	}
	data_start = buf.len;
	entries = palloc0(sizeof(JEntry) * Max(2 * kept, 1));
	buf.len += 2 * kept * sizeof(JEntry);
	buf.data[buf.len] = '\0';

	for (int i = 0; i < kept; i++)
	{
		const char *key = keys[order[i]];
		int			len = strlen(key);

		appendBinaryStringInfo(&buf, key, len);
		entries[i] = JENTRY_ISSTRING | (uint32) len;
	}
	for (int i = 0; i < kept; i++)
		entries[kept + i] = append_value(&buf, values[order[i]]);
	set_offsets(entries, 2 * kept);
	memcpy(buf.data + data_start, entries, sizeof(JEntry) * 2 * kept);
	result = (Jsonb *) buf.data;
	SET_VARSIZE(result, buf.len);
	return result;
}

Jsonb *
jsonb_make_object_present(int n, const char *const *keys, Jsonb *const *values)
{
	const char **k = palloc(sizeof(char *) * Max(n, 1));
	Jsonb	  **v = palloc(sizeof(Jsonb *) * Max(n, 1));
	int			kept = 0;

	for (int i = 0; i < n; i++)
	{
		if (values[i] == NULL)
			continue;
		k[kept] = keys[i];
		v[kept++] = values[i];
	}
	return jsonb_make_object(kept, k, v);
}

/* Returns obj || {key: value}: obj's values are copied as they are, not unpacked. */
Jsonb *
jsonb_with_key(Jsonb *obj, const char *key, Jsonb *value)
{
	int			n;
	const char **keys;
	Jsonb	  **vals;
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	int			i = 0;

	if (obj == NULL || !JB_ROOT_IS_OBJECT(obj))
		return jsonb_make_object(1, &key, &value);
	n = JB_ROOT_COUNT(obj) + 1;
	keys = palloc(sizeof(char *) * n);
	vals = palloc(sizeof(Jsonb *) * n);
	it = JsonbIteratorInit(&obj->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (tok == WJB_KEY)
			keys[i] = pnstrdup(v.val.string.val, v.val.string.len);
		else if (tok == WJB_VALUE)
			vals[i++] = JsonbValueToJsonb(&v);	/* a nested container: a copy of its bytes */
	}
	keys[i] = key;
	vals[i++] = value;
	/* of equal keys the last wins: the new value replaces an old one */
	return jsonb_make_object(i, keys, vals);
}

/* Sets a nested path, creating intermediate objects. */
Jsonb *
jsonb_with_path(Jsonb *obj, List *path, int skip, Jsonb *value)
{
	const char *key = strVal(list_nth(path, skip));
	Jsonb	   *child;

	check_stack_depth();
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

/*
 * Evaluates a jsonpath predicate.  The _tz variants: a comparison of a
 * datetime() with a time zone and one without uses the session's TimeZone
 * (the server's in the workers) where the plain ones raise even in silent
 * mode, which would fail the whole trigger instead of the node.
 */
bool
jsonpath_match(Jsonb *context, JsonPath *path, bool *isnull)
{
	Datum		d = call_jsonpath_function(jsonb_path_match_tz, context, path, isnull);

	return *isnull ? false : DatumGetBool(d);
}

/* Returns the first item selected by a jsonpath. */
Jsonb *
jsonpath_first(Jsonb *context, JsonPath *path)
{
	bool		isnull;
	Datum		d = call_jsonpath_function(jsonb_path_query_first_tz, context, path, &isnull);

	return isnull ? NULL : DatumGetJsonbP(d);
}
