/*
 * workflow_definition.c — validation and compilation of workflow definitions.
 *
 * A definition is a jsonb document {"name", "nodes": [...], "edges": [...],
 * "partials": {...}}.  workflow_definition_compile() walks it once, collecting
 * every problem (with a path such as "nodes[2].if" or "edges[0].to") instead
 * of stopping at the first, and, when there is none, returns the compiled
 * graph: jsonpaths and Mustache templates are parsed here so that running an
 * execution never parses anything again.
 *
 * Everything compiled lives in one memory context owned by the returned
 * WorkflowDefinition; the per-backend cache (workflow_cache.c) keeps it for the
 * life of the version.
 */
#include "postgres.h"

#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "nodes/value.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/memutils.h"

#include "safe_input.h"
#include "workflow_definition.h"

typedef struct NodeTypeInfo
{
	const char *name;
	NodeType	type;
	const char *const *outcomes;	/* NULL-terminated; NULL: any string */
	bool		has_outcomes;
	const char *const *keys;	/* its keys beside id and type; NULL-terminated */
	const char *to_hint;		/* why "to", given where it is no key, is none */
} NodeTypeInfo;

/* bounds that keep a definition's cost at run time in proportion to its size */
#define TRANSFORM_MAX_DEPTH 32		/* parts of a transform target */
#define TRANSFORM_MAX_SET 256		/* assignments of one transform node */
#define WAIT_MAX_EVENTS 64			/* event names of one wait node */

static const char *const action_outcomes[] = {"sent", "failed", "skipped", NULL};
static const char *const condition_outcomes[] = {"true", "false", NULL};
static const char *const wait_outcomes[] = {"completed", "timeout", NULL};

static const char *const trigger_keys[] = {"required", "recipient", NULL};
static const char *const email_keys[] = {"to", "subject", "text", "html", NULL};
static const char *const text_keys[] = {"to", "text", NULL};
static const char *const push_keys[] = {"title", "body", "data", NULL};
static const char *const webhook_keys[] = {"url", "body", NULL};
static const char *const condition_keys[] = {"if", NULL};
static const char *const switch_keys[] = {"value", NULL};
static const char *const delay_keys[] = {"for", "until", NULL};
static const char *const transform_keys[] = {"set", NULL};
static const char *const wait_keys[] = {"events", "key", "timeout", NULL};

static const NodeTypeInfo node_types[] = {
	{"trigger", NODE_TRIGGER, NULL, false, trigger_keys},
	{"email", NODE_EMAIL, action_outcomes, true, email_keys},
	{"sms", NODE_SMS, action_outcomes, true, text_keys},
	{"push", NODE_PUSH, action_outcomes, true, push_keys,
	"a push goes to the recipient's devices, recipient.push"},
	{"chat", NODE_CHAT, action_outcomes, true, text_keys},
	{"webhook", NODE_WEBHOOK, action_outcomes, true, webhook_keys,
	"a webhook node's address is its \"url\""},
	{"condition", NODE_CONDITION, condition_outcomes, true, condition_keys},
	{"switch", NODE_SWITCH, NULL, true, switch_keys},
	{"delay", NODE_DELAY, NULL, false, delay_keys},
	{"transform", NODE_TRANSFORM, NULL, false, transform_keys},
	{"wait", NODE_WAIT, wait_outcomes, true, wait_keys},
	/* placeholder for a node whose type is unknown: accepts any outcome */
	{NULL, NODE_UNKNOWN, NULL, true, NULL},
};

/*
 * Keys every node may have: id and type, and name and description, which
 * only people read.
 */
static const char *const node_common_keys[] = {"id", "type", "name", "description", NULL};
static const char *const edge_keys[] = {"from", "to", "on", NULL};
static const char *const definition_keys[] = {"name", "description", "nodes", "edges", "partials", NULL};

/* State of one compilation. */
typedef struct CompileState
{
	MemoryContext caller_cxt;	/* where problems are allocated */
	List	   *problems;
	WorkflowDefinition *def;
	bool		stored;			/* a stored version: see workflow_definition_compile */
} CompileState;

static void add_problem(CompileState *st, const char *path, const char *fmt,...) pg_attribute_printf(3, 4);
static bool get_key(JsonbContainer *c, const char *key, JsonbValue *out);
static char *value_string(JsonbValue *v);
static bool value_is_object(JsonbValue *v);
static bool value_is_array(JsonbValue *v);
static char *compile_optional_string(CompileState *st, JsonbContainer *c, const char *key,
									 const char *path, bool required);
static JsonPath *compile_jsonpath_field(CompileState *st, JsonbContainer *c, const char *key,
										const char *path, bool required);
static Template *compile_template_field(CompileState *st, JsonbContainer *c, const char *key,
										const char *path, bool required);
static JsonPath *jsonpath_compile_safely(const char *src, char **error);
static List *compile_object_fields(CompileState *st, JsonbContainer *c, const char *key,
								   const char *path);
