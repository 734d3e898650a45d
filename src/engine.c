/*
 * engine.c — the workflow engine.
 *
 * An execution runs a compiled workflow version (workflow_cache.c) for one
 * recipient.  Starting at the trigger node, the engine runs every node it can
 * reach now, in the caller's transaction, and keeps everything in memory
 * (a Run) until the end, when it writes the execution row, its steps and its
 * deliveries with one set-based statement each (execution_repo.c,
 * delivery_repo.c).  Nothing is written when a trigger is rejected.
 *
 * Nodes that cannot finish now leave their step "waiting": an action node
 * until every delivery it created ends (the delivery workers report that
 * through delivery_finish), a delay node until its time comes
 * (execution_resume_due).  execution_resume() locks the execution row (one
 * writer per decision), completes the waiting steps that are done, and runs on
 * from them.
 *
 * The context every jsonpath and template sees is
 *   {"payload", "recipient", "steps": {node id: output}, "vars", "execution"}
 * and is stored (less "execution") in executions.context between runs.
 */
#include "postgres.h"

#include "access/xact.h"
#include "executor/spi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/fmgrprotos.h"
#include "utils/hsearch.h"
#include "utils/json.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "delivery_repo.h"
#include "engine.h"
#include "execution_repo.h"
#include "jsonb_util.h"
#include "notiflow.h"
#include "provider_cache.h"
#include "safe_input.h"
#include "subscriber_repo.h"
#include "template.h"
#include "wait_repo.h"
#include "workflow_cache.h"
#include "workflow_repo.h"
#include "worker.h"

/* Requests of a fan-out run and written together (see engine_trigger). */
#define NOTIFLOW_TRIGGER_CHUNK 1000

/* Lookups shared by all executions started in one call. */
typedef struct EngineSession
{
	HTAB	   *subscribers;	/* id → SubscriberInfo, preloaded for fan-out; or NULL */
	HTAB	   *summaries;		/* execution id → ExecutionSummaries, preloaded for a resume; or NULL */
} EngineSession;

typedef struct SubscriberEntry
{
	char		id[257];		/* hash key */
	SubscriberInfo *info;
} SubscriberEntry;

/* The in-memory state of one execution while the engine runs it. */
typedef struct Run
{
	EngineSession *session;
	WorkflowDefinition *def;
	ExecutionRecord exec;
	TimestampTz created_at;

	/* working context */
	Jsonb	   *payload;
	Jsonb	   *recipient;
	Jsonb	   *steps;
	Jsonb	   *vars;
	Jsonb	   *context;		/* built on demand; NULL when stale */
	Jsonb	   *execution;		/* the context's "execution" object, built once */
	bool		payload_changed;	/* by a transform: stored in the context */
	bool		recipient_changed;

	Jsonb	   *preferences;
	List	   *invalid_addresses;
	bool		subscriber_pending; /* a resume reads them when an action node needs them */

	bool	   *visited;		/* node has a step */
	int			seq;
	List	   *queue;			/* node indexes to run */
	List	   *stored_steps;	/* StoredStep *: the steps of earlier runs */
	List	   *step_records;	/* StepRecord *: this run's */
	List	   *delivery_records;
	List	   *outcomes;		/* "<node>.<outcome>" of the actions this run ended */
	List	   *immediate_outcomes; /* those of them that ended without a delivery on its way */

	int			n_waiting;
	bool		fatal;
	bool		unhandled_failure;
	char	   *error;
	TimestampTz wake_at;

	/* where an error comes from, for its CONTEXT line (run_error_context) */
	const char *at_node;
	const char *at_field;
} Run;

static const char *const context_keys[] = {"payload", "recipient", "steps", "vars", "execution"};

static bool email_valid(const char *s);
static bool phone_valid(const char *s);

/*
 * Set while the due executions are resumed (execution_resume_due): a wait
 * node then does not wait for its correlation key when another transaction
 * holds it (a session's emit_event left open would stop a dispatcher, and the
 * transfers it has in flight); the execution is left for a later round.
 */
static bool resume_without_waiting = false;

bool		execution_resume_raises = false;
bool		engine_never_waits_for_keys = false;

/*
 * Marks the evaluation context stale (a step's output, a variable, the
 * payload or the recipient changed).  It holds a copy of the payload: a
 * fan-out keeps every run until its write, so each stale one is freed.
 */
static void
run_context_invalidate(Run *run)
{
	if (run->context != NULL)
		pfree(run->context);
	run->context = NULL;
}

/* Returns the evaluation context of a run, building it when stale. */
static Jsonb *
run_context(Run *run)
{
	if (run->context == NULL)
	{
		Jsonb	   *vals[5];

		if (run->execution == NULL)
		{
			const char *exec_keys[] = {"id", "workflow", "version"};
			Jsonb	   *exec_vals[3];

			exec_vals[0] = jsonb_make_int(run->exec.id);
			exec_vals[1] = jsonb_make_string(run->exec.workflow_key);
			exec_vals[2] = jsonb_make_int(run->exec.version);
			run->execution = jsonb_make_object(3, exec_keys, exec_vals);
		}
		vals[0] = run->payload;
		vals[1] = run->recipient;
		vals[2] = run->steps;
		vals[3] = run->vars;
		vals[4] = run->execution;
		run->context = jsonb_make_object(5, context_keys, vals);
	}
	return run->context;
}

/*
 * Returns the context stored in executions.context: vars, plus payload and
 * recipient only when a transform changed them (otherwise the executions row
 * holds them already).  The steps' outputs are in executions.steps.
 */
static Jsonb *
run_stored_context(Run *run)
{
	const char *keys[3];
	Jsonb	   *vals[3];
	int			n = 0;

	keys[n] = "vars";
	vals[n++] = run->vars;
	if (run->payload_changed)
	{
		keys[n] = "payload";
		vals[n++] = run->payload;
	}
	if (run->recipient_changed)
	{
		keys[n] = "recipient";
		vals[n++] = run->recipient;
	}
	return jsonb_make_object(n, keys, vals);
}

/* Records a step (new or updated) and makes its output visible to later nodes. */
static void
run_record_step(Run *run, WorkflowNode *node, const char *status, const char *outcome,
				Jsonb *output, const char *error, TimestampTz started, int seq)
{
	StepRecord *s = palloc0(sizeof(StepRecord));
	TimestampTz now = GetCurrentTimestamp();

	s->node_id = node->id;
	s->node_type = workflow_node_type_name(node->type);
	s->seq = seq > 0 ? seq : ++run->seq;
	s->status = status;
	s->outcome = outcome;
	s->output = output;
	s->error = error;
	s->started_at = started ? started : now;
	s->finished_at = strcmp(status, "waiting") == 0 ? 0 : now;
	run->step_records = lappend(run->step_records, s);
	run->visited[node->index] = true;
	if (output != NULL)
	{
		run->steps = jsonb_with_key(run->steps, node->id, output);
		run_context_invalidate(run);
	}
	if (strcmp(status, "waiting") == 0)
		run->n_waiting++;
}

/* True when node has an outgoing edge taken on this outcome. */
static bool
node_has_edge_on(Run *run, WorkflowNode *node, const char *outcome)
{
	for (int i = 0; i < node->n_out; i++)
	{
		const char *on = run->def->edges[node->out[i]].on;

		if (on != NULL && strcmp(on, outcome) == 0)
			return true;
	}
	return false;
}

/* Queues the targets of node's edges taken on outcome (and the unconditional ones). */
static void
run_follow(Run *run, WorkflowNode *node, const char *outcome)
{
	for (int i = 0; i < node->n_out; i++)
	{
		WorkflowEdge *e = &run->def->edges[node->out[i]];

		if (e->on == NULL || (outcome != NULL && strcmp(e->on, outcome) == 0))
			run->queue = lappend_int(run->queue, e->to);
	}
}

/* Ends the run with an error at node: the execution fails, nothing more runs. */
static void
run_fail(Run *run, WorkflowNode *node, const char *error)
{
	run_record_step(run, node, "failed", NULL, NULL, error, 0, 0);
	run->fatal = true;
	run->error = psprintf("node \"%s\": %s", node->id, error);
	run->queue = NIL;
}

/* Reads a nested value of payload by dotted path ("customer.email"). */
static bool
payload_has_path(Jsonb *payload, const char *path)
{
	char	   *copy = pstrdup(path);
	char	   *save = NULL;
	Jsonb	   *cur = payload;

	for (char *part = strtok_r(copy, ".", &save); part; part = strtok_r(NULL, ".", &save))
	{
		JsonbValue *v = jsonb_get(cur, part);

		if (v == NULL || v->type == jbvNull)
			return false;
		cur = JsonbValueToJsonb(v);
	}
	return true;
}

/* Runs the trigger node: rejects a payload that lacks a required field. */
static void
node_trigger(Run *run, WorkflowNode *node)
{
	ListCell   *lc;
	StringInfoData missing;

	initStringInfo(&missing);
	foreach(lc, node->required)
	{
		const char *field = lfirst(lc);

		if (!payload_has_path(run->payload, field))
			appendStringInfo(&missing, "%spayload.%s: required by workflow \"%s\"",
							 missing.len ? "; " : "", field, run->exec.workflow_key);
	}
	if (missing.len > 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("trigger payload is missing required fields"),
				 errdetail("%s", missing.data),
				 errhint("Add the fields to the payload, or remove them from the trigger node's \"required\" list.")));
	run_record_step(run, node, "completed", NULL, NULL, NULL, 0, 0);
	run_follow(run, node, NULL);
}

