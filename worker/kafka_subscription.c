/*
 * kafka_subscription.c — Kafka subscriptions: the SQL functions
 * notiflow.subscribe_kafka(name, brokers, topics, workflow_key, options) and
 * notiflow.unsubscribe_kafka(name), the validation and compilation of a
 * subscription's options (shared with the consumer, which loads its
 * subscription through here), and the "notiflow kafka sync" worker.
 *
 * Everything is validated when subscribing, without network I/O: names,
 * topics, every option (jsonpaths must compile and use only the message
 * variables, librdkafka properties are set on a scratch configuration), the
 * workflow, and whether event mode is available.  The consumer therefore
 * only meets errors that come with the messages themselves.
 *
 * The table's statement trigger asks the launcher for a sync at commit
 * (worker_shmem.c); the sync worker reads the table and publishes the
 * subscriptions into shared memory, from which the launcher starts and stops
 * the consumers (launcher.c explains the protocol).
 */
#include "postgres.h"

#include <ctype.h>
#include <math.h>

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "commands/extension.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/value.h"
#include "parser/parse_func.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "storage/ipc.h"
#include "tcop/tcopprot.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/numeric.h"
#include "utils/snapmgr.h"

#include "jsonb_util.h"
#include "kafka.h"
#include "safe_input.h"
#include "spi_util.h"
#include "worker.h"

PG_FUNCTION_INFO_V1(subscribe_kafka);
PG_FUNCTION_INFO_V1(unsubscribe_kafka);
PG_FUNCTION_INFO_V1(kafka_subscriptions_changed);

#define EMIT_EVENT_SIGNATURE "notiflow.emit_event(text,text,jsonb)"

/* The variables a subscription's jsonpaths may use, besides $ (the message). */
static const char *const message_variables[] = {"topic", "partition", "offset", "key", "headers", "timestamp"};

/* The options subscribe_kafka knows. */
static const char *const option_names[] = {
	"batch_size", "batch_time_ms", "correlation_key", "event_name", "filter", "group_id",
	"idempotency_key", "max_message_bytes", "mode", "payload", "rdkafka", "recipient", "start"
};

/* librdkafka properties notiflow sets itself. */
static const char *const reserved_properties[] = {
	"bootstrap.servers", "metadata.broker.list", "group.id", "enable.auto.commit",
	"enable.auto.offset.store", "auto.offset.reset", "log.queue", "group.protocol",
	/* the consumer's status (broker_down) is cleared by the statistics it asks for */
	"statistics.interval.ms"
};

static SpiStatement load_stmt = {
	"SELECT revision, name, brokers, topics, workflow_key, options"
	"  FROM notiflow.kafka_subscriptions WHERE id = $1",
	1, {INT8OID}
};

static SpiStatement revision_stmt = {
	"SELECT revision FROM notiflow.kafka_subscriptions WHERE id = $1",
	1, {INT8OID}
};

static SpiStatement workflow_exists_stmt = {
	"SELECT 1 FROM notiflow.workflows WHERE key = $1",
	1, {TEXTOID}
};

static SpiStatement lock_subscriptions_stmt = {
	"LOCK TABLE notiflow.kafka_subscriptions IN SHARE ROW EXCLUSIVE MODE",
	0, {InvalidOid}
};

static SpiStatement others_stmt = {
	"SELECT count(*) FROM notiflow.kafka_subscriptions WHERE name <> $1",
	1, {TEXTOID}
};

/*
 * Another subscription that starts the same workflow from one of these
 * topics with position keys (topic/partition/offset), in another group or
 * cluster: it reads the same positions, and the engine would take one's
 * messages for repeats of the other's (executions are unique per workflow
 * and idempotency key).  One group on one cluster shares its partitions out:
 * no position is read by two.
 */
static SpiStatement position_clash_stmt = {
	"SELECT s.name, t.topic FROM notiflow.kafka_subscriptions s, unnest(s.topics) AS t(topic)"
	" WHERE s.name <> $1 AND s.mode = 'trigger' AND s.workflow_key = $2 AND t.topic = ANY ($3)"
	"   AND NOT (s.options ? 'idempotency_key') AND (s.group_id <> $4 OR s.brokers <> $5)"
	" ORDER BY s.name, t.topic LIMIT 1",
	5, {TEXTOID, TEXTOID, TEXTARRAYOID, TEXTOID, TEXTOID}
};