static const NodeTypeInfo *node_type_info(NodeType type);
static void compile_node(CompileState *st, WorkflowNode *node, JsonbContainer *c, const char *path);
static void compile_action(CompileState *st, WorkflowNode *node, JsonbContainer *c, const char *path);
static void compile_transform(CompileState *st, WorkflowNode *node, JsonbContainer *c, const char *path);
static bool compile_edges(CompileState *st, JsonbContainer *root);
static void check_graph(CompileState *st);

/* Records one validation problem at path. */
static void
add_problem(CompileState *st, const char *path, const char *fmt,...)
{
	MemoryContext old = MemoryContextSwitchTo(st->caller_cxt);
	DefinitionProblem *p = palloc(sizeof(DefinitionProblem));
	StringInfoData buf;

	initStringInfo(&buf);
	for (;;)
	{
		va_list		args;
		int			needed;

		va_start(args, fmt);
		needed = appendStringInfoVA(&buf, fmt, args);
		va_end(args);
		if (needed == 0)
			break;
		enlargeStringInfo(&buf, needed);
	}
	p->path = pstrdup(path);
	p->message = buf.data;
	st->problems = lappend(st->problems, p);
	MemoryContextSwitchTo(old);
}

/* Looks up key in object container c. */
static bool
get_key(JsonbContainer *c, const char *key, JsonbValue *out)
{
	if (c == NULL || !JsonContainerIsObject(c))
		return false;
	return getKeyJsonValueFromContainer(c, key, strlen(key), out) != NULL;
}

/* Returns a palloc'd C string of a jsonb string value, or NULL if not a string. */
static char *
value_string(JsonbValue *v)
{
	if (v->type != jbvString)
		return NULL;
	return pnstrdup(v->val.string.val, v->val.string.len);
}

/* True when v is a jsonb object. */
static bool
value_is_object(JsonbValue *v)
{
	return v->type == jbvBinary && JsonContainerIsObject(v->val.binary.data);
}

/* True when v is a jsonb array. */
static bool
value_is_array(JsonbValue *v)
{
	return v->type == jbvBinary && JsonContainerIsArray(v->val.binary.data);
}

/* True when a field is there and not null (a null field counts as missing). */
static bool
has_value(JsonbContainer *c, const char *key)
{
	JsonbValue	v;

	return get_key(c, key, &v) && v.type != jbvNull;
}

/* Reads a string field; records a problem when required and missing or not a string. */
static char *
compile_optional_string(CompileState *st, JsonbContainer *c, const char *key,
						const char *path, bool required)
{
	JsonbValue	v;
	char	   *s;

	if (!get_key(c, key, &v) || v.type == jbvNull)
	{
		if (required)
			add_problem(st, psprintf("%s.%s", path, key), "required field is missing");
		return NULL;
	}
	s = value_string(&v);
	if (s == NULL)
		add_problem(st, psprintf("%s.%s", path, key), "expected a string");
	return s;
}

/*
 * The first variable ($name) a compiled jsonpath uses, or NULL.  Workflow
 * jsonpaths are evaluated with no variables, and PostgreSQL raises for an
 * unknown one even in silent mode: such a path would fail every execution.
 * Read from the path's canonical text, where a variable is $ followed by a
 * quoted name and every string (keys, literals) is quoted with escapes.
 */
static char *
jsonpath_variable(Datum jsonpath)
{
	char	   *text = DatumGetCString(DirectFunctionCall1(jsonpath_out, jsonpath));

	for (char *p = text; *p; p++)
	{
		if (*p == '"')
		{
			for (p++; *p && *p != '"'; p++)
				if (*p == '\\' && p[1])
					p++;
			if (!*p)
				break;
		}
		else if (*p == '$' && p[1] == '"')
		{
			char	   *end = p + 2;

			while (*end && *end != '"')
				end += (*end == '\\' && end[1]) ? 2 : 1;
			return pnstrdup(p, end - p + (*end ? 1 : 0));
		}
	}
	return NULL;
}

/* Compiles a jsonpath; NULL with *error set when it does not parse or uses a variable. */
static JsonPath *
jsonpath_compile_safely(const char *src, char **error)
{
	Datum		d;
	char	   *variable;

	if (!safe_input(jsonpath_in, src, &d, error))
		return NULL;
	variable = jsonpath_variable(d);
	if (variable != NULL)
	{
		*error = psprintf("variable %s is not defined (workflow jsonpaths have no variables: "
						  "read values from $.payload, $.vars, $.steps or $.recipient)", variable);
		return NULL;
	}
	return DatumGetJsonPathP(d);
}

/* Compiles a string field holding a jsonpath. */
static JsonPath *
compile_jsonpath_field(CompileState *st, JsonbContainer *c, const char *key,
					   const char *path, bool required)
{
	char	   *src = compile_optional_string(st, c, key, path, required);
	char	   *error = NULL;
	JsonPath   *jp;

	if (src == NULL)
		return NULL;
	jp = jsonpath_compile_safely(src, &error);
	if (jp == NULL)
		add_problem(st, psprintf("%s.%s", path, key), "invalid jsonpath: %s", error);
	return jp;
}

/*
 * Parses a template of a workflow's field at path; NULL with a problem when
 * it does not parse.  A new one that has, outside any section, a tag like
 * "{{ #x }}" is a problem too: a variable named "#x", which the workflow's
 * context never has (see template_misplaced_sigil); a stored version keeps
 * running.  Partials are not checked: one may be included inside a section.
 */