/* Runs a condition node: its jsonpath predicate chooses the "true" or "false" edges. */
static void
node_condition(Run *run, WorkflowNode *node)
{
	bool		isnull;
	bool		result = jsonpath_match(run_context(run), node->if_path, &isnull);
	const char *keys[] = {"result"};
	Jsonb	   *vals[1];

	result = result && !isnull;
	vals[0] = jsonb_make_bool(result);
	run_record_step(run, node, "completed", result ? "true" : "false",
					jsonb_make_object(1, keys, vals), NULL, 0, 0);
	run_follow(run, node, result ? "true" : "false");
}

/* Runs a switch node: the edge whose "on" equals the value, else "default". */
static void
node_switch(Run *run, WorkflowNode *node)
{
	Jsonb	   *value = jsonpath_first(run_context(run), node->value_path);
	char	   *text = value ? jsonb_scalar_text(value) : NULL;
	const char *outcome = (text && node_has_edge_on(run, node, text)) ? text : "default";
	const char *keys[] = {"value", "case"};
	Jsonb	   *vals[2];

	vals[0] = value;
	vals[1] = jsonb_make_string(outcome);
	run_record_step(run, node, "completed", outcome, jsonb_make_object(2, keys, vals), NULL, 0, 0);
	run_follow(run, node, outcome);
}

/* Completes a delay whose time has come, or leaves it waiting until then. */
static void
delay_settle(Run *run, WorkflowNode *node, TimestampTz until, TimestampTz started, int seq)
{
	const char *keys[] = {"until"};
	Jsonb	   *vals[1];

	vals[0] = jsonb_make_timestamptz(until);
	if (until <= GetCurrentTimestamp())
	{
		run_record_step(run, node, "completed", NULL, jsonb_make_object(1, keys, vals), NULL,
						started, seq);
		run_follow(run, node, NULL);
		return;
	}
	if (seq == 0)
		run_record_step(run, node, "waiting", NULL, jsonb_make_object(1, keys, vals), NULL, 0, 0);
	else
		run->n_waiting++;
	if (run->wake_at == 0 || until < run->wake_at)
		run->wake_at = until;
}

/* Runs a delay node: "for" an interval from now, or "until" a timestamp the jsonpath selects. */
static void
node_delay(Run *run, WorkflowNode *node)
{
	TimestampTz until;

	if (node->delay_for != NULL)
		until = DatumGetTimestampTz(DirectFunctionCall2(timestamptz_pl_interval,
														TimestampTzGetDatum(GetCurrentTimestamp()),
														IntervalPGetDatum(node->delay_for)));
	else
	{
		Jsonb	   *v = jsonpath_first(run_context(run), node->delay_until);
		char	   *error = NULL;
		Datum		d;

		if (v == NULL || !JB_ROOT_IS_SCALAR(v))
		{
			run_fail(run, node, "\"until\" selected no timestamp");
			return;
		}
		if (!safe_input(timestamptz_in, jsonb_scalar_text(v), &d, &error))
		{
			run_fail(run, node, psprintf("\"until\" is not a timestamp: %s", error));
			return;
		}
		until = DatumGetTimestampTz(d);
		if (TIMESTAMP_NOT_FINITE(until))
		{
			/* infinity would wait for ever; -infinity is simply past */
			if (TIMESTAMP_IS_NOBEGIN(until))
				until = GetCurrentTimestamp();
			else
			{
				run_fail(run, node, "\"until\" is infinity; expected a finite timestamp");
				return;
			}
		}
	}
	delay_settle(run, node, until, 0, 0);
}

/*
 * Runs a transform node: evaluates every assignment against the context as it
 * was before the node, then stores each at its target (as SQL's UPDATE ...
 * SET does).  They come in the order of the "set" object's keys, which jsonb
 * sorts (shorter first), not the order written: a value that read a target
 * of the same node saw it set or not by how the two keys sorted.
 */
static void
node_transform(Run *run, WorkflowNode *node)
{
	ListCell   *lc;
	Jsonb	   *output = jsonb_make_empty_object();
	Jsonb	  **values = palloc(sizeof(Jsonb *) * Max(list_length(node->assignments), 1));
	int			i = 0;

	foreach(lc, node->assignments)
	{
		TransformAssignment *a = lfirst(lc);
		Jsonb	   *value;

		if (a->path != NULL)
		{
			value = jsonpath_first(run_context(run), a->path);
			if (value == NULL)
				value = jsonb_make_null();
		}
		else if (a->tmpl != NULL)
		{
			run->at_field = a->target;
			value = jsonb_make_string(template_render_plain(a->tmpl, run_context(run),
															run->def->partials));
			run->at_field = NULL;
		}
		else
			value = a->literal;
		values[i++] = value;
	}
	i = 0;
	foreach(lc, node->assignments)
	{
		TransformAssignment *a = lfirst(lc);
		Jsonb	   *value = values[i++];
		const char *root = strVal(linitial(a->target_path));

		if (strcmp(root, "payload") == 0)
		{
			run->payload = jsonb_with_path(run->payload, a->target_path, 1, value);
			run->payload_changed = true;
		}
		else if (strcmp(root, "recipient") == 0)
		{
			run->recipient = jsonb_with_path(run->recipient, a->target_path, 1, value);
			run->recipient_changed = true;
		}
		else
			run->vars = jsonb_with_path(run->vars, a->target_path, 1, value);
		output = jsonb_with_key(output, a->target, value);
	}
	run_context_invalidate(run);
	run_record_step(run, node, "completed", NULL, output, NULL, 0, 0);
	run_follow(run, node, NULL);
}

/* True when the recipient's preferences opt out of channel for this workflow. */
static bool
opted_out(Run *run, const char *channel)
{
	Jsonb	   *channels = jsonb_get_jsonb(run->preferences, "channels");
	Jsonb	   *workflows = jsonb_get_jsonb(run->preferences, "workflows");
	JsonbValue *v;

	v = jsonb_get(channels, channel);
	if (v && v->type == jbvBool && !v->val.boolean)
		return true;
	v = jsonb_get(workflows, run->exec.workflow_key);
	if (v && v->type == jbvBool && !v->val.boolean)
		return true;
	if (v && v->type == jbvBinary)
	{
		Jsonb	   *per = JsonbValueToJsonb(v);

		v = jsonb_get(per, channel);
		if (v && v->type == jbvBool && !v->val.boolean)
			return true;
	}
	return false;
}

/* True when a provider reported address invalid for this subscriber. */
static bool
address_invalid(Run *run, const char *address)
{
	ListCell   *lc;

	foreach(lc, run->invalid_addresses)
		if (strcmp((char *) lfirst(lc), address) == 0)
			return true;
	return false;
}

/* Renders an action node's content: the channel's fields plus push data / webhook body. */
static Jsonb *
render_content(Run *run, WorkflowNode *node)
{
	Jsonb	   *ctx = run_context(run);
	Jsonb	   *content = jsonb_make_empty_object();
	ListCell   *lc;

	/* only HTML is HTML-escaped: escaping would corrupt subjects, texts and push titles */
	for (int i = 0; i < node->n_fields; i++)
	{
		ContentField *f = &node->fields[i];
		char	   *text;

		run->at_field = f->name;
		text = strcmp(f->name, "html") == 0
			? template_render(f->tmpl, ctx, run->def->partials)
			: template_render_plain(f->tmpl, ctx, run->def->partials);

		content = jsonb_with_key(content, f->name, jsonb_make_string(text));

		/*
		 * Slack reads "<...>" in chat text as markup (a value "<!channel>"
		 * would notify the channel): its adapter takes slack_text, where
		 * {{name}} values have "&", "<" and ">" escaped, when that differs.
		 */
		if (node->type == NODE_CHAT && strcmp(f->name, "text") == 0 && !template_is_constant(f->tmpl))
		{
			char	   *slack = template_render_slack(f->tmpl, ctx, run->def->partials);

			if (strcmp(slack, text) != 0)
				content = jsonb_with_key(content, "slack_text", jsonb_make_string(slack));
		}
	}
	if (node->object_fields != NIL)
	{
		Jsonb	   *obj = jsonb_make_empty_object();

		foreach(lc, node->object_fields)
		{
			ContentField *f = lfirst(lc);

			run->at_field = f->name;
			obj = jsonb_with_key(obj, f->name,
								 jsonb_make_string(template_render_plain(f->tmpl, ctx,
																		 run->def->partials)));
		}
		content = jsonb_with_key(content, node->type == NODE_PUSH ? "data" : "body", obj);
	}
	else if (node->type == NODE_WEBHOOK)
	{
		const char *keys[] = {"workflow", "execution_id", "node", "payload", "recipient"};
		Jsonb	   *vals[5];

		vals[0] = jsonb_make_string(run->exec.workflow_key);
		vals[1] = jsonb_make_int(run->exec.id);
		vals[2] = jsonb_make_string(node->id);
		vals[3] = run->payload;
		vals[4] = run->recipient;
		content = jsonb_with_key(content, "body", jsonb_make_object(5, keys, vals));
	}
	run->at_field = NULL;
	return content;
}

/* Adds a delivery to the run. */
static void
run_add_delivery(Run *run, WorkflowNode *node, const char *channel, ProviderRef *provider,
				 const char *address, Jsonb *content, int *queued)
{
	DeliveryRecord *d = palloc0(sizeof(DeliveryRecord));

	d->execution_id = run->exec.id;
	d->node_id = node->id;
	d->channel = channel;
	d->provider = provider ? provider->name : NULL;
	d->recipient = address;
	d->content = content;
	if (provider == NULL)
	{
		d->status = "failed";
		d->last_error = psprintf("no enabled %s provider", channel);
	}
	else
	{
		d->status = "queued";
		(*queued)++;
	}
	run->delivery_records = lappend(run->delivery_records, d);
}

