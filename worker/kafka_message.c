/*
 * kafka_message.c — what the Kafka consumer does with one batch of messages,
 * inside the batch's transaction (kafka_consumer.c stores the offsets in the
 * same transaction and commits).
 *
 * Per message, in its own subtransaction: the size is checked, the value is
 * parsed as JSON (UTF-8), the filter decides whether it counts, and the
 * payload, recipient and idempotency key (trigger mode) or the event's name,
 * correlation key and data (event mode) are extracted.  Nothing is written
 * there, so those subtransactions take no transaction id.  The jsonpaths see
 * the message as $ and its position as variables: $topic, $partition,
 * $offset, $key, $headers, $timestamp.  Then the executions of the batch are
 * started with one engine_trigger() call, or its events are emitted one
 * after the other with notiflow.emit_event_attempt(), in one subtransaction
 * for the batch; when that raises, each message is handled alone (an event
 * through notiflow.emit_event()) so that only the bad ones fail.  Writing in
 * one subtransaction per batch, not one or two per message, keeps the
 * backend's cache of subtransaction ids (64) from overflowing, which would
 * slow every snapshot in the cluster while the batch runs.
 *
 * A message that fails anywhere becomes a dead letter (source "kafka",
 * reference "topic/partition/offset", the raw bytes, details {topic,
 * partition, offset, key, headers, subscription}, the error) in the batch's
 * transaction: never dropped, and never holding up its partition.
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/resowner.h"

#include "engine.h"
#include "jsonb_util.h"
#include "kafka.h"
#include "safe_input.h"
#include "spi_util.h"

/* What is known about a message besides its value. */
typedef struct MessageMeta
{
	char	   *reference;		/* topic/partition/offset */
	Jsonb	   *vars;			/* the jsonpath variables */
	Jsonb	   *details;		/* the dead letter's details */
} MessageMeta;

/* How preparing one message ended. */
typedef enum PrepareOutcome
{
	PREPARE_READY,				/* a trigger request is ready */
	PREPARE_FILTERED,			/* the filter left it out */
	PREPARE_EVENT,				/* an event is ready */
	PREPARE_FAILED				/* it is a dead letter */
} PrepareOutcome;

/* An event of event mode: emit_event's arguments. */
typedef struct EventRequest
{
	Datum		args[3];		/* name, correlation key (text), data (jsonb) */
} EventRequest;

/* One event alone, waiting for a busy execution when it must (its own subtransactions). */
static SpiStatement emit_event_stmt = {
	"SELECT notiflow.emit_event($1, $2, $3)",
	3, {TEXTOID, TEXTOID, JSONBOID}
};

/* One event of a batch: no subtransaction; NF002 when an execution is busy. */
static SpiStatement emit_attempt_stmt = {
	"SELECT notiflow.emit_event_attempt($1, $2, $3)",
	3, {TEXTOID, TEXTOID, JSONBOID}
};

/*
 * Expires more rows than the batch can have put in the inbox (each event
 * stays its whole TTL, taken or not): the inbox does not grow beyond a TTL's
 * worth of events.
 */
static SpiStatement inbox_expire_stmt = {
	"SELECT notiflow.event_inbox_expire($1 + 100)", 1, {INT4OID}
};

/* Set by kafka_messages_process: the message is read by itself after failed batches. */
static bool messages_alone = false;

/*
 * Whether a message's error is raised again, for its batch to run again
 * after a backoff: an error that may pass, except out of memory for a message
 * read alone after failed batches (one huge message causes it every time: it
 * would hold its partition for good).  A full disk or an I/O error is the
 * database's, not the message's: it is raised even then.
 */
static bool
retry_later(const ErrorData *edata)
{
	/*
	 * "out of shared memory" (the lock table full: another session's doing,
	 * max_locks_per_transaction) has the same SQLSTATE as the backend's own
	 * out of memory, and is no fault of the message's (told by its
	 * untranslated message)
	 */
	if (messages_alone && edata->sqlerrcode == ERRCODE_OUT_OF_MEMORY &&
		(edata->message_id == NULL || strcmp(edata->message_id, "out of shared memory") != 0))
		return false;
	return error_is_transient(edata);
}

