/*
 * workflow_cache.c — per-backend caches of workflows: the current version of
 * each workflow key, the id of each (key, version) that an execution names,
 * and the compiled definition of each version.
 *
 * All are dropped when config_cache_generation() moves (a workflow or
 * version changed anywhere, see config_cache.c).  Compiled versions are
 * immutable and keyed by workflow_versions.id, so they would stay right even
 * without that; the flush bounds memory and covers the table being dropped
 * and recreated (ids start again).  A lookup that raced with an invalidation
 * is used but not cached.  Past NOTIFLOW_CACHE_MAX entries the cache is
 * flushed too.  A dropped cache's memory lives until the transaction ends:
 * the runs of a batch (resume_many) keep pointers into the definitions of
 * the ones before them.
 */
#include "postgres.h"

#include "access/xact.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"

#include "config_cache.h"
#include "workflow_cache.h"
#include "workflow_repo.h"

#define NOTIFLOW_CACHE_MAX 1024
#define WORKFLOW_KEY_MAX 132

typedef struct DefinitionEntry
{
	int64		version_id;		/* hash key */
	WorkflowDefinition *def;
} DefinitionEntry;

typedef struct VersionKey
{
	char		key[WORKFLOW_KEY_MAX];	/* zero-padded: hashed as bytes */
	int32		version;
} VersionKey;

typedef struct VersionEntry
{
	VersionKey	key;			/* hash key */
	int64		version_id;
} VersionEntry;

typedef struct CurrentEntry
{
	char		key[WORKFLOW_KEY_MAX];	/* hash key */
	WorkflowRef ref;
} CurrentEntry;

static HTAB *definitions = NULL;
static HTAB *currents = NULL;
static HTAB *versions = NULL;
static MemoryContext cache_cxt = NULL;
static uint64 cache_generation = 0;

/* Drops the caches when the configuration changed; creates them when needed. */
static void
workflow_cache_check(void)
{
	HASHCTL		ctl;
	uint64		gen = config_cache_generation();

	if (definitions != NULL && gen == cache_generation &&
		hash_get_num_entries(definitions) < NOTIFLOW_CACHE_MAX &&
		hash_get_num_entries(currents) < NOTIFLOW_CACHE_MAX &&
		hash_get_num_entries(versions) < NOTIFLOW_CACHE_MAX)
		return;
	/* freed when the transaction ends: its runs may still point into the old definitions */
	if (cache_cxt != NULL && IsTransactionState())
		MemoryContextSetParent(cache_cxt, TopTransactionContext);
	else if (cache_cxt != NULL)
		MemoryContextDelete(cache_cxt);
	cache_cxt = AllocSetContextCreate(CacheMemoryContext, "notiflow workflow cache",
									  ALLOCSET_DEFAULT_SIZES);
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(int64);
	ctl.entrysize = sizeof(DefinitionEntry);
	ctl.hcxt = cache_cxt;
	definitions = hash_create("notiflow workflow definitions", 64, &ctl,
							  HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	ctl.keysize = WORKFLOW_KEY_MAX;
	ctl.entrysize = sizeof(CurrentEntry);
	currents = hash_create("notiflow current workflow versions", 64, &ctl,
						   HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	ctl.keysize = sizeof(VersionKey);
	ctl.entrysize = sizeof(VersionEntry);
	versions = hash_create("notiflow workflow version ids", 64, &ctl,
						   HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	cache_generation = gen;
}

/* Returns the current version of a workflow, reading it on first use. */
bool
workflow_cache_current(const char *key, WorkflowRef *ref)
{
	CurrentEntry *entry;
	bool		found;
	uint64		gen;

	workflow_cache_check();
	if (strlen(key) >= WORKFLOW_KEY_MAX)
		return workflow_repo_current(key, ref);
	entry = hash_search(currents, key, HASH_FIND, &found);
	if (found)
	{
		*ref = entry->ref;
		return true;
	}
	gen = cache_generation;
	if (!workflow_repo_current(key, ref))
		return false;

	/*
	 * Cached only when read under a snapshot of now: a repeatable-read
	 * transaction's snapshot may predate a version committed since, whose
	 * invalidation has been processed already; cached, that read would
	 * outlive the transaction.
	 */
	if (config_cache_generation() == gen && !IsolationUsesXactSnapshot())
	{
		entry = hash_search(currents, key, HASH_ENTER, &found);
		entry->ref = *ref;
	}
	return true;
}

/* Returns the id of a workflow's version, reading it on first use; 0 when there is none. */
int64
workflow_cache_version_id(const char *key, int version)
{
	VersionKey	vk;
	VersionEntry *entry;
	bool		found;
	uint64		gen;
	int64		id;

	workflow_cache_check();
	if (strlen(key) >= WORKFLOW_KEY_MAX)
		return workflow_repo_version_id(key, version);
	memset(&vk, 0, sizeof(vk));
	strlcpy(vk.key, key, WORKFLOW_KEY_MAX);
	vk.version = version;
	entry = hash_search(versions, &vk, HASH_FIND, &found);
	if (found)
		return entry->version_id;
	gen = cache_generation;
	id = workflow_repo_version_id(key, version);
	/* as in workflow_cache_current: a transaction's older snapshot may see a deleted version */
	if (id != 0 && config_cache_generation() == gen && !IsolationUsesXactSnapshot())
	{
		entry = hash_search(versions, &vk, HASH_ENTER, &found);
		entry->version_id = id;
	}
	return id;
}

/* Returns the compiled definition of a version, compiling it on first use. */
WorkflowDefinition *
workflow_cache_get(int64 version_id, const char *workflow_key, int version)
{
	DefinitionEntry *entry;
	bool		found;
	Jsonb	   *definition;
	List	   *problems = NIL;
	WorkflowDefinition *def;

	workflow_cache_check();
	entry = hash_search(definitions, &version_id, HASH_FIND, &found);
	if (found)
		return entry->def;

	definition = workflow_repo_definition(version_id);
	/* compiled under the caller's context: compiling may flush the cache */
	def = workflow_definition_compile(definition, CurrentMemoryContext, &problems, true);
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
	workflow_cache_check();
	MemoryContextSetParent(def->mcxt, cache_cxt);
	entry = hash_search(definitions, &version_id, HASH_ENTER, &found);
	entry->def = def;
	return def;
}