static SpiStatement upsert_stmt = {
	"INSERT INTO notiflow.kafka_subscriptions AS s"
	"       (name, brokers, topics, workflow_key, mode, group_id, options)"
	" VALUES ($1, $2, $3, $4, $5, $6, $7)"
	" ON CONFLICT (name) DO UPDATE"
	"   SET brokers = excluded.brokers, topics = excluded.topics, workflow_key = excluded.workflow_key,"
	"       mode = excluded.mode, group_id = excluded.group_id, options = excluded.options"
	" WHERE (s.brokers, s.topics, s.workflow_key, s.mode, s.group_id, s.options)"
	"       IS DISTINCT FROM (excluded.brokers, excluded.topics, excluded.workflow_key,"
	"                         excluded.mode, excluded.group_id, excluded.options)",
	7, {TEXTOID, TEXTOID, TEXTARRAYOID, TEXTOID, TEXTOID, TEXTOID, JSONBOID}
};

static SpiStatement delete_stmt = {
	"DELETE FROM notiflow.kafka_subscriptions WHERE name = $1",
	1, {TEXTOID}
};

static SpiStatement list_stmt = {
	"SELECT id, revision, name FROM notiflow.kafka_subscriptions ORDER BY id",
	0, {InvalidOid}
};

/* Raises the error of an invalid subscription; detail names the field. */
static void
invalid(const char *name, const char *field, const char *problem)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("invalid kafka subscription \"%s\"", name ? name : ""),
			 errdetail("%s: %s", field, problem)));
}

/* True when s is one of the n strings of list. */
static bool
string_in(const char *s, const char *const *list, int n)
{
	for (int i = 0; i < n; i++)
		if (strcmp(s, list[i]) == 0)
			return true;
	return false;
}

/* Joins n strings, each after prefix, with ", ". */
static char *
string_join(const char *prefix, const char *const *list, int n)
{
	StringInfoData buf;

	initStringInfo(&buf);
	for (int i = 0; i < n; i++)
		appendStringInfo(&buf, "%s%s%s", i > 0 ? ", " : "", prefix, list[i]);
	return buf.data;
}

/* Checks that every $variable of a jsonpath item chain is a message variable. */
static void
check_path_variables(const char *name, const char *field, JsonPathItem *item)
{
	JsonPathItem v = *item;

	for (;;)
	{
		JsonPathItem a;
		JsonPathItem b;

		switch (v.type)
		{
			case jpiAnd:
			case jpiOr:
			case jpiEqual:
			case jpiNotEqual:
			case jpiLess:
			case jpiGreater:
			case jpiLessOrEqual:
			case jpiGreaterOrEqual:
			case jpiAdd:
			case jpiSub:
			case jpiMul:
			case jpiDiv:
			case jpiMod:
			case jpiStartsWith:
				jspGetLeftArg(&v, &a);
				check_path_variables(name, field, &a);
				jspGetRightArg(&v, &b);
				check_path_variables(name, field, &b);
				break;
			case jpiNot:
			case jpiIsUnknown:
			case jpiExists:
			case jpiPlus:
			case jpiMinus:
			case jpiFilter:
				jspGetArg(&v, &a);
				check_path_variables(name, field, &a);
				break;
			case jpiDatetime:
				if (v.content.arg)
				{
					jspGetArg(&v, &a);
					check_path_variables(name, field, &a);
				}
				break;
			case jpiLikeRegex:
				jspInitByBuffer(&a, v.base, v.content.like_regex.expr);
				check_path_variables(name, field, &a);
				break;
			case jpiIndexArray:
				for (int i = 0; i < v.content.array.nelems; i++)
				{
					bool		range = jspGetArraySubscript(&v, &a, &b, i);

					check_path_variables(name, field, &a);
					if (range)
						check_path_variables(name, field, &b);
				}
				break;
			case jpiVariable:
				{
					int32		len;
					char	   *src = jspGetString(&v, &len);
					char	   *var = pnstrdup(src, len);

					if (!string_in(var, message_variables, lengthof(message_variables)))
						invalid(name, field,
								psprintf("unknown jsonpath variable $%s; expected one of %s", var,
										 string_join("$", message_variables, lengthof(message_variables))));
				}
				break;
			default:
				break;
		}
		if (!jspGetNext(&v, &a))
			break;
		v = a;
	}
}

/* True when the root of a jsonpath is a predicate (what jsonb_path_match expects). */
static bool
path_is_predicate(JsonPath *path)
{
	JsonPathItem root;

	jspInit(&root, path);
	switch (root.type)
	{
		case jpiAnd:
		case jpiOr:
		case jpiNot:
		case jpiIsUnknown:
		case jpiEqual:
		case jpiNotEqual:
		case jpiLess:
		case jpiGreater:
		case jpiLessOrEqual:
		case jpiGreaterOrEqual:
		case jpiExists:
		case jpiStartsWith:
		case jpiLikeRegex:
			return true;
		default:
			return false;
	}
}