/* Returns bytes as they are when they are valid text in the database's encoding, else as "\x<hex>". */
static char *
bytes_text(const char *data, size_t len)
{
	bool		ascii = true;
	StringInfoData hex;

	for (size_t i = 0; i < len && ascii; i++)
		ascii = (unsigned char) data[i] < 0x80 && data[i] != '\0';
	if (ascii || (GetDatabaseEncoding() == PG_UTF8 && pg_verify_mbstr(PG_UTF8, data, (int) len, true)))
		return pnstrdup(data, len);
	initStringInfo(&hex);
	appendStringInfoString(&hex, "\\x");
	for (size_t i = 0; i < len; i++)
		appendStringInfo(&hex, "%02x", (unsigned char) data[i]);
	return hex.data;
}

/* The same as a JSON string; NULL for no data. */
static Jsonb *
bytes_jsonb(const char *data, size_t len)
{
	if (data == NULL)
		return NULL;
	return jsonb_make_string(bytes_text(data, len));
}

/* Returns the message's headers as an object; a repeated name has an array of its values. */
static Jsonb *
headers_jsonb(rd_kafka_message_t *m)
{
	rd_kafka_headers_t *headers;
	List	   *raw_names = NIL;
	List	   *names = NIL;
	List	   *values = NIL;
	const char *name;
	const void *value;
	size_t		size;
	const char **keys;
	Jsonb	  **vals;
	int			i = 0;
	ListCell   *ln;
	ListCell   *lv;

	if (rd_kafka_message_headers(m, &headers) != RD_KAFKA_RESP_ERR_NO_ERROR)
		return jsonb_make_empty_object();
	for (size_t idx = 0; rd_kafka_header_get_all(headers, idx, &name, &value, &size) == RD_KAFKA_RESP_ERR_NO_ERROR; idx++)
	{
		bool		seen = false;
		List	   *all = NIL;

		foreach(ln, raw_names)
			seen = seen || strcmp(lfirst(ln), name) == 0;
		if (seen)
			continue;
		for (size_t j = 0; rd_kafka_header_get(headers, j, name, &value, &size) == RD_KAFKA_RESP_ERR_NO_ERROR; j++)
			all = lappend(all, bytes_jsonb(value, size));
		raw_names = lappend(raw_names, (char *) name);
		names = lappend(names, bytes_text(name, strlen(name)));	/* valid text, as the values */
		if (list_length(all) == 1)
			values = lappend(values, linitial(all));
		else
		{
			JsonbParseState *state = NULL;
			ListCell   *lc;

			pushJsonbValue(&state, WJB_BEGIN_ARRAY, NULL);
			foreach(lc, all)
			{
				JsonbValue	v;

				if (lfirst(lc) == NULL)
					v.type = jbvNull;
				else
					JsonbExtractScalar(&((Jsonb *) lfirst(lc))->root, &v);
				pushJsonbValue(&state, WJB_ELEM, &v);
			}
			values = lappend(values, JsonbValueToJsonb(pushJsonbValue(&state, WJB_END_ARRAY, NULL)));
		}
	}
	keys = palloc(sizeof(char *) * Max(list_length(names), 1));
	vals = palloc(sizeof(Jsonb *) * Max(list_length(names), 1));
	forboth(ln, names, lv, values)
	{
		keys[i] = lfirst(ln);
		vals[i++] = lfirst(lv);
	}
	return jsonb_make_object(i, keys, vals);
}

/* Builds a message's reference, jsonpath variables and dead-letter details. */
static void
message_meta(KafkaSubscription *sub, rd_kafka_message_t *m, MessageMeta *meta)
{
	const char *topic = rd_kafka_topic_name(m->rkt);
	rd_kafka_timestamp_type_t ts_type;
	int64		ts = rd_kafka_message_timestamp(m, &ts_type);
	Jsonb	   *topic_j = jsonb_make_string(topic);
	Jsonb	   *partition_j = jsonb_make_int(m->partition);
	Jsonb	   *offset_j = jsonb_make_int(m->offset);
	Jsonb	   *key_j = bytes_jsonb(m->key, m->key_len);
	Jsonb	   *headers_j = headers_jsonb(m);
	const char *var_keys[] = {"topic", "partition", "offset", "key", "headers", "timestamp"};
	Jsonb	   *var_values[] = {topic_j, partition_j, offset_j, key_j, headers_j,
	ts_type == RD_KAFKA_TIMESTAMP_NOT_AVAILABLE ? NULL : jsonb_make_int(ts)};
	const char *detail_keys[] = {"topic", "partition", "offset", "key", "headers", "subscription"};
	Jsonb	   *detail_values[] = {topic_j, partition_j, offset_j, key_j, headers_j, jsonb_make_string(sub->name)};

	meta->reference = psprintf("%s/%d/%lld", topic, (int) m->partition, (long long) m->offset);
	meta->vars = jsonb_make_object(lengthof(var_keys), var_keys, var_values);
	meta->details = jsonb_make_object(lengthof(detail_keys), detail_keys, detail_values);
}

