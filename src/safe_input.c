/*
 * safe_input.c — code run without letting its errors abort the caller.
 *
 * PostgreSQL 15 has no soft input errors, so the call runs in an internal
 * subtransaction: on error the subtransaction is rolled back, the error is
 * returned, and the caller goes on (collecting problems, or with the next
 * delivery or message).
 */
#include "postgres.h"

#include "access/xact.h"
#include "utils/memutils.h"
#include "utils/resowner.h"

#include "safe_input.h"

/* Runs fn(arg), catching its error. */
ErrorData *
run_in_subtransaction(void (*fn) (void *arg), void *arg)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	ErrorData  *volatile edata = NULL;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		fn(arg);
		ReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
	CurrentResourceOwner = owner;
	return edata;
}

/*
 * True for an error that says nothing about the input: a cancel or shutdown,
 * a deadlock or serialization failure, a lock not available, resources
 * exhausted, an I/O error.  Running the same call again later may succeed.
 */
bool
error_is_transient(const ErrorData *edata)
{
	int			category = ERRCODE_TO_CATEGORY(edata->sqlerrcode);

	return error_is_lock_conflict(edata) || error_is_interrupt(edata) ||
		category == ERRCODE_TRANSACTION_ROLLBACK ||
		category == ERRCODE_INSUFFICIENT_RESOURCES ||
		category == ERRCODE_SYSTEM_ERROR;
}

bool
error_is_lock_conflict(const ErrorData *edata)
{
	return edata->sqlerrcode == ERRCODE_T_R_DEADLOCK_DETECTED ||
		edata->sqlerrcode == ERRCODE_T_R_SERIALIZATION_FAILURE ||
		edata->sqlerrcode == ERRCODE_LOCK_NOT_AVAILABLE;
}

bool
error_is_interrupt(const ErrorData *edata)
{
	return ERRCODE_TO_CATEGORY(edata->sqlerrcode) == ERRCODE_OPERATOR_INTERVENTION;
}

/* Arguments of an input function call run by safe_input. */
typedef struct InputCall
{
	PGFunction	fn;
	const char *src;
	Datum		result;
} InputCall;

/* Calls the input function of an InputCall. */
static void
input_call(void *arg)
{
	InputCall  *call = arg;

	call->result = DirectFunctionCall3(call->fn, CStringGetDatum(call->src),
									   ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1));
}

/* Calls an input function, catching its error; a transient one is raised again when rethrow is set, an interrupt always. */
static bool
input_caught(PGFunction fn, const char *src, Datum *result, char **error, bool rethrow)
{
	InputCall	call = {fn, src, (Datum) 0};
	ErrorData  *edata = run_in_subtransaction(input_call, &call);

	if (edata != NULL)
	{
		/* a cancel or shutdown is never the input's: raised again even for safe_input_any */
		if ((rethrow && error_is_transient(edata)) || error_is_interrupt(edata))
			ReThrowError(edata);
		*error = edata->message;
		return false;
	}
	*result = call.result;
	return true;
}

bool
safe_input(PGFunction fn, const char *src, Datum *result, char **error)
{
	return input_caught(fn, src, result, error, true);
}

bool
safe_input_any(PGFunction fn, const char *src, Datum *result, char **error)
{
	return input_caught(fn, src, result, error, false);
}