/* Returns the string value of an option, raising when it is not a string. */
static char *
option_string(const char *name, const char *field, JsonbValue *v)
{
	if (v->type != jbvString)
		invalid(name, field, "expected a string");
	if (v->val.string.len == 0)
		invalid(name, field, "must not be empty");
	return pnstrdup(v->val.string.val, v->val.string.len);
}

/* Compiles a jsonpath option; checks its variables. */
static JsonPath *
option_path(const char *name, const char *field, JsonbValue *v)
{
	char	   *src = option_string(name, field, v);
	Datum		d;
	char	   *error;
	JsonPathItem root;

	if (!safe_input(jsonpath_in, src, &d, &error))
		invalid(name, field, psprintf("invalid jsonpath: %s", error));
	jspInit(&root, DatumGetJsonPathP(d));
	check_path_variables(name, field, &root);
	return DatumGetJsonPathP(d);
}

/* Returns an integer option within [min, max]. */
static int
option_int(const char *name, const char *field, JsonbValue *v, int min, int max)
{
	double		d;

	if (v->type != jbvNumeric)
		invalid(name, field, "expected a number");
	/* (beyond a double's range: infinite, then out of bounds, not an error about a double) */
	d = DatumGetFloat8(DirectFunctionCall1(numeric_float8_no_overflow, NumericGetDatum(v->val.numeric)));
	if (d != floor(d))
		invalid(name, field, "expected an integer");
	if (d < min || d > max)
		invalid(name, field, psprintf("expected %d to %d", min, max));
	return (int) d;
}

/* Text of a scalar librdkafka property value (string, number or boolean). */
static char *
property_text(const char *name, const char *field, JsonbValue *v)
{
	switch (v->type)
	{
		case jbvString:
			return pnstrdup(v->val.string.val, v->val.string.len);
		case jbvNumeric:
			return DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(v->val.numeric)));
		case jbvBool:
			return pstrdup(v->val.boolean ? "true" : "false");
		default:
			invalid(name, field, "expected a string");
	}
	return NULL;					/* not reached */
}

/* Validates options.rdkafka by setting each property on a scratch librdkafka configuration. */
static void
parse_rdkafka(KafkaSubscription *sub, JsonbValue *v)
{
	JsonbIterator *it;
	JsonbValue	k;
	JsonbValue	val;
	JsonbIteratorToken tok;
	rd_kafka_conf_t *conf;
	char		errstr[512];

	if (v->type != jbvBinary || !JsonContainerIsObject(v->val.binary.data))
		invalid(sub->name, "options.rdkafka", "expected an object of librdkafka properties");
	conf = rd_kafka_conf_new();
	it = JsonbIteratorInit(v->val.binary.data);
	while ((tok = JsonbIteratorNext(&it, &k, true)) != WJB_DONE)
	{
		char	   *prop;
		char	   *field;
		char	   *text;
		rd_kafka_conf_res_t res;

		if (tok != WJB_KEY)
			continue;
		prop = pnstrdup(k.val.string.val, k.val.string.len);
		field = psprintf("options.rdkafka.%s", prop);
		tok = JsonbIteratorNext(&it, &val, true);
		/* librdkafka takes a topic property with a "topic." prefix too */
		if (string_in(prop, reserved_properties, lengthof(reserved_properties)) ||
			(strncmp(prop, "topic.", 6) == 0 &&
			 string_in(prop + 6, reserved_properties, lengthof(reserved_properties))))
		{
			rd_kafka_conf_destroy(conf);
			invalid(sub->name, field, "notiflow sets this property itself (see the subscription's brokers, group_id and start)");
		}
		if (val.type != jbvString && val.type != jbvNumeric && val.type != jbvBool)
		{
			rd_kafka_conf_destroy(conf);
			invalid(sub->name, field, "expected a string");
		}
		text = property_text(sub->name, field, &val);
		if (strcmp(prop, "partition.assignment.strategy") == 0 && strstr(text, "cooperative") != NULL)
		{
			rd_kafka_conf_destroy(conf);
			invalid(sub->name, field, "the consumer needs an eager assignor (range, roundrobin)");
		}
		if (strcmp(prop, "group.instance.id") == 0)
		{
			/* static membership: librdkafka 2.0.2 sends no LeaveGroup at close */
			rd_kafka_conf_destroy(conf);
			invalid(sub->name, field, "static group membership is not supported: a stopped consumer would keep its partitions until session.timeout.ms");
		}
		res = rd_kafka_conf_set(conf, prop, text, errstr, sizeof(errstr));
		if (res != RD_KAFKA_CONF_OK)
		{
			rd_kafka_conf_destroy(conf);
			invalid(sub->name, field, pstrdup(errstr));
		}
		sub->rdkafka_names = lappend(sub->rdkafka_names, prop);
		sub->rdkafka_values = lappend(sub->rdkafka_values, text);
	}
	rd_kafka_conf_destroy(conf);
}