static Template *
compile_template(CompileState *st, const char *src, const char *path)
{
	char	   *error = NULL;
	Template   *t = template_parse(src, &error);
	char	   *name;

	if (t == NULL)
		add_problem(st, path, "invalid template: %s", error);
	else if (!st->stored && (name = template_misplaced_sigil(t)) != NULL)
		add_problem(st, path, "invalid template: the tag of \"%s\" is a variable of that name, always empty here; "
					"a tag's \"%c\" goes right after its opening delimiter", name, name[0]);
	return t;
}

/* Compiles a string field holding a Mustache template. */
static Template *
compile_template_field(CompileState *st, JsonbContainer *c, const char *key,
					   const char *path, bool required)
{
	char	   *src = compile_optional_string(st, c, key, path, required);

	if (src == NULL)
		return NULL;
	return compile_template(st, src, psprintf("%s.%s", path, key));
}

/* Compiles an optional object whose values are all templates (push data, webhook body). */
static List *
compile_object_fields(CompileState *st, JsonbContainer *c, const char *key, const char *path)
{
	JsonbValue	v;
	JsonbIterator *it;
	JsonbIteratorToken tok;
	JsonbValue	k,
				val;
	List	   *fields = NIL;

	if (!get_key(c, key, &v) || v.type == jbvNull)
		return NIL;
	if (!value_is_object(&v))
	{
		add_problem(st, psprintf("%s.%s", path, key), "expected an object of templates");
		return NIL;
	}
	it = JsonbIteratorInit(v.val.binary.data);
	while ((tok = JsonbIteratorNext(&it, &k, true)) != WJB_DONE)
	{
		char	   *name;
		char	   *src;
		ContentField *f;

		if (tok != WJB_KEY)
			continue;
		name = value_string(&k);
		tok = JsonbIteratorNext(&it, &val, true);
		src = value_string(&val);
		if (src == NULL)
		{
			add_problem(st, psprintf("%s.%s.%s", path, key, name), "expected a template string");
			continue;
		}
		f = palloc(sizeof(ContentField));
		f->name = name;
		f->tmpl = compile_template(st, src, psprintf("%s.%s.%s", path, key, name));
		fields = lappend(fields, f);
	}
	return fields;
}

/* Adds a content field to an action node. */
static void
add_content_field(WorkflowNode *node, const char *name, Template *t)
{
	if (t == NULL)
		return;
	node->fields = repalloc(node->fields, sizeof(ContentField) * (node->n_fields + 1));
	node->fields[node->n_fields].name = name;
	node->fields[node->n_fields].tmpl = t;
	node->n_fields++;
}

/* Compiles the fields of an action node (email, sms, push, chat, webhook). */
static void
compile_action(CompileState *st, WorkflowNode *node, JsonbContainer *c, const char *path)
{
	node->fields = palloc(sizeof(ContentField));
	node->n_fields = 0;
	node->to = compile_template_field(st, c, "to", path, false);

	switch (node->type)
	{
		case NODE_EMAIL:
			add_content_field(node, "subject", compile_template_field(st, c, "subject", path, true));
			add_content_field(node, "text", compile_template_field(st, c, "text", path, false));
			add_content_field(node, "html", compile_template_field(st, c, "html", path, false));
			if (!has_value(c, "text") && !has_value(c, "html"))
				add_problem(st, psprintf("%s.text", path), "an email node needs \"text\" or \"html\"");
			break;
		case NODE_SMS:
		case NODE_CHAT:
			add_content_field(node, "text", compile_template_field(st, c, "text", path, true));
			break;
		case NODE_PUSH:
			add_content_field(node, "title", compile_template_field(st, c, "title", path, false));
			add_content_field(node, "body", compile_template_field(st, c, "body", path, false));
			if (!has_value(c, "title") && !has_value(c, "body"))
				add_problem(st, psprintf("%s.body", path), "a push node needs \"title\" or \"body\"");
			node->object_fields = compile_object_fields(st, c, "data", path);
			break;
		case NODE_WEBHOOK:
			if (has_value(c, "url"))
			{
				node->to = compile_template_field(st, c, "url", path, false);
				/* "{{payload.callback}}" would post to "https%3A%2F%2F..." */
				if (node->to != NULL && !st->stored && template_starts_with_escaped_variable(node->to))
					add_problem(st, psprintf("%s.url", path),
								"a url that starts with {{name}} gets the value percent-encoded; "
								"use {{{name}}} to put in a whole URL as it is");
			}
			node->object_fields = compile_object_fields(st, c, "body", path);
			break;
		default:
			elog(ERROR, "node type %d is not an action", (int) node->type);
	}
}

