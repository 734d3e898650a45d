/*
 * trigger_api.c — SQL functions that start executions:
 * notiflow.trigger(workflow_key, payload, recipient, idempotency_key) and its
 * fan-out variant notiflow.trigger_many(workflow_key, recipients, payload,
 * idempotency_key).  Both run in the caller's transaction.
 */
#include "postgres.h"

#include "fmgr.h"
#include "funcapi.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"

#include "engine.h"
#include "jsonb_util.h"

PG_FUNCTION_INFO_V1(trigger);
PG_FUNCTION_INFO_V1(trigger_many);

/* Raises the error for a NULL workflow key. */
static char *
workflow_key_arg(FunctionCallInfo fcinfo)
{
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("workflow key must not be null"),
				 errdetail("workflow_key: required")));
	return text_to_cstring(PG_GETARG_TEXT_PP(0));
}

/* Raises an error when an idempotency key given by the caller is empty or longer than 256 characters. */
static void
check_idempotency_key(const char *key)
{
	if (key != NULL && (key[0] == '\0' || strlen(key) > 256))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid idempotency key"),
				 errdetail("idempotency_key: expected 1 to 256 characters")));
}

/* Starts one execution and returns its id. */
Datum
trigger(PG_FUNCTION_ARGS)
{
	TriggerRequest req;
	char	   *key = workflow_key_arg(fcinfo);

	req.payload = PG_ARGISNULL(1) ? jsonb_make_empty_object() : PG_GETARG_JSONB_P(1);
	req.recipient = PG_ARGISNULL(2) ? NULL : PG_GETARG_JSONB_P(2);
	req.idempotency_key = PG_ARGISNULL(3) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(3));
	check_idempotency_key(req.idempotency_key);
	engine_trigger(key, &req, 1);
	PG_RETURN_INT64(req.execution_id);
}

/*
 * Starts one execution per recipient of a JSON array, with one payload, and
 * returns (recipient, execution_id) rows.  With an idempotency key, each
 * recipient's key is "<key>/<subscriber_id>" (or "<key>/#<position>" for an
 * inline contact; a subscriber id that begins with "#" gets one more, so the
 * two never meet), so a repeated call creates nothing twice.
 */
Datum
trigger_many(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	char	   *key = workflow_key_arg(fcinfo);
	Jsonb	   *recipients;
	Jsonb	   *payload = PG_ARGISNULL(2) ? jsonb_make_empty_object() : PG_GETARG_JSONB_P(2);
	char	   *idem = PG_ARGISNULL(3) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(3));
	TriggerRequest *reqs;
	int			n;
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	int			i = 0;

	if (PG_ARGISNULL(1) || !JB_ROOT_IS_ARRAY(PG_GETARG_JSONB_P(1)) || JB_ROOT_IS_SCALAR(PG_GETARG_JSONB_P(1)))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("recipients must be a JSON array"),
				 errdetail("recipients: expected an array of subscriber ids or recipient objects")));
	check_idempotency_key(idem);	/* as trigger()'s: an empty one made keys like "/ann" */
	recipients = PG_GETARG_JSONB_P(1);
	n = JsonContainerSize(&recipients->root);
	InitMaterializedSRF(fcinfo, 0);
	if (n == 0)
		return (Datum) 0;

	reqs = palloc0(sizeof(TriggerRequest) * n);
	it = JsonbIteratorInit(&recipients->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		Jsonb	   *r;

		if (tok != WJB_ELEM)
			continue;
		r = JsonbValueToJsonb(&v);
		reqs[i].payload = payload;
		reqs[i].recipient = r;
		if (idem != NULL)
		{
			char	   *sid = v.type == jbvString ? jsonb_scalar_text(r) : jsonb_get_string(r, "subscriber_id");

			/* a subscriber id that begins with "#" gets one more: "#2" is not the second inline contact */
			reqs[i].idempotency_key = sid ? psprintf("%s/%s%s", idem, sid[0] == '#' ? "#" : "", sid)
				: psprintf("%s/#%d", idem, i + 1);
		}
		i++;
	}
	engine_trigger(key, reqs, n);
	for (i = 0; i < n; i++)
	{
		Datum		values[2];
		bool		nulls[2] = {false, false};

		values[0] = JsonbPGetDatum(reqs[i].recipient);
		values[1] = Int64GetDatum(reqs[i].execution_id);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