/* Calls a jsonb_path_* function (target, path, vars, silent false): errors are the message's. */
static Datum
path_call(PGFunction fn, Jsonb *target, JsonPath *path, Jsonb *vars, bool *isnull)
{
	LOCAL_FCINFO(fcinfo, 4);
	Datum		result;

	InitFunctionCallInfoData(*fcinfo, NULL, 4, InvalidOid, NULL, NULL);
	fcinfo->args[0].value = JsonbPGetDatum(target);
	fcinfo->args[0].isnull = false;
	fcinfo->args[1].value = PointerGetDatum(path);
	fcinfo->args[1].isnull = false;
	fcinfo->args[2].value = JsonbPGetDatum(vars);
	fcinfo->args[2].isnull = false;
	fcinfo->args[3].value = BoolGetDatum(false);
	fcinfo->args[3].isnull = false;
	result = fn(fcinfo);
	*isnull = fcinfo->isnull;
	return result;
}

/* Returns the first item a path selects; raises when it selects nothing (or JSON null). */
static Jsonb *
extract(Jsonb *value, JsonPath *path, Jsonb *vars)
{
	bool		isnull;
	Datum		d = path_call(jsonb_path_query_first, value, path, vars, &isnull);
	Jsonb	   *found = isnull ? NULL : DatumGetJsonbP(d);
	JsonbValue	scalar;

	if (found != NULL && JB_ROOT_IS_SCALAR(found) && JsonbExtractScalar(&found->root, &scalar) &&
		scalar.type == jbvNull)
		found = NULL;
	if (found == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("selected nothing")));
	return found;
}

/* Returns the text of an extracted key (1 to 256 characters). */
static char *
extract_text(Jsonb *value, JsonPath *path, Jsonb *vars)
{
	char	   *text = jsonb_scalar_text(extract(value, path, vars));

	int			chars = pg_mbstrlen(text);

	if (chars < 1 || chars > 256)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("expected 1 to 256 characters, got %d", chars)));
	return text;
}

/* Parses a message's value: JSON in UTF-8, at most options.max_message_bytes. */
static Jsonb *
parse_value(KafkaSubscription *sub, rd_kafka_message_t *m, const char *volatile *stage)
{
	char	   *text;

	*stage = "too large";
	if (m->len > (size_t) sub->max_message_bytes)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("the message has %zu bytes", m->len),
				 errdetail("options.max_message_bytes is %d", sub->max_message_bytes)));
	*stage = "not JSON";
	if (m->payload == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
				 errmsg("the message has no value")));
	text = pg_any_to_server((const char *) m->payload, (int) m->len, PG_UTF8);
	if (text == (const char *) m->payload)
		text = pnstrdup(text, m->len);
	{
		Jsonb	   *value = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(text)));

		pfree(text);			/* a batch keeps its messages' values, not their text too */
		return value;
	}
}

/*
 * Prepares one message: parse, filter, extract (a trigger request into *req,
 * or an event into *ev).  Sets *stage to the step running, for the error of a
 * dead letter.
 */