void
kafka_conf_set_own(rd_kafka_conf_t *conf, const KafkaSubscription *sub)
{
	char		errstr[512];
	const char *const own[][2] = {
		{"group.id", sub->group_id}, {"enable.auto.commit", "false"},
		{"enable.auto.offset.store", "false"},

		/*
		 * Only an offset out of range is reset by librdkafka (every partition
		 * is assigned at an offset; pin_latest gives "latest" its meaning):
		 * one below the log's start (its messages were deleted by retention
		 * before they were read) or past its end (truncated, created again).
		 * Either way the partition is read from the first message Kafka
		 * still has; "latest" would skip the whole backlog.
		 */
		{"auto.offset.reset", "earliest"}
	};

	for (size_t i = 0; i < lengthof(own); i++)
		if (rd_kafka_conf_set(conf, own[i][0], own[i][1], errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK)
		{
			rd_kafka_conf_destroy(conf);
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("kafka subscription \"%s\": cannot set %s: %s", sub->name, own[i][0], errstr)));
		}
}

/*
 * Checks the subscription's librdkafka properties together, as the consumer
 * will set them: some are checked only against each other when a client is
 * created (session.timeout.ms above max.poll.interval.ms, a CA file that is
 * not there), and a consumer that cannot start restarts every few seconds.
 * The client made here has no brokers, so it connects nowhere, and is
 * destroyed at once (librdkafka blocks every signal in its threads).
 */