/* Compiles the "set" object of a transform node. */
static void
compile_transform(CompileState *st, WorkflowNode *node, JsonbContainer *c, const char *path)
{
	JsonbValue	v;
	JsonbIterator *it;
	JsonbIteratorToken tok;
	JsonbValue	k,
				val;

	if (!get_key(c, "set", &v))
	{
		add_problem(st, psprintf("%s.set", path), "required field is missing");
		return;
	}
	if (!value_is_object(&v) || JsonContainerSize(v.val.binary.data) == 0)
	{
		add_problem(st, psprintf("%s.set", path), "expected a non-empty object of target path to value");
		return;
	}
	if (JsonContainerSize(v.val.binary.data) > TRANSFORM_MAX_SET)
	{
		add_problem(st, psprintf("%s.set", path), "%d assignments; at most %d",
					(int) JsonContainerSize(v.val.binary.data), TRANSFORM_MAX_SET);
		return;
	}
	it = JsonbIteratorInit(v.val.binary.data);
	while ((tok = JsonbIteratorNext(&it, &k, true)) != WJB_DONE)
	{
		TransformAssignment *a;
		char	   *fpath;
		char	   *src;
		char	   *error = NULL;
		char	   *part;
		char	   *save = NULL;
		char	   *copy;

		if (tok != WJB_KEY)
			continue;
		a = palloc0(sizeof(TransformAssignment));
		a->target = value_string(&k);
		fpath = psprintf("%s.set.%s", path, a->target);
		JsonbIteratorNext(&it, &val, true);

		copy = pstrdup(a->target);
		for (part = strtok_r(copy, ".", &save); part != NULL; part = strtok_r(NULL, ".", &save))
			a->target_path = lappend(a->target_path, makeString(part));
		if (list_length(a->target_path) < 2 ||
			(strcmp(strVal(linitial(a->target_path)), "payload") != 0 &&
			 strcmp(strVal(linitial(a->target_path)), "recipient") != 0 &&
			 strcmp(strVal(linitial(a->target_path)), "vars") != 0) ||
			a->target[0] == '.' || strstr(a->target, "..") != NULL || a->target[strlen(a->target) - 1] == '.')
			add_problem(st, fpath, "target must be a dotted path under payload, recipient or vars, like \"vars.total\"");
		else if (list_length(a->target_path) > TRANSFORM_MAX_DEPTH)
			add_problem(st, fpath, "target has %d parts; at most %d", list_length(a->target_path),
						TRANSFORM_MAX_DEPTH);

		src = value_string(&val);
		if (src != NULL && src[0] == '$')
		{
			a->path = jsonpath_compile_safely(src, &error);
			if (a->path == NULL)
				add_problem(st, fpath, "invalid jsonpath: %s", error);
		}
		else if (src != NULL)
			a->tmpl = compile_template(st, src, fpath);
		else
			a->literal = JsonbValueToJsonb(&val);
		node->assignments = lappend(node->assignments, a);
	}
}

/*
 * Parses the interval of a delay's "for" or a wait's "timeout": at least zero
 * and at most MAX_WAIT_YEARS (a year is 12 months of 30 days, as PostgreSQL
 * compares intervals), and so is each of its parts (months, days, time):
 * now() plus it is always a timestamp, whatever order the parts are added in.
 * NULL, with a problem added, when it is not; a stored version's interval
 * is clamped instead (zero, or MAX_WAIT_YEARS), so that a version accepted
 * before these bounds still runs.
 */
#define MAX_WAIT_YEARS 100

static Interval *
compile_interval(CompileState *st, const char *src, const char *path)
{
	Datum		d;
	char	   *error = NULL;
	Interval   *iv;
	double		seconds;
	double		max_seconds = (double) MAX_WAIT_YEARS * MONTHS_PER_YEAR * DAYS_PER_MONTH * SECS_PER_DAY;
	bool		parts_fit;

	if (!safe_input(interval_in, src, &d, &error))
	{
		add_problem(st, path, "invalid interval: %s", error);
		return NULL;
	}
	iv = DatumGetIntervalP(d);
	seconds = (double) iv->time / USECS_PER_SEC + (double) iv->day * SECS_PER_DAY +
		(double) iv->month * DAYS_PER_MONTH * SECS_PER_DAY;
	parts_fit = Abs(iv->month) <= MAX_WAIT_YEARS * MONTHS_PER_YEAR &&
		Abs(iv->day) <= MAX_WAIT_YEARS * MONTHS_PER_YEAR * DAYS_PER_MONTH &&
		Abs((double) iv->time / USECS_PER_SEC) <= max_seconds;
	if (seconds < 0)
	{
		if (st->stored)
			return palloc0(sizeof(Interval));
		add_problem(st, path, "interval \"%s\" is negative; expected zero or more", src);
		return NULL;
	}
	if (seconds > max_seconds || !parts_fit)
	{
		if (st->stored)
		{
			iv = palloc0(sizeof(Interval));
			iv->month = MAX_WAIT_YEARS * MONTHS_PER_YEAR;
			return iv;
		}
		if (seconds > max_seconds)
			add_problem(st, path, "interval \"%s\" is too long; expected at most %d years", src, MAX_WAIT_YEARS);
		else
			add_problem(st, path, "interval \"%s\" has a part (months, days or time) over %d years",
						src, MAX_WAIT_YEARS);
		return NULL;
	}
	return iv;
}