/* Marks an action step finished with outcome, noting failures no edge handles. */
static void
action_finish(Run *run, WorkflowNode *node, const char *outcome, Jsonb *output,
			  const char *error, TimestampTz started, int seq)
{
	bool		failed = strcmp(outcome, "failed") == 0;

	run_record_step(run, node,
					failed ? "failed" : (strcmp(outcome, "skipped") == 0 ? "skipped" : "completed"),
					outcome, output, error, started, seq);
	run->outcomes = lappend(run->outcomes, psprintf("%s.%s", node->id, outcome));
	if (failed && !node_has_edge_on(run, node, "failed"))
	{
		run->unhandled_failure = true;
		if (run->error == NULL)
			run->error = psprintf("node \"%s\": delivery failed%s%s", node->id,
								  error ? ": " : "", error ? error : "");
	}
	run_follow(run, node, outcome);
}

/* Skips an action node with a reason. */
static void
action_skip(Run *run, WorkflowNode *node, const char *reason)
{
	const char *keys[] = {"reason"};
	Jsonb	   *vals[1] = {jsonb_make_string(reason)};

	action_finish(run, node, "skipped", jsonb_make_object(1, keys, vals), NULL, 0, 0);
	run->immediate_outcomes = lappend(run->immediate_outcomes, llast(run->outcomes));
}

/*
 * What an email or SMS address must be, when it is not: one email address, or
 * an E.164 phone number (a list would reach everyone in it); NULL when it is,
 * or for another channel.
 */
static const char *
address_unfit(NotiflowChannel channel, const char *address)
{
	if (channel == CHANNEL_EMAIL && !email_valid(address))
		return "one email address";
	if (channel == CHANNEL_SMS && !phone_valid(address))
		return "an E.164 phone number";
	return NULL;
}

/*
 * Runs an action node: checks preferences, renders the content, picks the
 * addresses and provider, and creates the deliveries.  The step waits for
 * them unless none could be queued.
 */
static void
node_action(Run *run, WorkflowNode *node)
{
	NotiflowChannel channel = workflow_node_channel(node->type);
	const char *chname = notiflow_channel_names[channel];
	List	   *providers;
	ProviderRef *provider;
	Jsonb	   *content;
	int			before = list_length(run->delivery_records);
	int			queued = 0;
	const char *expected;

	if (run->subscriber_pending)
	{
		SubscriberInfo info;

		run->subscriber_pending = false;
		if (subscriber_repo_load(run->exec.subscriber_id, &info))
		{
			run->preferences = info.preferences;
			run->invalid_addresses = info.invalid_addresses;
		}
	}
	if (opted_out(run, chname))
	{
		action_skip(run, node, psprintf("recipient opted out of %s", chname));
		return;
	}
	content = render_content(run, node);
	providers = provider_cache_channel(channel);
	provider = providers ? linitial(providers) : NULL;

	if (node->to != NULL)
	{
		char	   *address;

		/* a webhook's "url": values are percent-encoded ({{{raw}}} is not) */
		run->at_field = node->type == NODE_WEBHOOK ? "url" : "to";
		address = node->type == NODE_WEBHOOK
			? template_render_url(node->to, run_context(run), run->def->partials)
			: template_render_plain(node->to, run_context(run), run->def->partials);
		run->at_field = NULL;

		if (address[0] == '\0')
		{
			action_skip(run, node, "\"to\" rendered an empty address");
			return;
		}
		/* one address, as an inline contact's: a list would reach everyone in it */
		if ((expected = address_unfit(channel, address)) != NULL)
		{
			action_skip(run, node, psprintf("\"to\" rendered \"%s\", which is not %s", address, expected));
			return;
		}
		if (!address_invalid(run, address))
			run_add_delivery(run, node, chname, provider, address, content, &queued);
	}
	else if (channel == CHANNEL_EMAIL || channel == CHANNEL_SMS)
	{
		char	   *address = jsonb_get_string(run->recipient,
											   channel == CHANNEL_EMAIL ? "email" : "phone");

		/*
		 * Checked here too: subscribers and inline contacts are checked when
		 * given, but a transform node can set recipient.email or .phone.
		 */
		if (address != NULL && (expected = address_unfit(channel, address)) != NULL)
		{
			action_skip(run, node, psprintf("the recipient's %s \"%s\" is not %s",
											channel == CHANNEL_EMAIL ? "email" : "phone", address, expected));
			return;
		}
		if (address != NULL && !address_invalid(run, address))
			run_add_delivery(run, node, chname, provider, address, content, &queued);
	}
	else if (channel == CHANNEL_CHAT || channel == CHANNEL_WEBHOOK)
	{
		/* no address: the provider's configured destination */
		char	   *address = NULL;

		if (channel == CHANNEL_CHAT && provider != NULL)
			address = jsonb_get_string(jsonb_get_jsonb(run->recipient, "chat"), provider->kind);
		/* one the provider said is gone: skipped, not sent to the provider's own channel instead */
		if (address == NULL || !address_invalid(run, address))
			run_add_delivery(run, node, chname, provider, address, content, &queued);
	}
	else
	{
		/* push: every device of every kind that has an enabled provider */
		Jsonb	   *push = jsonb_get_jsonb(run->recipient, "push");
		List	   *kinds_done = NIL;
		ListCell   *lc;

		foreach(lc, providers)
		{
			ProviderRef *p = lfirst(lc);
			Jsonb	   *devices = jsonb_get_jsonb(push, p->kind);
			JsonbIterator *it;
			JsonbValue	v;
			JsonbIteratorToken tok;

			if (devices == NULL || !JB_ROOT_IS_ARRAY(devices) || list_member(kinds_done, makeString(p->kind)))
				continue;
			kinds_done = lappend(kinds_done, makeString(p->kind));
			it = JsonbIteratorInit(&devices->root);
			while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
			{
				char	   *address;

				if (tok != WJB_ELEM)
					continue;
				if (v.type == jbvString)
					address = pnstrdup(v.val.string.val, v.val.string.len);
				else
					address = jsonb_scalar_text(JsonbValueToJsonb(&v));
				if (!address_invalid(run, address))
					run_add_delivery(run, node, chname, p, address, content, &queued);
			}
		}
	}

	if (list_length(run->delivery_records) == before)
	{
		static const char *const what[] = {"email address", "phone number", "push device",
		"chat address", "webhook URL"};

		action_skip(run, node, psprintf("recipient has no valid %s", what[channel]));
		return;
	}
	if (queued == 0)
	{
		const char *keys[] = {"status", "error"};
		DeliveryRecord *d = llast(run->delivery_records);
		Jsonb	   *vals[2] = {jsonb_make_string("failed"), jsonb_make_string(d->last_error)};

		action_finish(run, node, "failed", jsonb_make_object(2, keys, vals), d->last_error, 0, 0);
		run->immediate_outcomes = lappend(run->immediate_outcomes, llast(run->outcomes));
		return;
	}
	{
		/* "total" when some failed at once: a resume may then not know the summary (resume_many) */
		const char *keys[] = {"pending", "total"};
		Jsonb	   *vals[2];
		int			total = list_length(run->delivery_records) - before;

		vals[0] = jsonb_make_int(queued);
		vals[1] = jsonb_make_int(total);
		run_record_step(run, node, "waiting", NULL,
						jsonb_make_object(total == queued ? 1 : 2, keys, vals), NULL, 0, 0);
	}
}

/* Finds a preloaded summary of an action node's deliveries (resume_many). */
static bool
session_summary(Run *run, const char *node_id, DeliverySummary *out)
{
	ExecutionSummaries *e;
	ListCell   *lc;

	if (run->session->summaries == NULL)
		return false;
	e = hash_search(run->session->summaries, &run->exec.id, HASH_FIND, NULL);
	if (e == NULL)
		return false;
	foreach(lc, e->nodes)
	{
		NodeSummary *ns = lfirst(lc);

		if (strcmp(ns->node_id, node_id) == 0)
		{
			*out = ns->summary;
			return true;
		}
	}
	return false;
}

/* Completes a waiting action node whose deliveries have all ended. */
static void
action_settle(Run *run, WorkflowNode *node, TimestampTz started, int seq)
{
	DeliverySummary sum;
	const char *keys[] = {"status", "deliveries"};
	Jsonb	   *vals[2];
	const char *outcome;

	if (!session_summary(run, node->id, &sum))
		delivery_repo_summary(run->exec.id, node->id, &sum);
	if (sum.pending > 0)
	{
		run->n_waiting++;
		return;
	}
	outcome = sum.succeeded > 0 ? "sent" : "failed";
	vals[0] = jsonb_make_string(outcome);
	vals[1] = sum.deliveries;
	action_finish(run, node, outcome, jsonb_make_object(2, keys, vals),
				  sum.succeeded > 0 ? NULL : "every delivery failed", started, seq);
}

/* Ends a wait node with outcome completed or timeout; its output holds the events received. */
static void
wait_finish(Run *run, WorkflowNode *node, const char *outcome, Jsonb *received,
			TimestampTz started, int seq)
{
	const char *keys[] = {"events"};
	Jsonb	   *vals[1] = {received};

	run_record_step(run, node, "completed", outcome, jsonb_make_object(1, keys, vals), NULL,
					started, seq);
	run_follow(run, node, outcome);
}

/* True when received holds every event the wait node expects. */
static bool
wait_complete(WorkflowNode *node, Jsonb *received)
{
	ListCell   *lc;

	foreach(lc, node->wait_events)
		if (jsonb_get(received, (char *) lfirst(lc)) == NULL)
			return false;
	return true;
}

