/*
 * safe_input.c — type input functions called without letting their errors
 * abort the caller.
 *
 * PostgreSQL 15 has no soft input errors, so the call runs in an internal
 * subtransaction: on error the subtransaction is rolled back, the error is
 * kept as a message, and the caller goes on collecting problems.
 */
#include "postgres.h"

#include "access/xact.h"
#include "utils/memutils.h"
#include "utils/resowner.h"

#include "safe_input.h"

/* Calls an input function, catching its error. */
bool
safe_input(PGFunction fn, const char *src, Datum *result, char **error)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	volatile bool ok = false;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		*result = DirectFunctionCall3(fn, CStringGetDatum(src), ObjectIdGetDatum(InvalidOid),
									  Int32GetDatum(-1));
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
		ok = true;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
		*error = edata->message;
	}
	PG_END_TRY();
	return ok;
}