/* Compiles a wait node: "events" (names), "key" (a template) and an optional "timeout". */
static void
compile_wait(CompileState *st, WorkflowNode *node, JsonbContainer *c, const char *path)
{
	JsonbValue	v;
	char	   *timeout;

	if (!get_key(c, "events", &v) || !value_is_array(&v) || JsonContainerSize(v.val.binary.data) == 0)
		add_problem(st, psprintf("%s.events", path), "expected a non-empty array of event names");
	else if (JsonContainerSize(v.val.binary.data) > WAIT_MAX_EVENTS)
		add_problem(st, psprintf("%s.events", path), "%d event names; at most %d",
					(int) JsonContainerSize(v.val.binary.data), WAIT_MAX_EVENTS);
	else
	{
		int			n = JsonContainerSize(v.val.binary.data);

		for (int i = 0; i < n; i++)
		{
			JsonbValue *e = getIthJsonbValueFromContainer(v.val.binary.data, i);
			char	   *name = value_string(e);
			ListCell   *lc;
			bool		dup = false;

			if (name == NULL || name[0] == '\0')
			{
				add_problem(st, psprintf("%s.events[%d]", path, i), "expected a non-empty event name");
				continue;
			}
			foreach(lc, node->wait_events)
				dup |= strcmp((char *) lfirst(lc), name) == 0;
			if (dup)
				add_problem(st, psprintf("%s.events[%d]", path, i), "duplicate event name \"%s\"", name);
			else
				node->wait_events = lappend(node->wait_events, name);
		}
	}
	node->wait_key = compile_template_field(st, c, "key", path, true);
	timeout = compile_optional_string(st, c, "timeout", path, false);
	if (timeout != NULL)
		node->wait_timeout = compile_interval(st, timeout, psprintf("%s.timeout", path));
}

static bool
key_in(const char *key, const char *const *keys)
{
	for (int i = 0; keys != NULL && keys[i] != NULL; i++)
		if (strcmp(keys[i], key) == 0)
			return true;
	return false;
}

/*
 * Adds a problem for each key of object c that is in neither keys nor more
 * (a misspelt optional key, "htlm", was ignored without a word).  what names
 * the object in the message ("a push node"); to_hint, when not NULL, says
 * where the address is instead, for a "to" given to an object without one.
 * A stored version is not checked: it was accepted when it was stored.
 */
static void
check_keys(CompileState *st, JsonbContainer *c, const char *path, const char *what,
		   const char *const *keys, const char *const *more, const char *to_hint)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;

	if (st->stored)
		return;
	it = JsonbIteratorInit(c);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		char	   *key;
		StringInfoData expected;
		const char *hint;

		if (tok != WJB_KEY)
			continue;
		key = pnstrdup(v.val.string.val, v.val.string.len);
		if (key_in(key, keys) || key_in(key, more))
			continue;
		initStringInfo(&expected);
		for (int i = 0; keys != NULL && keys[i] != NULL; i++)
			appendStringInfo(&expected, "%s%s", expected.len ? ", " : "", keys[i]);
		for (int i = 0; more != NULL && more[i] != NULL; i++)
			appendStringInfo(&expected, "%s%s", expected.len ? ", " : "", more[i]);
		hint = to_hint != NULL && strcmp(key, "to") == 0 ? psprintf(" (%s)", to_hint) : "";
		add_problem(st, psprintf("%s%s%s", path, path[0] ? "." : "", key),
					"%s has no key \"%s\"; expected %s%s", what, key, expected.data, hint);
	}
}

/* Compiles the type-specific fields of one node. */
static void
compile_node(CompileState *st, WorkflowNode *node, JsonbContainer *c, const char *path)
{
	JsonbValue	v;
	const NodeTypeInfo *info = node_type_info(node->type);

	/* "an sms node": the article goes by the sound */
	check_keys(st, c, path,
			   psprintf("a%s %s node", strchr("aeiou", info->name[0]) || node->type == NODE_SMS ? "n" : "",
						info->name),
			   info->keys, node_common_keys, info->to_hint);

	switch (node->type)
	{
		case NODE_TRIGGER:
			if (get_key(c, "required", &v) && v.type != jbvNull)
			{
				if (!value_is_array(&v))
					add_problem(st, psprintf("%s.required", path), "expected an array of payload field names");
				else
				{
					int			n = JsonContainerSize(v.val.binary.data);

					for (int i = 0; i < n; i++)
					{
						JsonbValue *e = getIthJsonbValueFromContainer(v.val.binary.data, i);
						char	   *name = value_string(e);

						if (name == NULL || name[0] == '\0')
							add_problem(st, psprintf("%s.required[%d]", path, i), "expected a non-empty field name");
						else
							node->required = lappend(node->required, name);
					}
				}
			}
			node->recipient_path = compile_jsonpath_field(st, c, "recipient", path, false);
			break;
		case NODE_CONDITION:
			node->if_path = compile_jsonpath_field(st, c, "if", path, true);
			break;
		case NODE_SWITCH:
			node->value_path = compile_jsonpath_field(st, c, "value", path, true);
			break;
		case NODE_DELAY:
			{
				bool		has_for = get_key(c, "for", &v);
				bool		has_until = get_key(c, "until", &v);

				if (has_for == has_until)
					add_problem(st, psprintf("%s.for", path),
								"a delay node needs exactly one of \"for\" (an interval) or \"until\" (a jsonpath to a timestamp)");
				else if (has_for)
				{
					char	   *src = compile_optional_string(st, c, "for", path, true);

					if (src != NULL)
						node->delay_for = compile_interval(st, src, psprintf("%s.for", path));
				}
				else
					node->delay_until = compile_jsonpath_field(st, c, "until", path, true);
				break;
			}
		case NODE_TRANSFORM:
			compile_transform(st, node, c, path);
			break;
		case NODE_WAIT:
			compile_wait(st, node, c, path);
			break;
		default:
			compile_action(st, node, c, path);
			break;
	}
}