static PrepareOutcome
prepare_message(KafkaSubscription *sub, rd_kafka_message_t *m, MessageMeta *meta,
				TriggerRequest *req, EventRequest *ev, const char *volatile *stage)
{
	Jsonb	   *value = parse_value(sub, m, stage);
	Jsonb	   *payload;

	if (sub->filter != NULL)
	{
		bool		isnull;
		Datum		match;

		*stage = "options.filter";
		match = path_call(jsonb_path_match, value, sub->filter, meta->vars, &isnull);
		if (isnull || !DatumGetBool(match))
			return PREPARE_FILTERED;
	}
	*stage = "options.payload";
	payload = sub->payload ? extract(value, sub->payload, meta->vars) : value;

	if (sub->mode == KAFKA_MODE_EVENT)
	{
		*stage = "options.event_name";
		ev->args[0] = CStringGetTextDatum(extract_text(value, sub->event_name, meta->vars));
		*stage = "options.correlation_key";
		ev->args[1] = CStringGetTextDatum(extract_text(value, sub->correlation_key, meta->vars));
		ev->args[2] = JsonbPGetDatum(payload);
		return PREPARE_EVENT;
	}

	req->payload = payload;
	*stage = "options.recipient";
	req->recipient = sub->recipient ? extract(value, sub->recipient, meta->vars) : NULL;
	*stage = "options.idempotency_key";
	switch (sub->key_source)
	{
		case KAFKA_KEY_POSITION:
			req->idempotency_key = meta->reference;
			break;
		case KAFKA_KEY_PATH:
			req->idempotency_key = extract_text(value, sub->idempotency_key, meta->vars);
			break;
		case KAFKA_KEY_NONE:
			req->idempotency_key = NULL;
			break;
	}
	return PREPARE_READY;
}

/* Formats the error being handled as "stage: message: detail". */
static char *
error_text(const char *stage, ErrorData *edata)
{
	return edata->detail ? psprintf("%s: %s: %s", stage, edata->message, edata->detail)
		: psprintf("%s: %s", stage, edata->message);
}

/* Arguments and result of prepare_message run in a subtransaction. */
typedef struct PrepareCall
{
	KafkaSubscription *sub;
	rd_kafka_message_t *m;
	MessageMeta *meta;
	TriggerRequest *req;
	EventRequest *ev;
	const char *stage;			/* where it failed */
	PrepareOutcome outcome;
} PrepareCall;

/* Runs prepare_message for a PrepareCall. */
static void
prepare_call(void *arg)
{
	PrepareCall *call = arg;

	call->outcome = prepare_message(call->sub, call->m, call->meta, call->req, call->ev, &call->stage);
}

/* Prepares one message in a subtransaction; on error sets *error and rolls it back. */
static PrepareOutcome
prepare_one(KafkaSubscription *sub, rd_kafka_message_t *m, MessageMeta *meta, TriggerRequest *req,
			EventRequest *ev, char **error)
{
	PrepareCall call = {sub, m, meta, req, ev, "prepare", PREPARE_FAILED};
	ErrorData  *edata = run_in_subtransaction(prepare_call, &call);

	if (edata == NULL)
		return call.outcome;
	/* not the message's fault: the batch rolls back and is read again after a backoff */
	if (retry_later(edata))
		ReThrowError(edata);
	*error = error_text(call.stage, edata);
	return PREPARE_FAILED;
}

/* Arguments of engine_trigger run in a subtransaction. */
typedef struct TriggerCall
{
	const char *workflow_key;
	TriggerRequest *reqs;
	int			n;
} TriggerCall;

/* Runs engine_trigger for a TriggerCall. */
static void
trigger_call(void *arg)
{
	TriggerCall *call = arg;

	engine_trigger(call->workflow_key, call->reqs, call->n);
}

/* Starts the executions of n requests in a subtransaction; false with *error when it raises. */
static bool
trigger_guarded(const char *workflow_key, TriggerRequest *reqs, int n, char **error)
{
	TriggerCall call = {workflow_key, reqs, n};
	ErrorData  *edata = run_in_subtransaction(trigger_call, &call);

	if (edata == NULL)
		return true;
	if (retry_later(edata))
		ReThrowError(edata);
	*error = error_text("trigger", edata);
	return false;
}

/* Arguments of a batch of events emitted in a subtransaction. */
typedef struct EmitCall
{
	EventRequest *events;
	int			n;
	bool		batch;			/* emit_event_attempt for each, else emit_event for one */
} EmitCall;