/* True when the execution ended action node's outcome event (in this run or an earlier one). */
static bool
run_had_outcome(Run *run, const char *event)
{
	ListCell   *lc;

	foreach(lc, run->outcomes)
		if (strcmp(lfirst(lc), event) == 0)
			return true;
	foreach(lc, run->stored_steps)
	{
		StoredStep *s = lfirst(lc);
		WorkflowNode *node = workflow_definition_node(run->def, s->node_id);
		char	   *outcome;
		size_t		len = strlen(s->node_id);

		if (node == NULL || !NODE_IS_ACTION(node->type) || strcmp(s->status, "waiting") == 0 ||
			strncmp(event, s->node_id, len) != 0 || event[len] != '.')
			continue;
		outcome = execution_repo_step_outcome(s);
		if (outcome != NULL && strcmp(event + len + 1, outcome) == 0)
			return true;
	}
	return false;
}

/*
 * Adds to the events a wait received the outcome events ("<node>.<status>")
 * of its execution's own actions that ended before the wait was reached:
 * those went to the waits open then, not to this one.  Their data is the
 * status alone.
 */
static Jsonb *
own_outcomes(Run *run, WorkflowNode *node, Jsonb *received)
{
	int			n = list_length(node->wait_events);
	const char **keys = palloc(sizeof(char *) * Max(n, 1));
	Jsonb	  **vals = palloc(sizeof(Jsonb *) * Max(n, 1));
	int			k = 0;
	ListCell   *lc;

	foreach(lc, node->wait_events)
	{
		const char *event = lfirst(lc);
		const char *dot = strrchr(event, '.');
		const char *status_key[] = {"status"};
		Jsonb	   *status_val[1];

		if (dot == NULL || (received != NULL && jsonb_get(received, event) != NULL) ||
			!run_had_outcome(run, event))
			continue;
		status_val[0] = jsonb_make_string(dot + 1);
		keys[k] = event;
		vals[k++] = jsonb_make_object(1, status_key, status_val);
	}
	if (k == 0)
		return received;
	if (received == NULL)
		return jsonb_make_object(k, keys, vals);
	return DatumGetJsonbP(DirectFunctionCall2(jsonb_concat, JsonbPGetDatum(received),
											  JsonbPGetDatum(jsonb_make_object(k, keys, vals))));
}

/*
 * Runs a wait node: under the correlation key's lock, takes the events of the
 * key from the inbox (those emitted within notiflow.event_ttl that no wait
 * this one is reached from took); completes at once when they are all there,
 * otherwise records the wait (emit_event completes it, the timer times it out).
 */
static void
node_wait(Run *run, WorkflowNode *node)
{
	char	   *key;
	Jsonb	   *received;
	Datum		inbox_ids;
	TimestampTz deadline = 0;
	bool		complete;

	run->at_field = "key";
	key = template_render_plain(node->wait_key, run_context(run), run->def->partials);
	run->at_field = NULL;

	if (key[0] == '\0')
	{
		run_fail(run, node, "\"key\" rendered an empty correlation key");
		return;
	}
	if (!resume_without_waiting && !engine_never_waits_for_keys)
		wait_repo_lock_key(key);
	else if (!wait_repo_try_lock_key(key))
		ereport(ERROR,
				(errcode(ERRCODE_LOCK_NOT_AVAILABLE),
				 errmsg("correlation key \"%s\" is held by another transaction", key),
				 errdetail("Execution %lld is left for a later round.", (long long) run->exec.id)));
	received = own_outcomes(run, node, wait_repo_take_inbox(key, node->wait_events, run->exec.id,
																 node->wait_before, &inbox_ids));
	complete = wait_complete(node, received);
	if (node->wait_timeout != NULL)
		deadline = DatumGetTimestampTz(DirectFunctionCall2(timestamptz_pl_interval,
														   TimestampTzGetDatum(GetCurrentTimestamp()),
														   IntervalPGetDatum(node->wait_timeout)));
	wait_repo_insert(run->exec.id, node->id, key, node->wait_events, received,
					 complete ? "completed" : "waiting", deadline, inbox_ids);
	if (complete)
	{
		wait_finish(run, node, "completed", received, 0, 0);
		return;
	}
	{
		const char *keys[] = {"key", "events"};
		Jsonb	   *vals[2] = {jsonb_make_string(key), received};

		run_record_step(run, node, "waiting", NULL, jsonb_make_object(2, keys, vals), NULL, 0, 0);
	}
	if (deadline != 0 && (run->wake_at == 0 || deadline < run->wake_at))
		run->wake_at = deadline;
}

/* Completes a waiting wait node whose events all arrived or whose timeout passed. */
static void
wait_settle(Run *run, WorkflowNode *node, int seq)
{
	Jsonb	   *received = NULL;
	TimestampTz deadline = 0;
	char	   *status = wait_repo_settle(run->exec.id, node->id, &received, &deadline);

	if (status != NULL && strcmp(status, "completed") == 0)
		wait_finish(run, node, "completed", received, 0, seq);
	else if (status != NULL && strcmp(status, "timeout") == 0)
		wait_finish(run, node, "timeout", received, 0, seq);
	else
	{
		run->n_waiting++;
		if (deadline != 0 && (run->wake_at == 0 || deadline < run->wake_at))
			run->wake_at = deadline;
	}
}

/*
 * Names the node (and the field being rendered) an error came from: a render
 * that expands too many partials, say, aborts the whole trigger, and its
 * message alone would not say which of the workflow's templates did it.
 */
static void
run_error_context(void *arg)
{
	Run		   *run = arg;

	if (run->at_node == NULL)
		return;
	if (run->at_field != NULL)
		errcontext("field \"%s\" of node \"%s\" of workflow \"%s\"",
				   run->at_field, run->at_node, run->exec.workflow_key);
	else
		errcontext("node \"%s\" of workflow \"%s\"", run->at_node, run->exec.workflow_key);
}

/* Runs queued nodes until none is left (each node runs at most once). */
static void
run_process(Run *run)
{
	ErrorContextCallback errcallback;

	errcallback.callback = run_error_context;
	errcallback.arg = run;
	errcallback.previous = error_context_stack;
	error_context_stack = &errcallback;
	while (run->queue != NIL && !run->fatal)
	{
		int			index = linitial_int(run->queue);
		WorkflowNode *node = &run->def->nodes[index];

		run->queue = list_delete_first(run->queue);
		if (run->visited[index])
			continue;
		CHECK_FOR_INTERRUPTS();
		run->at_node = node->id;
		run->at_field = NULL;
		switch (node->type)
		{
			case NODE_TRIGGER:
				node_trigger(run, node);
				break;
			case NODE_CONDITION:
				node_condition(run, node);
				break;
			case NODE_SWITCH:
				node_switch(run, node);
				break;
			case NODE_DELAY:
				node_delay(run, node);
				break;
			case NODE_TRANSFORM:
				node_transform(run, node);
				break;
			case NODE_WAIT:
				node_wait(run, node);
				break;
			case NODE_EMAIL:
			case NODE_SMS:
			case NODE_PUSH:
			case NODE_CHAT:
			case NODE_WEBHOOK:
				node_action(run, node);
				break;
			default:
				elog(ERROR, "notiflow: node type %s cannot run", workflow_node_type_name(node->type));
		}
	}
	run->at_node = NULL;
	error_context_stack = errcallback.previous;
}

/* Sets the execution's status from the run's outcome. */
static void
run_conclude(Run *run)
{
	/*
	 * An action that ended without a delivery on its way (failed at once,
	 * skipped) has no delivery to report its outcome later: the waits this
	 * execution opened before it (a wait queued first, or reached in an
	 * earlier run) get the event now.  One it completes is settled by a
	 * resume that is due at once.  (A wait reached after the action takes
	 * the outcome itself: own_outcomes.)
	 */
	if (run->immediate_outcomes != NIL && run->n_waiting > 0 && !run->fatal)
	{
		ListCell   *lc;
		bool		completed = false;

		foreach(lc, run->immediate_outcomes)
		{
			const char *event = lfirst(lc);
			const char *status_key[] = {"status"};
			Jsonb	   *status_val[1] = {jsonb_make_string(strrchr(event, '.') + 1)};

			completed |= wait_repo_execution_event(run->exec.id, event,
												   jsonb_make_object(1, status_key, status_val));
		}
		if (completed)
		{
			run->wake_at = GetCurrentTransactionStartTimestamp();
			notiflow_wake_dispatchers_at_commit();
		}
	}
	if (run->fatal)
		run->exec.status = "failed";
	else if (run->n_waiting > 0)
		run->exec.status = "waiting";
	else if (run->unhandled_failure)
		run->exec.status = "failed";
	else
		run->exec.status = "completed";
	run->exec.error = run->error;
	run->exec.wake_at = run->n_waiting > 0 ? run->wake_at : 0;
	run->exec.context = run_stored_context(run);
	run->exec.steps = execution_repo_steps(run->stored_steps, run->step_records, run->created_at);
}

/* Creates an empty run of def. */
static Run *
run_create(EngineSession *session, WorkflowDefinition *def)
{
	Run		   *run = palloc0(sizeof(Run));

	run->session = session;
	run->def = def;
	run->visited = palloc0(sizeof(bool) * def->n_nodes);
	run->created_at = GetCurrentTransactionStartTimestamp();	/* executions.created_at */
	run->steps = jsonb_make_empty_object();
	run->vars = jsonb_make_empty_object();
	run->exec.workflow_key = def->workflow_key;
	run->exec.version = def->version;
	return run;
}

/*
 * A character an email address may not hold: a control, a space (Unicode's
 * too), a list separator, a bracket, a quote.  The same list as
 * notiflow.email_address_valid's (20_subscribers.sql).
 */