/*
 * The largest graph accepted: far beyond any notification workflow, and
 * small enough that checking one (depth-first, node by node) stays cheap.
 */
#define MAX_NODES 1000
#define MAX_EDGES 4000

/* Looks up a node index by id; -1 when absent. */
static int
node_index(WorkflowDefinition *def, const char *id)
{
	for (int i = 0; i < def->n_nodes; i++)
		if (def->nodes[i].id != NULL && strcmp(def->nodes[i].id, id) == 0)
			return i;
	return -1;
}

/* Returns the type table entry of a node type. */
static const NodeTypeInfo *
node_type_info(NodeType type)
{
	for (int i = 0; i < (int) lengthof(node_types); i++)
		if (node_types[i].type == type)
			return &node_types[i];
	elog(ERROR, "unknown node type %d", (int) type);
	return NULL;
}

/*
 * Compiles the edges array and checks every "on" value against its source
 * node; false when there are too many edges to check the graph.
 */
static bool
compile_edges(CompileState *st, JsonbContainer *root)
{
	WorkflowDefinition *def = st->def;
	JsonbValue	v;
	int			n;

	def->edges = palloc0(sizeof(WorkflowEdge));
	if (!get_key(root, "edges", &v) || v.type == jbvNull)
	{
		if (def->n_nodes > 1)
			add_problem(st, "edges", "required field is missing");
		return true;
	}
	if (!value_is_array(&v))
	{
		add_problem(st, "edges", "expected an array");
		return true;
	}
	n = JsonContainerSize(v.val.binary.data);
	if (n > MAX_EDGES)
	{
		add_problem(st, "edges", "at most %d edges, got %d", MAX_EDGES, n);
		return false;			/* no graph to check */
	}
	def->edges = palloc0(sizeof(WorkflowEdge) * Max(n, 1));
	for (int i = 0; i < n; i++)
	{
		JsonbValue *e = getIthJsonbValueFromContainer(v.val.binary.data, i);
		JsonbContainer *ec;
		char	   *path = psprintf("edges[%d]", i);
		char	   *from;
		char	   *to;
		JsonbValue	on;
		int			fi,
					ti;
		char	   *onstr = NULL;

		if (!value_is_object(e))
		{
			add_problem(st, path, "expected an object {\"from\", \"to\", \"on\"}");
			continue;
		}
		ec = e->val.binary.data;
		check_keys(st, ec, path, "an edge", edge_keys, NULL, NULL);
		from = compile_optional_string(st, ec, "from", path, true);
		to = compile_optional_string(st, ec, "to", path, true);
		fi = from ? node_index(def, from) : -1;
		ti = to ? node_index(def, to) : -1;
		if (from && fi < 0)
			add_problem(st, psprintf("%s.from", path), "no node has id \"%s\"", from);
		if (to && ti < 0)
			add_problem(st, psprintf("%s.to", path), "no node has id \"%s\"", to);
		if (ti >= 0 && def->nodes[ti].type == NODE_TRIGGER)
			add_problem(st, psprintf("%s.to", path), "an edge cannot lead into the trigger node");

		if (get_key(ec, "on", &on) && on.type != jbvNull)
		{
			if (on.type == jbvBool)
				onstr = pstrdup(on.val.boolean ? "true" : "false");
			else if (on.type == jbvString)
				onstr = value_string(&on);
			else
				add_problem(st, psprintf("%s.on", path), "expected a string");
		}
		if (onstr != NULL && fi >= 0)
		{
			const NodeTypeInfo *info = node_type_info(def->nodes[fi].type);

			if (!info->has_outcomes)
				add_problem(st, psprintf("%s.on", path),
							"node \"%s\" (%s) has a single outcome; remove \"on\"", from, info->name);
			else if (info->outcomes != NULL)
			{
				bool		known = false;
				StringInfoData allowed;

				initStringInfo(&allowed);
				for (int j = 0; info->outcomes[j] != NULL; j++)
				{
					known |= strcmp(info->outcomes[j], onstr) == 0;
					appendStringInfo(&allowed, "%s%s", j ? ", " : "", info->outcomes[j]);
				}
				if (!known)
					add_problem(st, psprintf("%s.on", path),
								"node \"%s\" (%s) cannot produce \"%s\"; expected one of %s",
								from, info->name, onstr, allowed.data);
			}
		}
		if (fi >= 0 && ti >= 0)
		{
			WorkflowEdge *edge = &def->edges[def->n_edges++];

			edge->from = fi;
			edge->to = ti;
			edge->on = onstr;
		}
	}

	/* index edges by source node (counted first: each node gets its own out-degree) */
	for (int i = 0; i < def->n_edges; i++)
		def->nodes[def->edges[i].from].n_out++;
	for (int i = 0; i < def->n_nodes; i++)
	{
		def->nodes[i].out = palloc(sizeof(int) * Max(def->nodes[i].n_out, 1));
		def->nodes[i].n_out = 0;
	}
	for (int i = 0; i < def->n_edges; i++)
	{
		WorkflowNode *from = &def->nodes[def->edges[i].from];

		from->out[from->n_out++] = i;
	}
	return true;
}