static void
check_rdkafka_together(KafkaSubscription *sub)
{
	rd_kafka_conf_t *conf;
	rd_kafka_t *rk;
	char		errstr[512];
	ListCell   *ln;
	ListCell   *lv;
	bool		sasl = false;
	const char *mechanism = "GSSAPI";	/* librdkafka's default */

	/*
	 * Not with Kerberos or OAUTHBEARER: a client made with them starts a
	 * kinit command or a token request at once, which the backend would
	 * wait for, uninterruptibly, in rd_kafka_destroy.
	 */
	forboth(ln, sub->rdkafka_names, lv, sub->rdkafka_values)
	{
		if (pg_strcasecmp(lfirst(ln), "security.protocol") == 0)
			sasl = pg_strncasecmp(lfirst(lv), "sasl", 4) == 0;
		else if (pg_strcasecmp(lfirst(ln), "sasl.mechanism") == 0 ||
				 pg_strcasecmp(lfirst(ln), "sasl.mechanisms") == 0)
			mechanism = lfirst(lv);
	}
	if (sasl && (pg_strcasecmp(mechanism, "GSSAPI") == 0 || pg_strcasecmp(mechanism, "OAUTHBEARER") == 0))
		return;

	conf = rd_kafka_conf_new();
	rd_kafka_conf_set(conf, "statistics.interval.ms", "1000", errstr, sizeof(errstr));
	forboth(ln, sub->rdkafka_names, lv, sub->rdkafka_values)
	{
		if (rd_kafka_conf_set(conf, lfirst(ln), lfirst(lv), errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK)
		{
			rd_kafka_conf_destroy(conf);
			invalid(sub->name, psprintf("options.rdkafka.%s", (char *) lfirst(ln)), pstrdup(errstr));
		}
	}
	kafka_conf_set_own(conf, sub);
	rd_kafka_conf_set(conf, "log_level", "0", errstr, sizeof(errstr));
	rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
	if (rk == NULL)
	{
		rd_kafka_conf_destroy(conf);
		invalid(sub->name, "options.rdkafka", psprintf("librdkafka refuses the properties together: %s", errstr));
	}
	rd_kafka_destroy_flags(rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
}

/* Checks a topic name as Kafka does: 1 to 249 of [A-Za-z0-9._-], not "." or "..". */
static void
check_topic(const char *name, int position, const char *topic, List *seen)
{
	char	   *field = psprintf("topics[%d]", position);
	ListCell   *lc;

	if (topic[0] == '\0' || strlen(topic) > 249 || strcmp(topic, ".") == 0 || strcmp(topic, "..") == 0)
		invalid(name, field, "a topic name has 1 to 249 characters and is not \".\" or \"..\"");
	if (strspn(topic, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-") != strlen(topic))
		invalid(name, field, psprintf("invalid topic name \"%s\": only letters, digits, \".\", \"_\" and \"-\"", topic));
	foreach(lc, seen)
		if (strcmp(lfirst(lc), topic) == 0)
			invalid(name, field, psprintf("duplicate topic \"%s\"", topic));
}

/* Checks brokers: a comma-separated list of host[:port] without blanks. */
static void
check_brokers(const char *name, const char *brokers)
{
	char	   *copy = pstrdup(brokers);
	char	   *save = NULL;
	int			count = 0;

	if (strpbrk(brokers, " \t\r\n") != NULL)
		invalid(name, "brokers", "expected host:port[,host:port...] without blanks");
	for (char *item = strtok_r(copy, ",", &save); item != NULL; item = strtok_r(NULL, ",", &save))
		count++;
	if (count == 0 || brokers[0] == ',' || brokers[strlen(brokers) - 1] == ',' || strstr(brokers, ",,") != NULL)
		invalid(name, "brokers", "expected host:port[,host:port...]");
}

/* Validates and compiles a subscription's settings (22023 naming the field). */
KafkaSubscription *
kafka_subscription_parse(const char *name, const char *brokers, List *topics,
						 const char *workflow_key, Jsonb *options)
{
	KafkaSubscription *sub = palloc0(sizeof(KafkaSubscription));
	JsonbIterator *it;
	JsonbValue	k;
	JsonbValue	v;
	JsonbIteratorToken tok;
	bool		key_given = false;
	ListCell   *lc;
	int			position = 0;
	const char *mode = "trigger";

	if (name == NULL || name[0] == '\0')
		invalid(name, "name", "required");
	if (strlen(name) > NOTIFLOW_KAFKA_NAME_LEN || !isalnum((unsigned char) name[0]) ||
		strspn(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:-") != strlen(name))
		invalid(name, "name", "expected 1 to 64 letters, digits, \"_\", \".\", \":\" or \"-\", starting with a letter or digit");
	sub->name = pstrdup(name);
	if (brokers == NULL || brokers[0] == '\0')
		invalid(name, "brokers", "required (host:port[,host:port...])");
	check_brokers(name, brokers);
	sub->brokers = pstrdup(brokers);
	if (topics == NIL)
		invalid(name, "topics", "at least one topic is required");
	foreach(lc, topics)
	{
		const char *topic = lfirst(lc);

		position++;
		if (topic == NULL)
			invalid(name, psprintf("topics[%d]", position), "must not be null");
		check_topic(name, position, topic, sub->topics);
		sub->topics = lappend(sub->topics, pstrdup(topic));
	}
	sub->key_source = KAFKA_KEY_POSITION;
	sub->start = "earliest";
	sub->max_message_bytes = 1024 * 1024;
	sub->batch_size = 500;
	sub->batch_time_ms = 50;

	if (options != NULL && !JB_ROOT_IS_OBJECT(options))
		invalid(name, "options", "expected a JSON object");
	it = options ? JsonbIteratorInit(&options->root) : NULL;
	while (it != NULL && (tok = JsonbIteratorNext(&it, &k, true)) != WJB_DONE)
	{
		char	   *key;
		char	   *field;

		if (tok != WJB_KEY)
			continue;
		key = pnstrdup(k.val.string.val, k.val.string.len);
		field = psprintf("options.%s", key);
		(void) JsonbIteratorNext(&it, &v, true);
		if (strcmp(key, "group_id") == 0)
			sub->group_id = option_string(name, field, &v);
		else if (strcmp(key, "mode") == 0)
		{
			mode = option_string(name, field, &v);
			if (strcmp(mode, "trigger") != 0 && strcmp(mode, "event") != 0)
				invalid(name, field, psprintf("unknown mode \"%s\"; expected trigger or event", mode));
		}
		else if (strcmp(key, "filter") == 0)
		{
			sub->filter = option_path(name, field, &v);
			if (!path_is_predicate(sub->filter))
				invalid(name, field, "expected a jsonpath predicate, e.g. $.type == \"order\"");
		}
		else if (strcmp(key, "payload") == 0)
			sub->payload = option_path(name, field, &v);
		else if (strcmp(key, "recipient") == 0)
			sub->recipient = option_path(name, field, &v);
		else if (strcmp(key, "idempotency_key") == 0)
		{
			key_given = true;
			if (v.type == jbvNull)
				sub->key_source = KAFKA_KEY_NONE;
			else
			{
				sub->idempotency_key = option_path(name, field, &v);
				sub->key_source = KAFKA_KEY_PATH;
			}
		}
		else if (strcmp(key, "event_name") == 0)
			sub->event_name = option_path(name, field, &v);
		else if (strcmp(key, "correlation_key") == 0)
			sub->correlation_key = option_path(name, field, &v);
		else if (strcmp(key, "start") == 0)
		{
			char	   *start = option_string(name, field, &v);

			if (strcmp(start, "earliest") != 0 && strcmp(start, "latest") != 0)
				invalid(name, field, psprintf("unknown start \"%s\"; expected earliest or latest", start));
			sub->start = start;
		}
		else if (strcmp(key, "max_message_bytes") == 0)
			sub->max_message_bytes = option_int(name, field, &v, 1, 1024 * 1024 * 1024);
		else if (strcmp(key, "batch_size") == 0)
			sub->batch_size = option_int(name, field, &v, 1, 10000);
		else if (strcmp(key, "batch_time_ms") == 0)
			sub->batch_time_ms = option_int(name, field, &v, 0, 10000);
		else if (strcmp(key, "rdkafka") == 0)
			parse_rdkafka(sub, &v);
		else
			invalid(name, field, psprintf("unknown option; expected one of %s",
										  string_join("", option_names, lengthof(option_names))));
	}
	if (sub->group_id == NULL)
		sub->group_id = psprintf("notiflow-%s", name);

	sub->mode = strcmp(mode, "event") == 0 ? KAFKA_MODE_EVENT : KAFKA_MODE_TRIGGER;
	if (sub->mode == KAFKA_MODE_TRIGGER)
	{
		if (workflow_key == NULL || workflow_key[0] == '\0')
			invalid(name, "workflow_key", "required in trigger mode");
		if (sub->event_name != NULL)
			invalid(name, "options.event_name", "only in event mode");
		if (sub->correlation_key != NULL)
			invalid(name, "options.correlation_key", "only in event mode");
		sub->workflow_key = pstrdup(workflow_key);
	}
	else
	{
		if (workflow_key != NULL)
			invalid(name, "workflow_key", "must be null in event mode: events reach the wait nodes of every workflow");
		if (sub->recipient != NULL)
			invalid(name, "options.recipient", "only in trigger mode");
		if (key_given)
			invalid(name, "options.idempotency_key", "only in trigger mode");
		if (sub->event_name == NULL)
			invalid(name, "options.event_name", "required in event mode (a jsonpath, e.g. $.type)");
		if (sub->correlation_key == NULL)
			invalid(name, "options.correlation_key", "required in event mode (a jsonpath, e.g. $.order_id)");
	}
	return sub;
}

/* True when notiflow.emit_event(text, text, jsonb) exists (event mode needs it). */
static bool
emit_event_exists(void)
{
	Oid			argtypes[3] = {TEXTOID, TEXTOID, JSONBOID};

	return OidIsValid(LookupFuncName(list_make2(makeString("notiflow"), makeString("emit_event")), 3,
									 argtypes, true));
}

/* Reads a text[] argument into a List of C strings (NULL elements stay NULL). */
static List *
text_array_list(const char *name, ArrayType *arr)
{
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	List	   *out = NIL;

	if (ARR_NDIM(arr) > 1)
		invalid(name, "topics", "expected a one-dimensional array");
	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	for (int i = 0; i < n; i++)
		out = lappend(out, nulls[i] ? NULL : TextDatumGetCString(elems[i]));
	return out;
}

/* Returns a text argument, or NULL. */
static char *
text_arg(FunctionCallInfo fcinfo, int i)
{
	return PG_ARGISNULL(i) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(i));
}

/*
 * subscribe_kafka(name, brokers, topics, workflow_key, options): validates
 * everything, then creates or replaces the subscription.  A replaced
 * subscription keeps its group's offsets.
 */
Datum
subscribe_kafka(PG_FUNCTION_ARGS)
{
	char	   *name = text_arg(fcinfo, 0);
	char	   *brokers = text_arg(fcinfo, 1);
	char	   *workflow_key = text_arg(fcinfo, 3);
	Jsonb	   *options = PG_ARGISNULL(4) ? NULL : PG_GETARG_JSONB_P(4);
	List	   *topics = PG_ARGISNULL(2) ? NIL : text_array_list(name, PG_GETARG_ARRAYTYPE_P(2));
	KafkaSubscription *sub = kafka_subscription_parse(name, brokers, topics, workflow_key, options);
	Datum		args[7];
	char		nulls[7] = "       ";
	Datum	   *topic_datums;
	ListCell   *lc;
	int			i = 0;
	bool		isnull;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "notiflow: SPI_connect failed");
	if (sub->mode == KAFKA_MODE_TRIGGER)
	{
		args[0] = CStringGetTextDatum(sub->workflow_key);
		spi_run(&workflow_exists_stmt, args, NULL, true, 1, SPI_OK_SELECT);
		if (SPI_processed == 0)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("unknown workflow \"%s\"", sub->workflow_key),
					 errdetail("workflow_key: no workflow has this key"),
					 errhint("Create it with notiflow.put_workflow().")));
	}
	else if (!emit_event_exists())
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("kafka event mode is not available"),
				 errdetail("options.mode: \"event\" stores events with %s, which this installation does not have",
						   EMIT_EVENT_SIGNATURE),
				 errhint("Use mode \"trigger\", or upgrade notiflow to a version with wait nodes.")));

	check_rdkafka_together(sub);

	/* two subscribes at once would both count the others without the newest: one waits */
	spi_run(&lock_subscriptions_stmt, NULL, NULL, false, 0, SPI_OK_UTILITY);
	args[0] = CStringGetTextDatum(sub->name);
	spi_run(&others_stmt, args, NULL, false, 1, SPI_OK_SELECT);	/* not read_only: a snapshot taken after the lock */
	if (DatumGetInt64(spi_value(0, 1, &isnull)) >= NOTIFLOW_MAX_KAFKA_CONSUMERS)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("too many kafka subscriptions"),
				 errdetail("name: at most %d subscriptions can run", NOTIFLOW_MAX_KAFKA_CONSUMERS)));

	topic_datums = palloc(sizeof(Datum) * list_length(sub->topics));
	foreach(lc, sub->topics)
		topic_datums[i++] = CStringGetTextDatum(lfirst(lc));
	if (sub->mode == KAFKA_MODE_TRIGGER && sub->key_source == KAFKA_KEY_POSITION)
	{
		Datum		clash_args[5] = {CStringGetTextDatum(sub->name), CStringGetTextDatum(sub->workflow_key),
			spi_array(topic_datums, NULL, i, TEXTOID), CStringGetTextDatum(sub->group_id),
		CStringGetTextDatum(sub->brokers)};

		spi_run(&position_clash_stmt, clash_args, NULL, false, 1, SPI_OK_SELECT);
		if (SPI_processed > 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid kafka subscription \"%s\"", sub->name),
					 errdetail("options.idempotency_key: subscription \"%s\" also starts workflow \"%s\" from topic \"%s\" "
							   "with position keys (topic/partition/offset), in another group or cluster: "
							   "the same positions would be taken for repeats",
							   spi_text(0, 1), sub->workflow_key, spi_text(0, 2)),
					 errhint("Give one of them an idempotency_key taken from the message, or null.")));
	}
	args[0] = CStringGetTextDatum(sub->name);
	args[1] = CStringGetTextDatum(sub->brokers);
	args[2] = spi_array(topic_datums, NULL, i, TEXTOID);
	args[3] = sub->workflow_key ? CStringGetTextDatum(sub->workflow_key) : (Datum) 0;
	nulls[3] = sub->workflow_key ? ' ' : 'n';
	args[4] = CStringGetTextDatum(sub->mode == KAFKA_MODE_EVENT ? "event" : "trigger");
	args[5] = CStringGetTextDatum(sub->group_id);
	args[6] = JsonbPGetDatum(options ? options : jsonb_make_empty_object());
	spi_run(&upsert_stmt, args, nulls, false, 0, SPI_OK_INSERT);
	SPI_finish();

	if (notiflow_shared == NULL)
		ereport(NOTICE,
				(errmsg("kafka subscription \"%s\" is stored, but no consumer runs", sub->name),
				 errhint("Consumers run when notiflow is in shared_preload_libraries.")));
	else if (strcmp(get_database_name(MyDatabaseId), notiflow_database_name) != 0)
		ereport(NOTICE,
				(errmsg("kafka subscription \"%s\" is stored, but no consumer runs in this database", sub->name),
				 errhint("Consumers run in notiflow.database_name (\"%s\").", notiflow_database_name)));
	PG_RETURN_VOID();
}