static bool
email_char_refused(pg_wchar c)
{
	return c <= 0x20 || (c >= 0x7f && c <= 0xa0) || c == 0x1680 || (c >= 0x2000 && c <= 0x200b) ||
		c == 0x2028 || c == 0x2029 || c == 0x202f || c == 0x205f || c == 0x3000 || c == 0xfeff ||
		(c < 0x80 && strchr(",;<>\"()\\", (int) c) != NULL);
}

/*
 * Checks an inline or rendered email address: one address (separators,
 * brackets and quotes would make more of it, as Mailgun's "to" reads it).
 * The database is UTF-8 (CREATE EXTENSION requires it).
 */
static bool
email_valid(const char *s)
{
	const char *at = strchr(s, '@');

	if (at == NULL || at == s || strchr(at + 1, '@') != NULL || strchr(at, '.') == NULL ||
		strlen(s) > 254 || at[1] == '\0' || at[1] == '.' || s[strlen(s) - 1] == '.' ||
		s[0] == '.' || at[-1] == '.' || strstr(s, "..") != NULL)
		return false;
	for (const unsigned char *p = (const unsigned char *) s; *p; p += pg_utf_mblen(p))
		if (email_char_refused(utf8_to_unicode(p)))
			return false;
	return true;
}

/* Checks an inline E.164 phone number. */
static bool
phone_valid(const char *s)
{
	int			n = 0;

	if (s[0] != '+' || s[1] < '1' || s[1] > '9')
		return false;
	for (const char *p = s + 1; *p; p++, n++)
		if (*p < '0' || *p > '9')
			return false;
	return n >= 7 && n <= 15;
}

/* Raises the error for an invalid recipient. */
static void
recipient_error(const char *detail)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("invalid recipient"),
			 errdetail("%s", detail),
			 errhint("Pass {\"subscriber_id\": \"...\"} or an inline contact such as {\"email\": \"...\", \"name\": \"...\"}.")));
}

/*
 * Resolves the recipient spec (a subscriber id string, {"subscriber_id"},
 * or an inline contact, optionally overriding a subscriber's fields) into the
 * run's recipient, preferences and invalid addresses.
 */
static void
run_resolve_recipient(Run *run, Jsonb *spec, const char *where)
{
	static const char *const allowed[] = {"subscriber_id", "name", "email", "phone", "locale",
	"timezone", "data", "push", "chat"};
	char	   *subscriber_id = NULL;
	Jsonb	   *inline_fields = jsonb_make_empty_object();
	JsonbIterator *it;
	JsonbValue	k,
				v;
	JsonbIteratorToken tok;

	run->preferences = NULL;
	run->invalid_addresses = NIL;
	if (spec == NULL || (JB_ROOT_IS_SCALAR(spec) && JsonbExtractScalar(&spec->root, &v) && v.type == jbvNull))
	{
		run->recipient = NULL;
		return;
	}
	if (JB_ROOT_IS_SCALAR(spec) && JsonbExtractScalar(&spec->root, &v) && v.type == jbvString)
		subscriber_id = pnstrdup(v.val.string.val, v.val.string.len);
	else if (!JB_ROOT_IS_OBJECT(spec))
		recipient_error(psprintf("%s: expected an object or a subscriber id string", where));
	else
	{
		it = JsonbIteratorInit(&spec->root);
		while ((tok = JsonbIteratorNext(&it, &k, true)) != WJB_DONE)
		{
			char	   *key;
			bool		known = false;

			if (tok != WJB_KEY)
				continue;
			key = pnstrdup(k.val.string.val, k.val.string.len);
			JsonbIteratorNext(&it, &v, true);
			for (int i = 0; i < (int) lengthof(allowed); i++)
				known |= strcmp(allowed[i], key) == 0;
			if (!known)
				recipient_error(psprintf("%s.%s: unknown field; expected subscriber_id, name, email, phone, locale, timezone, data, push or chat",
										 where, key));
			if (v.type == jbvNull)
				continue;
			if (strcmp(key, "data") == 0 || strcmp(key, "push") == 0 || strcmp(key, "chat") == 0)
			{
				if (v.type != jbvBinary || !JsonContainerIsObject(v.val.binary.data))
					recipient_error(psprintf("%s.%s: expected an object", where, key));
			}
			else
			{
				char	   *s;

				if (v.type != jbvString)
					recipient_error(psprintf("%s.%s: expected a string", where, key));
				s = pnstrdup(v.val.string.val, v.val.string.len);
				if (strcmp(key, "email") == 0 && !email_valid(s))
					recipient_error(psprintf("%s.email: \"%s\" is not an email address", where, s));
				if (strcmp(key, "phone") == 0 && !phone_valid(s))
					recipient_error(psprintf("%s.phone: \"%s\" is not an E.164 number like +15551234567", where, s));
				if (strcmp(key, "subscriber_id") == 0)
				{
					subscriber_id = s;
					continue;
				}
			}
			inline_fields = jsonb_with_key(inline_fields, key, JsonbValueToJsonb(&v));
		}
	}

	if (subscriber_id != NULL)
	{
		SubscriberInfo info;
		bool		found;

		if (run->session->subscribers != NULL && strlen(subscriber_id) < 257)
		{
			SubscriberEntry *e = hash_search(run->session->subscribers, subscriber_id, HASH_FIND, NULL);

			found = e != NULL;
			if (found)
				info = *e->info;
			else				/* not preloaded: the trigger node's recipient path named it */
				found = subscriber_repo_load(subscriber_id, &info);
		}
		else
			found = subscriber_repo_load(subscriber_id, &info);
		if (!found)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("unknown subscriber \"%s\"", subscriber_id),
					 errdetail("%s.subscriber_id: no subscriber has this id", where),
					 errhint("Create it first with notiflow.put_subscriber(), or pass an inline contact.")));
		run->exec.subscriber_id = subscriber_id;
		run->preferences = info.preferences;
		run->invalid_addresses = info.invalid_addresses;
		run->recipient = DatumGetJsonbP(DirectFunctionCall2(jsonb_concat,
															JsonbPGetDatum(info.recipient),
															JsonbPGetDatum(inline_fields)));
	}
	else
		run->recipient = inline_fields;
}

static void check_size(Jsonb *doc, const char *what, const char *where);

/* Checks a trigger payload: an object within notiflow.max_payload_size. */
static void
check_payload(Jsonb *payload, const char *where)
{
	if (!JB_ROOT_IS_OBJECT(payload))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("trigger payload must be a JSON object"),
				 errdetail("%s: got a JSON %s", where,
						   JB_ROOT_IS_SCALAR(payload) ? "scalar" : "array")));
	check_size(payload, "trigger payload", where);
}

/*
 * Refuses a document larger than notiflow.max_payload_size: the payload, and
 * an inline recipient (whose data, push and chat objects are stored with the
 * execution just as the payload is).
 */
static void
check_size(Jsonb *doc, const char *what, const char *where)
{
	Size		size = VARSIZE_ANY_EXHDR(doc);
	Size		limit = (Size) notiflow_max_payload_size_kb * 1024;

	if (size > limit)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("%s is too large", what),
				 errdetail("%s: %zu bytes, the limit is %zu bytes", where, size, limit),
				 errhint("Raise notiflow.max_payload_size, or send a reference instead of the data.")));
}

/*
 * Writes the rows of finished runs (executions whose key is taken are
 * skipped).  keys_claimed: every idempotency key among them was locked and
 * looked up in this transaction, and none is there twice.
 */
static void
runs_write_new(List *runs, bool keys_claimed)
{
	List	   *execs = NIL;
	List	   *deliveries = NIL;
	ListCell   *lc;

	foreach(lc, runs)
	{
		Run		   *run = lfirst(lc);

		execs = lappend(execs, &run->exec);
		deliveries = list_concat(deliveries, run->delivery_records);
	}
	if (execs != NIL)
		execution_repo_insert(execs, deliveries, keys_claimed);
}

/* A batch locks and looks up this key with the others (shorter keys only; NULL: none). */
static bool
key_fits_batch(const char *key)
{
	return key != NULL && strlen(key) < NOTIFLOW_IDEMPOTENCY_KEY_LEN;
}

/*
 * Writes the runs of a fan-out's requests first..last, then gives each of
 * those requests whose execution lost an idempotency race (another
 * transaction's took its key) the execution that won, and records it for
 * the batch's later requests with that key (claimed, or NULL).
 */
static void
trigger_write_chunk(const char *workflow_key, TriggerRequest *requests, int first, int last,
					List *runs, bool keys_claimed, HTAB *claimed)
{
	List	   *lost = NIL;
	ListCell   *lc;

	runs_write_new(runs, keys_claimed);
	foreach(lc, runs)
	{
		Run		   *run = lfirst(lc);

		if (!run->exec.inserted)
			lost = lappend(lost, run);
	}
	if (lost == NIL)
		return;
	for (int i = first; i <= last; i++)
	{
		TriggerRequest *req = &requests[i];

		foreach(lc, lost)
		{
			if (((Run *) lfirst(lc))->exec.id != req->execution_id)
				continue;
			req->execution_id = execution_repo_find_idempotent(workflow_key, req->idempotency_key);
			if (claimed != NULL && key_fits_batch(req->idempotency_key))
			{
				IdempotentExecution *entry = hash_search(claimed, req->idempotency_key, HASH_FIND, NULL);

				if (entry != NULL)
					entry->execution_id = req->execution_id;
			}
			break;
		}
	}
}

