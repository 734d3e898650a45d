/*
 * workflow_cache.c — per-backend cache of compiled workflow versions.
 *
 * Versions are immutable and identified by workflow_versions.id (never reused
 * while the table exists), so a cached entry never goes stale by itself.  The
 * one way ids can be reused is the table being dropped or truncated (DROP
 * EXTENSION, TRUNCATE ... RESTART IDENTITY); both send a relcache
 * invalidation, on which the whole cache is flushed at the next lookup.  The
 * cache is bounded: past NOTIFLOW_CACHE_MAX entries it is flushed too.
 */
#include "postgres.h"

#include "catalog/namespace.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"

#include "workflow_cache.h"
#include "workflow_repo.h"

#define NOTIFLOW_CACHE_MAX 1024

typedef struct CacheEntry
{
	int64		version_id;		/* hash key */
	WorkflowDefinition *def;
} CacheEntry;

static HTAB *definition_cache = NULL;
static MemoryContext cache_cxt = NULL;
static bool flush_pending = false;
static bool callback_registered = false;
static Oid	versions_relid = InvalidOid;

/* Notes that the cache must be flushed when workflow_versions is invalidated. */
static void
workflow_cache_invalidate(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == versions_relid)
	{
		flush_pending = true;
		versions_relid = InvalidOid;
	}
}

/* Creates (or recreates, after a flush) the empty cache. */
static void
workflow_cache_reset(void)
{
	HASHCTL		ctl;

	if (cache_cxt != NULL)
		MemoryContextDelete(cache_cxt);
	cache_cxt = AllocSetContextCreate(CacheMemoryContext, "notiflow workflow cache",
									  ALLOCSET_DEFAULT_SIZES);
	ctl.keysize = sizeof(int64);
	ctl.entrysize = sizeof(CacheEntry);
	ctl.hcxt = cache_cxt;
	definition_cache = hash_create("notiflow workflow definitions", 64, &ctl,
								   HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	flush_pending = false;
}

/* Returns the compiled definition of a version, compiling it on first use. */
WorkflowDefinition *
workflow_cache_get(int64 version_id, const char *workflow_key, int version)
{
	CacheEntry *entry;
	bool		found;

	if (!callback_registered)
	{
		CacheRegisterRelcacheCallback(workflow_cache_invalidate, (Datum) 0);
		callback_registered = true;
	}
	if (definition_cache == NULL || flush_pending ||
		hash_get_num_entries(definition_cache) >= NOTIFLOW_CACHE_MAX)
		workflow_cache_reset();
	if (!OidIsValid(versions_relid))
		versions_relid = get_relname_relid("workflow_versions",
										   get_namespace_oid("notiflow", false));

	entry = hash_search(definition_cache, &version_id, HASH_FIND, &found);
	if (!found)
	{
		Jsonb	   *definition = workflow_repo_definition(version_id);
		List	   *problems = NIL;
		WorkflowDefinition *def;

		def = workflow_definition_compile(definition, cache_cxt, &problems);
		if (def == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_DATA_CORRUPTED),
					 errmsg("stored definition of workflow \"%s\" version %d does not compile",
							workflow_key, version),
					 errdetail("%s: %s",
							   ((DefinitionProblem *) linitial(problems))->path,
							   ((DefinitionProblem *) linitial(problems))->message)));
		def->workflow_key = MemoryContextStrdup(def->mcxt, workflow_key);
		def->version = version;
		entry = hash_search(definition_cache, &version_id, HASH_ENTER, &found);
		entry->def = def;
	}
	return entry->def;
}