/* unsubscribe_kafka(name): removes a subscription; its consumer stops at commit. */
Datum
unsubscribe_kafka(PG_FUNCTION_ARGS)
{
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	Datum		args[1] = {CStringGetTextDatum(name)};

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "notiflow: SPI_connect failed");
	spi_run(&delete_stmt, args, NULL, false, 0, SPI_OK_DELETE);
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("unknown kafka subscription \"%s\"", name),
				 errdetail("name: no subscription has this name")));
	SPI_finish();
	PG_RETURN_VOID();
}

/* Statement trigger on kafka_subscriptions: the launcher syncs when the change commits. */
Datum
kafka_subscriptions_changed(PG_FUNCTION_ARGS)
{
	if (!CALLED_AS_TRIGGER(fcinfo))
		elog(ERROR, "kafka_subscriptions_changed: not called as a trigger");
	notiflow_kafka_sync_at_commit();
	return PointerGetDatum(NULL);
}

/* Loads subscription id (in the current transaction, SPI connected); NULL when it is gone. */
KafkaSubscription *
kafka_subscription_load(int64 id)
{
	Datum		args[1] = {Int64GetDatum(id)};
	MemoryContext cxt = CurrentMemoryContext;
	KafkaSubscription *sub;
	bool		isnull;
	Datum		topics;
	Datum		options;
	int32		revision;
	char	   *name;
	char	   *brokers;
	char	   *workflow_key;

	spi_run(&load_stmt, args, NULL, true, 1, SPI_OK_SELECT);
	/* SPI leaves its own context current: the subscription goes to the caller's */
	MemoryContextSwitchTo(cxt);
	if (SPI_processed == 0)
		return NULL;
	revision = DatumGetInt32(spi_value(0, 1, &isnull));
	name = spi_text(0, 2);
	brokers = spi_text(0, 3);
	topics = spi_value(0, 4, &isnull);
	workflow_key = spi_text(0, 5);
	options = spi_value(0, 6, &isnull);
	sub = kafka_subscription_parse(name, brokers, text_array_list(name, DatumGetArrayTypeP(topics)),
								   workflow_key, DatumGetJsonbP(options));
	sub->id = id;
	sub->revision = revision;
	return sub;
}