/* Loads, with one query, the subscribers a fan-out names by id. */
static void
session_preload_subscribers(EngineSession *session, TriggerRequest *requests, int n)
{
	List	   *ids = NIL;
	List	   *infos;
	ListCell   *lc;
	HASHCTL		ctl;

	for (int i = 0; i < n; i++)
	{
		Jsonb	   *r = requests[i].recipient;
		JsonbValue	v;
		char	   *id = NULL;

		if (r == NULL)
			continue;
		if (JB_ROOT_IS_SCALAR(r) && JsonbExtractScalar(&r->root, &v) && v.type == jbvString)
			id = pnstrdup(v.val.string.val, v.val.string.len);
		else if (JB_ROOT_IS_OBJECT(r))
			id = jsonb_get_string(r, "subscriber_id");
		if (id != NULL && strlen(id) < 257)
			ids = lappend(ids, id);
	}
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = 257;
	ctl.entrysize = sizeof(SubscriberEntry);
	ctl.hcxt = CurrentMemoryContext;
	session->subscribers = hash_create("notiflow fan-out subscribers", Max(list_length(ids), 16), &ctl,
									   HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	if (ids == NIL)
		return;
	infos = subscriber_repo_load_many(ids);
	foreach(lc, infos)
	{
		SubscriberInfo *info = lfirst(lc);
		SubscriberEntry *e = hash_search(session->subscribers, info->id, HASH_ENTER, NULL);

		e->info = info;
	}
}

void
engine_trigger(const char *workflow_key, TriggerRequest *requests, int n)
{
	WorkflowRef ref;
	WorkflowDefinition *def;
	EngineSession session;
	List	   *runs = NIL;
	HTAB	   *claimed = NULL;
	bool		keys_claimed = true;
	bool		chunked = n > NOTIFLOW_TRIGGER_CHUNK;
	bool		chunk_open = false;
	int			chunk_first = 0;

	for (int i = 0; i < n; i++)
	{
		check_payload(requests[i].payload, n == 1 ? "payload" : psprintf("payload (recipient %d)", i + 1));
		if (requests[i].recipient != NULL)
			check_size(requests[i].recipient, "trigger recipient",
					   n == 1 ? "recipient" : psprintf("recipient %d", i + 1));
	}

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "notiflow: SPI_connect failed");

	if (!workflow_cache_current(workflow_key, &ref))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("unknown workflow \"%s\"", workflow_key),
				 errdetail("workflow_key: no workflow has this key"),
				 errhint("Create it with notiflow.put_workflow().")));
	def = workflow_cache_get(ref.version_id, workflow_key, ref.version);
	memset(&session, 0, sizeof(session));
	if (n > 1)
	{
		List	   *keys = NIL;

		session_preload_subscribers(&session, requests, n);
		for (int i = 0; i < n; i++)
			if (key_fits_batch(requests[i].idempotency_key))
				keys = lappend(keys, requests[i].idempotency_key);
		/* a batch (fan-out, a Kafka poll) locks and looks up its keys with one statement each */
		if (keys != NIL)
			claimed = execution_repo_claim_idempotent(workflow_key, keys);
	}

	/*
	 * A large fan-out runs and writes its requests in chunks, each chunk in
	 * an SPI connection of its own (SPI's procedure memory, where the runs
	 * are allocated and where SPI returns after each statement, and its
	 * result tables go with it at SPI_finish): what it holds at once is one
	 * chunk's renders, not every recipient's.  The claimed keys, the session
	 * and the requests stay in the outer connection's memory.
	 */
	for (int i = 0; i < n; i++)
	{
		TriggerRequest *req = &requests[i];
		Run		   *run;
		WorkflowNode *trigger = &def->nodes[def->trigger_index];

		/* the batch claimed this key (and records the execution that takes it) */
		bool		in_batch = claimed != NULL && key_fits_batch(req->idempotency_key);

		/* by requests, not runs: a request that finds its execution still leaves lookups behind */
		if (i - chunk_first >= NOTIFLOW_TRIGGER_CHUNK)
		{
			trigger_write_chunk(workflow_key, requests, chunk_first, i - 1, runs, keys_claimed, claimed);
			runs = NIL;
			chunk_first = i;
			if (chunk_open)
				SPI_finish();
			chunk_open = false;
		}
		if (chunked && !chunk_open)
		{
			if (SPI_connect() != SPI_OK_CONNECT)
				elog(ERROR, "notiflow: SPI_connect failed");
			chunk_open = true;
		}
		req->execution_id = 0;
		if (in_batch)
		{
			IdempotentExecution *found = hash_search(claimed, req->idempotency_key, HASH_FIND, NULL);

			if (found != NULL)
				req->execution_id = found->execution_id;
		}
		else if (req->idempotency_key != NULL)
		{
			/* serialise triggers with one key: the second waits, then finds the first */
			execution_repo_lock_idempotency(workflow_key, req->idempotency_key);
			req->execution_id = execution_repo_find_idempotent(workflow_key, req->idempotency_key);
		}
		if (req->execution_id != 0)
			continue;

		/*
		 * Only a new execution needs an active workflow: a retry with the key
		 * of one started before the deactivation still gets its id.
		 */
		if (!ref.active)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("workflow \"%s\" is not active", workflow_key),
					 errdetail("workflow_key: the workflow is deactivated and accepts no triggers"),
					 errhint("Activate it with notiflow.activate_workflow().")));
		/* a key looked up alone in a batch: an earlier twin in the batch is not found */
		if (n > 1 && req->idempotency_key != NULL && !in_batch)
			keys_claimed = false;
		run = run_create(&session, def);
		run->payload = req->payload;
		run->exec.payload = req->payload;
		run->exec.idempotency_key = req->idempotency_key;
		if (req->recipient == NULL && trigger->recipient_path != NULL)
		{
			const char *keys[] = {"payload"};
			Jsonb	   *found = jsonpath_first(jsonb_make_object(1, keys, &req->payload),
											   trigger->recipient_path);

			if (found == NULL)
				recipient_error("payload: the trigger node's \"recipient\" jsonpath selected nothing");
			run_resolve_recipient(run, found, "recipient (from the payload)");
		}
		else
			run_resolve_recipient(run, req->recipient, n == 1 ? "recipient" : psprintf("recipients[%d]", i));
		run->exec.recipient = run->recipient;
		run->exec.id = execution_repo_next_id();
		req->execution_id = run->exec.id;
		run->queue = list_make1_int(def->trigger_index);
		run_process(run);
		run_conclude(run);
		run_context_invalidate(run);	/* the write needs the records, not the context */
		runs = lappend(runs, run);
		/* a later message of the batch with the same key gets this execution */
		if (in_batch)
		{
			IdempotentExecution *entry = hash_search(claimed, req->idempotency_key, HASH_ENTER, NULL);

			entry->execution_id = run->exec.id;
		}
	}
	trigger_write_chunk(workflow_key, requests, chunk_first, n - 1, runs, keys_claimed, claimed);
	if (chunk_open)
		SPI_finish();
	SPI_finish();
}

/* Builds the run of a locked execution: its context, visited nodes and settled waiting steps. */
static Run *
resume_run(EngineSession *session, LockedExecution *le)
{
	ExecutionRecord *rec = &le->rec;
	WorkflowDefinition *def;
	Run		   *run;
	ListCell   *lc;
	int64		version_id = workflow_cache_version_id(rec->workflow_key, rec->version);

	if (version_id == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("execution %lld uses workflow \"%s\" version %d, which no longer exists",
						(long long) rec->id, rec->workflow_key, rec->version)));
	def = workflow_cache_get(version_id, rec->workflow_key, rec->version);
	run = run_create(session, def);
	run->exec = *rec;
	run->created_at = le->created_at;
	/*
	 * A waiting execution carries an error only from an action failure no
	 * edge handled (a fatal one ends it): it still ends failed, whatever the
	 * branches still waiting do.
	 */
	if (rec->error != NULL && strcmp(rec->status, "waiting") == 0)
	{
		run->unhandled_failure = true;
		run->error = rec->error;
	}
	run->payload = jsonb_get_jsonb(rec->context, "payload");
	run->payload_changed = run->payload != NULL;
	if (run->payload == NULL)
		run->payload = rec->payload;
	run->recipient = jsonb_get_jsonb(rec->context, "recipient");
	run->recipient_changed = run->recipient != NULL;
	if (run->recipient == NULL)
		run->recipient = rec->recipient;
	else if (JB_ROOT_IS_SCALAR(run->recipient))
		run->recipient = NULL;
	/* the steps' outputs, from the stored steps (a context of an earlier release may hold them) */
	run->steps = jsonb_get_jsonb(rec->context, "steps");
	if (run->steps == NULL)
	{
		int			n = list_length(le->steps);
		const char **keys = palloc(sizeof(char *) * Max(n, 1));
		Jsonb	  **vals = palloc(sizeof(Jsonb *) * Max(n, 1));
		int			k = 0;

		foreach(lc, le->steps)
		{
			StoredStep *s = lfirst(lc);

			if (s->output == NULL)
				continue;
			keys[k] = s->node_id;
			vals[k++] = s->output;
		}
		run->steps = jsonb_make_object(k, keys, vals);
	}
	run->vars = jsonb_get_jsonb(rec->context, "vars");
	if (run->vars == NULL)
		run->vars = jsonb_make_empty_object();
	/* most resumes end the execution: the subscriber is read only if an action node runs */
	run->subscriber_pending = rec->subscriber_id != NULL;
	run->stored_steps = le->steps;

	foreach(lc, le->steps)
	{
		StoredStep *s = lfirst(lc);
		WorkflowNode *node = workflow_definition_node(def, s->node_id);

		if (node != NULL)
			run->visited[node->index] = true;
		run->seq = Max(run->seq, s->seq);
	}
	foreach(lc, le->steps)
	{
		StoredStep *s = lfirst(lc);
		WorkflowNode *node = workflow_definition_node(def, s->node_id);

		if (node == NULL || strcmp(s->status, "waiting") != 0)
			continue;

		/*
		 * The version is looked up by number: a workflow (or version) deleted
		 * and stored again can give the number to another graph, whose node
		 * of this id may be of another type.
		 */
		if (s->node_type != NULL && strcmp(s->node_type, workflow_node_type_name(node->type)) != 0)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("execution %lld waits at node \"%s\" of type %s, which has type %s in workflow \"%s\" version %d now",
							(long long) rec->id, s->node_id, s->node_type, workflow_node_type_name(node->type),
							rec->workflow_key, rec->version),
					 errdetail("The workflow or its version was deleted and stored again while the execution waited.")));
		if (NODE_IS_ACTION(node->type))
			action_settle(run, node, 0, s->seq);
		else if (node->type == NODE_WAIT)
			wait_settle(run, node, s->seq);
		else if (node->type == NODE_DELAY)
		{
			char	   *until = s->output ? jsonb_get_string(s->output, "until") : NULL;

			if (until == NULL)
				ereport(ERROR,
						(errcode(ERRCODE_DATA_CORRUPTED),
						 errmsg("execution %lld waits at delay node \"%s\" with no time to wake",
								(long long) rec->id, s->node_id),
						 errdetail("Its step has no \"until\" in its output.")));
			delay_settle(run, node,
						 DatumGetTimestampTz(DirectFunctionCall3(timestamptz_in,
																 CStringGetDatum(until),
																 ObjectIdGetDatum(InvalidOid),
																 Int32GetDatum(-1))),
						 0, s->seq);
		}
	}
	return run;
}

