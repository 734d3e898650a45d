/*
 * execution_api.c — SQL functions that move executions on:
 * notiflow.resume_execution(id), notiflow.resume_due_executions(limit) and
 * notiflow.finish_delivery(id, status, provider_message_id, error).  The
 * delivery workers call the same C entry points (engine.h).
 */
#include "postgres.h"

#include "fmgr.h"
#include "utils/builtins.h"

#include "engine.h"

PG_FUNCTION_INFO_V1(resume_execution);
PG_FUNCTION_INFO_V1(resume_due_executions);
PG_FUNCTION_INFO_V1(finish_delivery);

/* Resumes one execution and returns its status, or NULL when it does not exist. */
Datum
resume_execution(PG_FUNCTION_ARGS)
{
	char	   *status = execution_resume(PG_GETARG_INT64(0));

	if (status == NULL)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(status));
}

/* Resumes waiting executions whose delay is over; returns how many (not those left: another transaction held them). */
Datum
resume_due_executions(PG_FUNCTION_ARGS)
{
	int32		limit = PG_GETARG_INT32(0);
	int			resumed = 0;

	if (limit < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("limit must be positive"),
				 errdetail("max_executions: got %d", limit)));
	(void) execution_resume_due(limit, &resumed);
	PG_RETURN_INT32(resumed);
}

/* Records a delivery's status and resumes its execution when that ends a wait. */
Datum
finish_delivery(PG_FUNCTION_ARGS)
{
	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("delivery id and status are required"),
				 errdetail("%s: required", PG_ARGISNULL(0) ? "delivery_id" : "status")));
	PG_RETURN_BOOL(delivery_finish(PG_GETARG_INT64(0),
								   text_to_cstring(PG_GETARG_TEXT_PP(1)),
								   PG_ARGISNULL(2) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(2)),
								   PG_ARGISNULL(3) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(3))));
}
