/*
 * provider_cache.c — per-backend cache of the enabled providers of each
 * channel, used by the engine to pick a delivery's provider.  Dropped when
 * config_cache_generation() moves (a provider changed anywhere).
 */
#include "postgres.h"

#include "access/xact.h"
#include "utils/memutils.h"

#include "config_cache.h"
#include "delivery_repo.h"
#include "provider_cache.h"

#define N_CHANNELS 5

static MemoryContext cache_cxt = NULL;
static uint64 cache_generation = 0;
static List *lists[N_CHANNELS];
static bool loaded[N_CHANNELS];

/* Copies a provider list into the cache's context. */
static List *
copy_providers(List *providers)
{
	List	   *copy = NIL;
	ListCell   *lc;

	foreach(lc, providers)
	{
		ProviderRef *p = lfirst(lc);
		ProviderRef *c = palloc(sizeof(ProviderRef));

		c->name = pstrdup(p->name);
		c->kind = pstrdup(p->kind);
		copy = lappend(copy, c);
	}
	return copy;
}

List *
provider_cache_channel(NotiflowChannel channel)
{
	uint64		gen = config_cache_generation();
	List	   *providers;
	MemoryContext old;

	if (cache_cxt == NULL || gen != cache_generation)
	{
		/*
		 * Freed when the transaction ends: the deliveries a run made before
		 * (written later, with the run) point to their provider's name here.
		 */
		if (cache_cxt != NULL && IsTransactionState())
			MemoryContextSetParent(cache_cxt, TopTransactionContext);
		else if (cache_cxt != NULL)
			MemoryContextDelete(cache_cxt);
		cache_cxt = AllocSetContextCreate(CacheMemoryContext, "notiflow provider cache",
										  ALLOCSET_SMALL_SIZES);
		memset(lists, 0, sizeof(lists));
		memset(loaded, 0, sizeof(loaded));
		cache_generation = gen;
	}
	if (loaded[channel])
		return lists[channel];

	providers = delivery_repo_providers(notiflow_channel_names[channel]);
	if (config_cache_generation() != gen)
		return providers;		/* changed while reading: use, don't keep */
	old = MemoryContextSwitchTo(cache_cxt);
	lists[channel] = copy_providers(providers);
	MemoryContextSwitchTo(old);
	loaded[channel] = true;
	return lists[channel];
}