/* An execution in this status can go on. */
static bool
status_is_resumable(const char *status)
{
	return strcmp(status, "waiting") == 0 || strcmp(status, "running") == 0;
}

static int
int64_cmp(const void *a, const void *b)
{
	int64		x = *(const int64 *) a;
	int64		y = *(const int64 *) b;

	return (x > y) - (x < y);
}

/* Sorts ids and removes duplicates; returns the new count. */
static int
int64_sort_unique(int64 *ids, int n)
{
	int			m = 0;

	if (n == 0)
		return 0;
	qsort(ids, n, sizeof(int64), int64_cmp);
	for (int i = 1; i < n; i++)
		if (ids[i] != ids[m])
			ids[++m] = ids[i];
	return m + 1;
}

/*
 * The summary of an action node whose only delivery is f, which just ended:
 * what delivery_repo_summaries would read.
 */
static NodeSummary *
finished_summary(FinishedDelivery *f)
{
	NodeSummary *ns = palloc0(sizeof(NodeSummary));
	const char *keys[] = {"id", "status", "provider", "recipient", "attempts", "provider_message_id", "error"};
	Jsonb	   *vals[lengthof(keys)];
	Jsonb	   *elem;

	/* SUMMARY_DELIVERIES: jsonb_strip_nulls(jsonb_build_object(...)) */
	vals[0] = jsonb_make_int(f->delivery_id);
	vals[1] = jsonb_make_string(f->status);
	vals[2] = f->provider ? jsonb_make_string(f->provider) : NULL;
	vals[3] = f->recipient ? jsonb_make_string(f->recipient) : NULL;
	vals[4] = jsonb_make_int(f->attempts);
	vals[5] = f->provider_message_id ? jsonb_make_string(f->provider_message_id) : NULL;
	vals[6] = f->last_error ? jsonb_make_string(f->last_error) : NULL;
	elem = jsonb_make_object_present(lengthof(keys), keys, vals);
	ns->node_id = f->node_id;
	ns->summary.total = 1;
	ns->summary.pending = 0;
	ns->summary.succeeded = (strcmp(f->status, "sent") == 0 || strcmp(f->status, "delivered") == 0) ? 1 : 0;
	ns->summary.deliveries = jsonb_make_array(1, &elem);
	return ns;
}

/*
 * When an execution waits on one step only, an action node that had a
 * single delivery (its waiting output is {"pending": 1}), and that delivery
 * is among the finished ones, returns it: the node's summary is then known
 * without reading the deliveries.  NULL otherwise.
 */
static FinishedDelivery *
only_delivery_finished(LockedExecution *le, List *finished)
{
	StoredStep *waiting = NULL;
	FinishedDelivery *found = NULL;
	ListCell   *lc;

	foreach(lc, le->steps)
	{
		StoredStep *s = lfirst(lc);

		if (strcmp(s->status, "waiting") != 0)
			continue;
		if (waiting != NULL)
			return NULL;
		waiting = s;
	}
	if (waiting == NULL || waiting->output == NULL ||
		jsonb_get(waiting->output, "total") != NULL ||
		jsonb_get_int(waiting->output, "pending", 0) != 1)
		return NULL;
	foreach(lc, finished)
	{
		FinishedDelivery *f = lfirst(lc);

		if (f->execution_id != le->rec.id || strcmp(f->node_id, waiting->node_id) != 0)
			continue;
		if (found != NULL || !f->complete)
			return NULL;
		found = f;
	}
	return found;
}

/* A delivery's outcome as the event "<node>.<status>" for its execution's wait nodes. */
static void
delivery_outcome_event(int64 execution_id, const char *node_id, int64 delivery_id,
					   const char *status, const char *provider_message_id, const char *error)
{
	const char *keys[] = {"delivery_id", "status", "provider_message_id", "error"};
	Jsonb	   *vals[4];

	vals[0] = jsonb_make_int(delivery_id);
	vals[1] = jsonb_make_string(status);
	vals[2] = provider_message_id ? jsonb_make_string(provider_message_id) : NULL;
	vals[3] = error ? jsonb_make_string(error) : NULL;
	(void) wait_repo_execution_event(execution_id, psprintf("%s.%s", node_id, status),
							  jsonb_make_object(4, keys, vals));
}

/*
 * Gives the finished deliveries' outcomes, events "<node>.<status>", to the
 * waits of their executions (ids, locked) that wait for some.  The waits are
 * read only now that the executions are locked: a transaction that made one
 * reach a wait node while its delivery was being recorded has committed, and
 * its wait is seen.  Read before the lock, that wait was missed, and with it
 * the event.  (emit_event too takes an execution's row before its waits'.)
 */
static void
outcome_events(int64 *ids, int n, List *finished)
{
	List	   *waiting = wait_repo_waiting_executions(ids, n);
	ListCell   *lc;

	if (waiting == NIL)
		return;
	foreach(lc, finished)
	{
		FinishedDelivery *f = lfirst(lc);
		ListCell   *w;

		foreach(w, waiting)
		{
			if (*(int64 *) lfirst(w) == f->execution_id)
			{
				delivery_outcome_event(f->execution_id, f->node_id, f->delivery_id, f->status,
									   f->provider_message_id, f->error);
				break;
			}
		}
	}
}

/*
 * Resumes n executions (distinct, ascending ids) with a fixed number of
 * statements for the whole batch: lock and read them with their steps (1),
 * their deliveries' summaries (1), then write every run's new deliveries and
 * execution rows with their steps (2).  Returns the status of
 * each id in statuses (NULL when it does not exist) if statuses is not NULL.
 * A delivery in finished (FinishedDelivery *) that is the only one its
 * waiting step has gives that step's summary without the read.  SPI is
 * connected.
 */
static void
resume_many(int64 *ids, int n, const char **statuses, List *finished)
{
	List	   *locked;
	int64	   *resumable;
	int			n_resumable = 0;
	EngineSession session;
	List	   *deliveries = NIL;
	List	   *execs = NIL;
	ListCell   *lc;

	if (statuses != NULL)
		for (int i = 0; i < n; i++)
			statuses[i] = NULL;
	locked = execution_repo_lock_many(ids, n);
	resumable = palloc(sizeof(int64) * Max(list_length(locked), 1));
	foreach(lc, locked)
	{
		LockedExecution *le = lfirst(lc);

		if (statuses != NULL)
			for (int i = 0; i < n; i++)
				if (ids[i] == le->rec.id)
					statuses[i] = le->rec.status;
		if (!status_is_resumable(le->rec.status))
			continue;
		resumable[n_resumable++] = le->rec.id;
	}
	if (n_resumable == 0)
		return;
	if (finished != NIL)
		outcome_events(resumable, n_resumable, finished);

	/* the summaries the finished deliveries give, then those read */
	memset(&session, 0, sizeof(session));
	{
		int64	   *unknown = palloc(sizeof(int64) * n_resumable);
		int			n_unknown = 0;
		List	   *known = NIL;

		foreach(lc, locked)
		{
			LockedExecution *le = lfirst(lc);
			FinishedDelivery *f;

			if (!status_is_resumable(le->rec.status))
				continue;
			f = finished ? only_delivery_finished(le, finished) : NULL;
			if (f != NULL)
				known = lappend(known, f);
			else
				unknown[n_unknown++] = le->rec.id;
		}
		session.summaries = delivery_repo_summaries(unknown, n_unknown);
		foreach(lc, known)
		{
			FinishedDelivery *f = lfirst(lc);
			ExecutionSummaries *e = hash_search(session.summaries, &f->execution_id, HASH_ENTER, NULL);

			e->nodes = list_make1(finished_summary(f));
		}
	}

	foreach(lc, locked)
	{
		LockedExecution *le = lfirst(lc);
		Run		   *run;

		if (!status_is_resumable(le->rec.status))
			continue;
		run = resume_run(&session, le);
		run_process(run);
		run_conclude(run);
		deliveries = list_concat(deliveries, run->delivery_records);
		execs = lappend(execs, &run->exec);
		if (statuses != NULL)
			for (int i = 0; i < n; i++)
				if (ids[i] == run->exec.id)
					statuses[i] = run->exec.status;
	}
	delivery_repo_insert(deliveries);
	execution_repo_update_many(execs);
}