/* Depth-first search colouring nodes to find a cycle; returns true when one is found. */
static bool
find_cycle(WorkflowDefinition *def, int n, char *colour, int *cycle_node)
{
	check_stack_depth();		/* a chain of MAX_NODES nodes is MAX_NODES frames deep */
	colour[n] = 1;
	for (int i = 0; i < def->nodes[n].n_out; i++)
	{
		int			to = def->edges[def->nodes[n].out[i]].to;

		if (colour[to] == 1)
		{
			*cycle_node = to;
			return true;
		}
		if (colour[to] == 0 && find_cycle(def, to, colour, cycle_node))
			return true;
	}
	colour[n] = 2;
	return false;
}

/* Marks the nodes reachable from n. */
static void
mark_reachable(WorkflowDefinition *def, int n, bool *seen)
{
	check_stack_depth();
	if (seen[n])
		return;
	seen[n] = true;
	for (int i = 0; i < def->nodes[n].n_out; i++)
		mark_reachable(def, def->edges[def->nodes[n].out[i]].to, seen);
}

/*
 * Notes on each wait node the wait nodes it is reached from (an event one of
 * them took is not taken again by the next: wait_repo.c); waits on parallel
 * branches are not on each other's lists, and each takes an event.
 */
static void
note_waits_before(WorkflowDefinition *def)
{
	bool	   *seen = palloc(sizeof(bool) * def->n_nodes);

	for (int v = 0; v < def->n_nodes; v++)
	{
		if (def->nodes[v].type != NODE_WAIT)
			continue;
		memset(seen, 0, sizeof(bool) * def->n_nodes);
		for (int i = 0; i < def->nodes[v].n_out; i++)
			mark_reachable(def, def->edges[def->nodes[v].out[i]].to, seen);
		for (int w = 0; w < def->n_nodes; w++)
			if (seen[w] && w != v && def->nodes[w].type == NODE_WAIT)
				def->nodes[w].wait_before = lappend(def->nodes[w].wait_before, def->nodes[v].id);
	}
	pfree(seen);
}

/* Checks the graph: no cycle, every node reachable from the trigger. */
static void
check_graph(CompileState *st)
{
	WorkflowDefinition *def = st->def;
	char	   *colour = palloc0(def->n_nodes);
	bool	   *seen = palloc0(sizeof(bool) * def->n_nodes);
	int			cycle_node = -1;

	for (int i = 0; i < def->n_nodes; i++)
	{
		if (colour[i] == 0 && find_cycle(def, i, colour, &cycle_node))
		{
			add_problem(st, psprintf("nodes[%d]", cycle_node),
						"node \"%s\" is part of a cycle; workflows must be acyclic",
						def->nodes[cycle_node].id);
			break;
		}
	}
	if (def->trigger_index < 0)
		return;
	mark_reachable(def, def->trigger_index, seen);
	for (int i = 0; i < def->n_nodes; i++)
		if (!seen[i] && def->nodes[i].id != NULL)
			add_problem(st, psprintf("nodes[%d]", i),
						"node \"%s\" is unreachable from the trigger", def->nodes[i].id);
	if (cycle_node < 0)
		note_waits_before(def);
}

