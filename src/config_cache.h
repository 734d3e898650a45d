/*
 * config_cache.h — invalidation of the per-backend caches of configuration
 * (workflows, workflow versions, providers).
 */
#ifndef NOTIFLOW_CONFIG_CACHE_H
#define NOTIFLOW_CONFIG_CACHE_H

#include "postgres.h"

/*
 * Returns a number that changes whenever notiflow.workflows,
 * notiflow.workflow_versions or notiflow.providers may have changed (in this
 * or another committed transaction), or the extension was dropped.  A cache
 * filled under one generation is valid while the generation stays the same.
 */
extern uint64 config_cache_generation(void);

#endif							/* NOTIFLOW_CONFIG_CACHE_H */