/* Arguments of the subtransactions of resume_isolated. */
typedef struct ResumeBatch
{
	int64	   *ids;
	int			n;
	List	   *finished;		/* FinishedDelivery * */
	const char **statuses;		/* or NULL */
} ResumeBatch;

static void
resume_batch_call(void *arg)
{
	ResumeBatch *b = arg;

	resume_many(b->ids, b->n, b->statuses, b->finished);
}

/*
 * Resumes one execution in a subtransaction (see resume_isolated); sets
 * *status (when not NULL) to its status after, "failed" when it could not
 * resume, NULL when it was left as it was or does not exist.  With
 * raise_transient, an error that says nothing about the execution (disk
 * full, an I/O error: error_is_transient) is raised too, for the caller to
 * try again, rather than failing the execution.  Not out of memory: one huge
 * execution causes it at every try, and raised, it would refuse every event
 * of its correlation key to the other executions for good.
 */
static void
resume_one_isolated(int64 id, List *finished, bool leave_when_busy, bool raise_transient,
					const char **status)
{
	const char *got = NULL;
	ResumeBatch one = {&id, 1, finished, &got};
	ErrorData  *e = run_in_subtransaction(resume_batch_call, &one);

	if (e != NULL)
	{
		got = NULL;
		if (leave_when_busy && error_is_lock_conflict(e))
			;
		else if (error_is_lock_conflict(e) || error_is_interrupt(e) ||
				 (raise_transient && error_is_transient(e) && e->sqlerrcode != ERRCODE_OUT_OF_MEMORY))
			ReThrowError(e);
		else
		{
			ereport(WARNING,
					(errmsg("notiflow: execution %lld cannot resume and has failed", (long long) id),
					 errdetail("%s", e->message)));
			execution_repo_fail(id, psprintf("cannot resume: %s", e->message));
			got = "failed";
		}
	}
	if (status)
		*status = got;
}

/*
 * Leaves executions (sorted, unique ids) that a worker that never waits for
 * a correlation key could not resume (engine_never_waits_for_keys): the
 * outcomes of their finished deliveries, rolled back with the resume, are
 * given to their waits now (after their rows, as resume_many does), and they
 * are made due at once, so that the timer resumes them when the other
 * session has let the key go (it passes over a held one for a while).
 */
static void
defer_busy(int64 *ids, int n, List *finished)
{
	execution_repo_lock_ids(ids, n);
	if (finished != NIL)
		outcome_events(ids, n, finished);
	execution_repo_wake_now(ids, n);
}

/*
 * Resumes executions (sorted, unique ids) in one batch; when it fails, each
 * alone, so that one that cannot go on (say its workflow was deleted) fails
 * alone, with the reason, instead of taking its neighbours down with it (or,
 * in a worker, the worker: it would meet the same execution first again
 * after its restart).  Connected to SPI.
 *
 * A lock conflict fails none of them: it is another transaction's doing (a
 * deadlock's victim, say: a resume takes a correlation key's lock after
 * execution rows), and the same resume goes through later.  It is raised
 * again, for the caller to run it again, unless leave_when_busy, when the
 * executions are left as they were, for a later round.  So is a cancel or a
 * shutdown.  Other errors fail that execution alone: out of memory (one
 * huge execution can cause it), an I/O error on its own page (raised, it
 * would end every dispatcher that meets it first, round after round).  A
 * full disk fails the write that would record the failure as well.
 */
static int
resume_isolated(int64 *ids, int n, List *finished, bool leave_when_busy, List **left)
{
	ResumeBatch batch = {ids, n, finished, NULL};
	ErrorData  *e;
	int			resumed = 0;

	if (n == 0 || (e = run_in_subtransaction(resume_batch_call, &batch)) == NULL)
		return n;
	if ((leave_when_busy || engine_never_waits_for_keys) && error_is_lock_conflict(e))
	{
		/* one by one: only those that meet the other transaction are left for the next round */
		for (int k = 0; k < n; k++)
		{
			const char *status = NULL;

			if (n > 1)
				resume_one_isolated(ids[k], finished, true, false, &status);
			resumed += status != NULL;
			if (status == NULL && left != NULL)
				*left = lappend(*left, &ids[k]);
			/* deferred at once: the rows stay locked in id order */
			if (status == NULL && !leave_when_busy)
				defer_busy(&ids[k], 1, finished);
		}
		return resumed;
	}
	if (error_is_lock_conflict(e) || error_is_interrupt(e))
		ReThrowError(e);
	for (int k = 0; k < n; k++)
	{
		const char *status = "";

		/* (one failing for another reason, the others may still meet a held key) */
		resume_one_isolated(ids[k], finished, leave_when_busy || engine_never_waits_for_keys, false,
							engine_never_waits_for_keys ? &status : NULL);
		if (status == NULL && !leave_when_busy)
			defer_busy(&ids[k], 1, finished);
	}
	return n;
}

char *
execution_resume(int64 execution_id)
{
	MemoryContext caller = CurrentMemoryContext;
	const char *status;
	char	   *result;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "notiflow: SPI_connect failed");
	if (execution_resume_raises)
	{
		status = NULL;
		resume_many(&execution_id, 1, &status, NIL);
	}
	else
		resume_one_isolated(execution_id, NIL, false, true, &status);
	result = status ? MemoryContextStrdup(caller, status) : NULL;
	SPI_finish();
	return result;
}

/*
 * Executions a round of execution_resume_due left because another session
 * held their correlation keys: the next rounds pass them over for a while,
 * or the same ones, first in wake-up order, would fill every round and keep
 * the executions due after them waiting as long as those keys are held.
 */
#define HELD_MAX 1000
#define HELD_SKIP_MS 1000
static int64 held_ids[HELD_MAX];
static TimestampTz held_until[HELD_MAX];
static int	n_held = 0;

/* Forgets the held executions whose time is over (held_ids then lists those still passed over). */
static void
held_expire(void)
{
	TimestampTz now = GetCurrentTimestamp();
	int			kept = 0;

	for (int i = 0; i < n_held; i++)
		if (held_until[i] > now)
		{
			held_ids[kept] = held_ids[i];
			held_until[kept] = held_until[i];
			kept++;
		}
	n_held = kept;
}

static void
held_add(List *left)
{
	TimestampTz until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), HELD_SKIP_MS);
	ListCell   *lc;

	foreach(lc, left)
	{
		if (n_held == HELD_MAX)
			break;
		held_ids[n_held] = *(int64 *) lfirst(lc);
		held_until[n_held++] = until;
	}
}

int
execution_resume_due(int limit, int *resumed_out)
{
	List	   *due;
	int64	   *ids;
	ListCell   *lc;
	List	   *volatile left = NIL;
	volatile int n = 0;
	volatile int resumed = 0;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "notiflow: SPI_connect failed");
	held_expire();
	due = execution_repo_due(limit, held_ids, n_held);
	ids = palloc(sizeof(int64) * Max(list_length(due), 1));
	foreach(lc, due)
		ids[n++] = *(int64 *) lfirst(lc);
	n = int64_sort_unique(ids, n);
	/* a worker's timer does not wait for a correlation key another session holds (node_wait) */
	resume_without_waiting = true;
	PG_TRY();
	{
		List	   *got = NIL;

		resumed = resume_isolated(ids, n, NIL, true, &got);
		left = got;
	}
	PG_FINALLY();
	{
		resume_without_waiting = false;
	}
	PG_END_TRY();
	held_add(left);
	SPI_finish();
	if (resumed_out)
		*resumed_out = resumed;
	return n;
}

bool
delivery_finish(int64 delivery_id, const char *status, const char *provider_message_id,
				const char *error)
{
	static const char *const statuses[] = {"sending", "sent", "delivered", "failed", "cancelled"};
	bool		known = false;
	int64		execution_id;
	char	   *node_id = NULL;
	bool		changed;

	for (int i = 0; i < (int) lengthof(statuses); i++)
		known |= strcmp(statuses[i], status) == 0;
	if (!known)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid delivery status \"%s\"", status),
				 errdetail("status: expected sending, sent, delivered, failed or cancelled")));

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "notiflow: SPI_connect failed");
	changed = delivery_repo_set_status(delivery_id, status, provider_message_id, error,
									   &execution_id, &node_id);
	if (changed && strcmp(status, "sending") != 0)
	{
		execution_repo_lock_ids(&execution_id, 1);	/* before its waits */
		delivery_outcome_event(execution_id, node_id, delivery_id, status, provider_message_id, error);
		resume_isolated(&execution_id, 1, NIL, false, NULL);
		/* a status callback that came before the message id was stored */
		if (provider_message_id != NULL && strcmp(status, "sent") == 0)
			delivery_repo_apply_early_events(&delivery_id, 1);
	}
	SPI_finish();
	return changed;
}

void
deliveries_finished(List *finished)
{
	int			n = list_length(finished);
	int64	   *ids;
	int			i = 0;
	int			n_ids;
	ListCell   *lc;

	if (n == 0)
		return;
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "notiflow: SPI_connect failed");
	ids = palloc(sizeof(int64) * n);
	foreach(lc, finished)
		ids[i++] = ((FinishedDelivery *) lfirst(lc))->execution_id;
	n_ids = int64_sort_unique(ids, n);

	/* the outcomes go to the executions' waits in resume_many (outcome_events) */
	resume_isolated(ids, n_ids, finished, false, NULL);
	SPI_finish();
}