/* True when subscription id still exists with this revision. */
bool
kafka_subscription_current(int64 id, int32 revision)
{
	Datum		args[1] = {Int64GetDatum(id)};
	bool		isnull;

	if (!OidIsValid(get_extension_oid("notiflow", true)))
		return false;
	spi_run(&revision_stmt, args, NULL, true, 1, SPI_OK_SELECT);
	return SPI_processed == 1 && DatumGetInt32(spi_value(0, 1, &isnull)) == revision;
}

/*
 * The "notiflow kafka sync" worker: reads the Kafka generation, then the
 * subscriptions of notiflow.database_name, publishes them for the launcher
 * with that generation, and exits.
 */
void
notiflow_kafka_sync_main(Datum arg)
{
	uint64		generation;
	KafkaWanted wanted[NOTIFLOW_MAX_KAFKA_CONSUMERS];
	int			count = 0;
	Latch	   *launcher_latch;

	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(notiflow_database_name, NULL, 0);

	generation = pg_atomic_read_u64(&notiflow_shared->kafka_generation);
	pg_memory_barrier();

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "notiflow: SPI_connect failed");
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, "notiflow: reading kafka subscriptions");
	if (OidIsValid(get_extension_oid("notiflow", true)))
	{
		spi_run(&list_stmt, NULL, NULL, true, NOTIFLOW_MAX_KAFKA_CONSUMERS, SPI_OK_SELECT);
		for (uint64 r = 0; r < SPI_processed; r++)
		{
			bool		isnull;

			wanted[count].subscription_id = DatumGetInt64(spi_value(r, 1, &isnull));
			wanted[count].revision = DatumGetInt32(spi_value(r, 2, &isnull));
			strlcpy(wanted[count].name, spi_text(r, 3), sizeof(wanted[count].name));
			count++;
		}
	}
	PopActiveSnapshot();
	SPI_finish();
	CommitTransactionCommand();
	pgstat_report_activity(STATE_IDLE, NULL);

	SpinLockAcquire(&notiflow_shared->mutex);
	memcpy(notiflow_shared->kafka_wanted, wanted, sizeof(KafkaWanted) * count);
	notiflow_shared->kafka_wanted_count = count;
	notiflow_shared->kafka_synced_generation = generation;
	notiflow_shared->kafka_synced = true;
	launcher_latch = notiflow_shared->launcher_latch;
	SpinLockRelease(&notiflow_shared->mutex);
	if (launcher_latch)
		SetLatch(launcher_latch);	/* after the spinlock: SetLatch may signal */
	proc_exit(0);
}