WorkflowDefinition *
workflow_definition_compile(Jsonb *definition, MemoryContext parent, List **problems, bool stored)
{
	CompileState st;
	MemoryContext cxt;
	MemoryContext old;
	WorkflowDefinition *def;
	JsonbContainer *root = &definition->root;
	JsonbValue	v;
	int			n_triggers = 0;
	bool		too_large = false;

	*problems = NIL;
	st.caller_cxt = CurrentMemoryContext;
	st.problems = NIL;
	st.stored = stored;

	if (!JB_ROOT_IS_OBJECT(definition))
	{
		add_problem(&st, "", "definition must be a JSON object with \"nodes\" and \"edges\"");
		*problems = st.problems;
		return NULL;
	}
	check_keys(&st, root, "", "a workflow definition", definition_keys, NULL, NULL);

	cxt = AllocSetContextCreate(parent, "notiflow workflow definition", ALLOCSET_SMALL_SIZES);
	old = MemoryContextSwitchTo(cxt);
	def = palloc0(sizeof(WorkflowDefinition));
	def->mcxt = cxt;
	def->trigger_index = -1;
	st.def = def;

	if (get_key(root, "name", &v) && v.type != jbvNull)
	{
		def->name = value_string(&v);
		if (def->name == NULL)
			add_problem(&st, "name", "expected a string");
	}

	if (get_key(root, "partials", &v) && v.type != jbvNull)
	{
		char	   *error = NULL;

		if (!value_is_object(&v))
			add_problem(&st, "partials", "expected an object of partial name to template");
		else
		{
			Jsonb	   *pj = JsonbValueToJsonb(&v);

			def->partials = template_partials_compile(pj, &error);
			if (def->partials == NULL)
				add_problem(&st, "partials", "invalid template: %s", error);
		}
	}

	if (!get_key(root, "nodes", &v) || !value_is_array(&v) || JsonContainerSize(v.val.binary.data) == 0)
	{
		add_problem(&st, "nodes", "expected a non-empty array of nodes");
		def->nodes = palloc0(sizeof(WorkflowNode));
	}
	else if (JsonContainerSize(v.val.binary.data) > MAX_NODES)
	{
		add_problem(&st, "nodes", "at most %d nodes, got %d", MAX_NODES,
					(int) JsonContainerSize(v.val.binary.data));
		def->nodes = palloc0(sizeof(WorkflowNode));
		too_large = true;
	}
	else
	{
		JsonbContainer *nodes = v.val.binary.data;

		def->n_nodes = JsonContainerSize(nodes);
		def->nodes = palloc0(sizeof(WorkflowNode) * def->n_nodes);
		for (int i = 0; i < def->n_nodes; i++)
		{
			JsonbValue *e = getIthJsonbValueFromContainer(nodes, i);
			WorkflowNode *node = &def->nodes[i];
			char	   *path = psprintf("nodes[%d]", i);
			char	   *type;
			bool		known = false;

			node->index = i;
			node->type = NODE_UNKNOWN;
			if (!value_is_object(e))
			{
				add_problem(&st, path, "expected an object with \"id\" and \"type\"");
				continue;
			}
			node->id = compile_optional_string(&st, e->val.binary.data, "id", path, true);
			if (node->id != NULL)
			{
				bool		ok = node->id[0] != '\0' && strlen(node->id) <= 64;

				for (const char *p = node->id; *p && ok; p++)
					ok = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
						(*p >= '0' && *p <= '9') || *p == '_' || *p == '-';
				if (!ok)
					add_problem(&st, psprintf("%s.id", path),
								"node id must be 1-64 letters, digits, _ or -");
				for (int j = 0; j < i && node->id != NULL; j++)
				{
					if (def->nodes[j].id != NULL && strcmp(def->nodes[j].id, node->id) == 0)
					{
						add_problem(&st, psprintf("%s.id", path),
									"duplicate node id \"%s\" (also nodes[%d])", node->id, j);
						node->id = NULL;	/* edges name the first one */
					}
				}
			}
			type = compile_optional_string(&st, e->val.binary.data, "type", path, true);
			if (type == NULL)
			{
				node->type = NODE_UNKNOWN;
				continue;
			}
			node->type = NODE_UNKNOWN;
			for (int t = 0; t < (int) lengthof(node_types); t++)
			{
				if (node_types[t].name != NULL && strcmp(node_types[t].name, type) == 0)
				{
					node->type = node_types[t].type;
					known = true;
				}
			}
			if (!known)
			{
				add_problem(&st, psprintf("%s.type", path),
							"unknown node type \"%s\"; expected one of trigger, email, sms, push, chat, webhook, condition, switch, delay, transform, wait",
							type);
				continue;
			}
			if (node->type == NODE_TRIGGER)
			{
				n_triggers++;
				if (def->trigger_index < 0)
					def->trigger_index = i;
			}
			compile_node(&st, node, e->val.binary.data, path);
		}
	}

	if (n_triggers != 1 && def->n_nodes > 0)
		add_problem(&st, "nodes", "a workflow needs exactly one trigger node, found %d", n_triggers);

	if (!too_large && compile_edges(&st, root) && def->trigger_index >= 0)
		check_graph(&st);

	MemoryContextSwitchTo(old);
	if (st.problems != NIL)
	{
		MemoryContextDelete(cxt);
		*problems = st.problems;
		return NULL;
	}
	return def;
}

void
workflow_definition_free(WorkflowDefinition *def)
{
	MemoryContextDelete(def->mcxt);
}

WorkflowNode *
workflow_definition_node(WorkflowDefinition *def, const char *id)
{
	int			i = node_index(def, id);

	return i < 0 ? NULL : &def->nodes[i];
}

const char *
workflow_node_type_name(NodeType type)
{
	return node_type_info(type)->name;
}

NotiflowChannel
workflow_node_channel(NodeType type)
{
	switch (type)
	{
		case NODE_EMAIL:
			return CHANNEL_EMAIL;
		case NODE_SMS:
			return CHANNEL_SMS;
		case NODE_PUSH:
			return CHANNEL_PUSH;
		case NODE_CHAT:
			return CHANNEL_CHAT;
		case NODE_WEBHOOK:
			return CHANNEL_WEBHOOK;
		default:
			elog(ERROR, "node type %s has no channel", workflow_node_type_name(type));
	}
	return CHANNEL_EMAIL;		/* keep compiler quiet */
}
