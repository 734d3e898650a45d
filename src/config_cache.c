/*
 * config_cache.c — when the per-backend configuration caches must be dropped.
 *
 * The engine caches, per backend, the current version of each workflow, the
 * compiled definitions and the enabled providers of each channel, so that a
 * trigger does not read them again.  Their tables carry a statement-level
 * trigger (notiflow.config_changed) that sends a relcache invalidation for
 * the table; PostgreSQL delivers it to every backend after the change commits
 * (and to the changing backend at once).  The relcache callback here counts
 * those invalidations; a cache compares the count it was filled under with
 * config_cache_generation() and refills when it moved.  Dropping or
 * truncating a table, or a global invalidation, moves it too.
 */
#include "postgres.h"

#include "commands/trigger.h"
#include "fmgr.h"
#include "utils/inval.h"
#include "utils/rel.h"

#include "config_cache.h"
#include "notiflow.h"

PG_FUNCTION_INFO_V1(config_changed);

static uint64 generation = 1;
static bool callback_registered = false;
static Oid	watched[3] = {InvalidOid, InvalidOid, InvalidOid};
static const char *const watched_names[3] = {"workflows", "workflow_versions", "providers"};

/* Counts invalidations of the watched tables (or of everything). */
static void
config_relcache_callback(Datum arg, Oid relid)
{
	if (relid == InvalidOid)
	{
		generation++;
		for (int i = 0; i < 3; i++)
			watched[i] = InvalidOid;
		return;
	}
	for (int i = 0; i < 3; i++)
	{
		if (watched[i] == relid)
		{
			generation++;
			watched[i] = InvalidOid;	/* the table may be gone: look it up again */
		}
	}
}

uint64
config_cache_generation(void)
{
	if (!callback_registered)
	{
		CacheRegisterRelcacheCallback(config_relcache_callback, (Datum) 0);
		callback_registered = true;
	}
	for (int i = 0; i < 3; i++)
	{
		if (!OidIsValid(watched[i]))
			watched[i] = notiflow_relid(watched_names[i]);
	}

	/*
	 * A cache hit opens no relation, which is where PostgreSQL reads the
	 * invalidations other sessions sent: read them here, so that a change
	 * another session committed is seen by the next statement of a long
	 * transaction too, not only by the next transaction (cheap when there
	 * are none).
	 */
	AcceptInvalidationMessages();
	return generation;
}

/* Statement trigger on the configuration tables: invalidates every backend's caches. */
Datum
config_changed(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("notiflow.config_changed() must be called as a trigger")));
	CacheInvalidateRelcache(trigdata->tg_relation);
	return PointerGetDatum(NULL);
}