/* Emits the events of an EmitCall. */
static void
emit_call(void *arg)
{
	EmitCall   *call = arg;

	if (!call->batch)
	{
		spi_run(&emit_event_stmt, call->events[0].args, NULL, false, 0, SPI_OK_SELECT);
		return;
	}
	/* the resumes the events complete raise too, rather than each opening a subtransaction */
	execution_resume_raises = true;
	PG_TRY();
	{
		for (int i = 0; i < call->n; i++)
			spi_run(&emit_attempt_stmt, call->events[i].args, NULL, false, 0, SPI_OK_SELECT);
	}
	PG_FINALLY();
	{
		execution_resume_raises = false;
	}
	PG_END_TRY();
	{
		Datum		expire_args[1] = {Int32GetDatum(call->n)};

		spi_run(&inbox_expire_stmt, expire_args, NULL, false, 0, SPI_OK_SELECT);
	}
}

/*
 * Emits n events in a subtransaction (all with emit_event_attempt when batch,
 * else the one with emit_event); false with *error when it raises.  A busy
 * execution (NF002) in a batch is not the events' fault: the caller emits
 * them one by one, each waiting as emit_event does.
 */
static bool
emit_guarded(EventRequest *events, int n, bool batch, char **error)
{
	EmitCall	call = {events, n, batch};
	ErrorData  *edata = run_in_subtransaction(emit_call, &call);

	if (edata == NULL)
		return true;

	/*
	 * In a batch the resumes raise everything (execution_resume_raises):
	 * only what is another transaction's doing or an operator's is raised
	 * for the whole batch; the rest (out of memory in one execution, say)
	 * is sorted out one event at a time, where emit_event fails such an
	 * execution alone.
	 */
	if (batch ? (error_is_lock_conflict(edata) || error_is_interrupt(edata) ||
				 ERRCODE_TO_CATEGORY(edata->sqlerrcode) == ERRCODE_TRANSACTION_ROLLBACK)
		: retry_later(edata))
		ReThrowError(edata);
	*error = error_text("emit_event", edata);
	return false;
}

/* Files a message as a dead letter. */
static void
dead_letter(rd_kafka_message_t *m, MessageMeta *meta, const char *error, KafkaCounters *counters)
{
	kafka_repo_dead_letter(meta->reference, m->payload, m->len, meta->details, error);
	counters->dead_letters++;
}

/* Processes a batch of messages in the current transaction; bad ones become dead letters. */
void
kafka_messages_process(KafkaSubscription *sub, rd_kafka_message_t **messages, int n,
					   KafkaCounters *counters, bool alone)
{
	TriggerRequest *reqs = palloc0(sizeof(TriggerRequest) * n);
	EventRequest *events = palloc0(sizeof(EventRequest) * n);
	MessageMeta *metas = palloc(sizeof(MessageMeta) * n);
	int		   *origin = palloc(sizeof(int) * n);
	int		   *event_origin = palloc(sizeof(int) * n);
	int			ready = 0;
	int			nevents = 0;
	char	   *error = NULL;

	messages_alone = alone;
	for (int i = 0; i < n; i++)
	{
		message_meta(sub, messages[i], &metas[i]);
		counters->messages++;
		switch (prepare_one(sub, messages[i], &metas[i], &reqs[ready], &events[nevents], &error))
		{
			case PREPARE_READY:
				origin[ready++] = i;
				break;
			case PREPARE_FILTERED:
				counters->filtered++;
				break;
			case PREPARE_EVENT:
				event_origin[nevents++] = i;
				break;
			case PREPARE_FAILED:
				dead_letter(messages[i], &metas[i], error, counters);
				break;
		}
	}
	if (nevents > 0)
	{
		/* all in one subtransaction first; when that raises, one by one, each in its own */
		if (emit_guarded(events, nevents, true, &error))
		{
			counters->events += nevents;
			return;
		}
		if (nevents > 1)
			counters->batches_split++;
		for (int j = 0; j < nevents; j++)
		{
			if (emit_guarded(&events[j], 1, false, &error))
				counters->events++;
			else
				dead_letter(messages[event_origin[j]], &metas[event_origin[j]], error, counters);
		}
		return;
	}
	if (ready == 0)
		return;
	/* all together first; when that raises, one by one so that only the bad ones fail */
	if (ready > 1 && trigger_guarded(sub->workflow_key, reqs, ready, &error))
	{
		counters->executions += ready;
		return;
	}
	if (ready > 1)
		counters->batches_split++;
	for (int j = 0; j < ready; j++)
	{
		if (trigger_guarded(sub->workflow_key, &reqs[j], 1, &error))
			counters->executions++;
		else
			dead_letter(messages[origin[j]], &metas[origin[j]], error, counters);
	}
}
