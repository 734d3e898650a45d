/*
 * workflow_cache.h — per-backend caches of workflows: current versions, version ids and compiled definitions.
 */
#ifndef NOTIFLOW_WORKFLOW_CACHE_H
#define NOTIFLOW_WORKFLOW_CACHE_H

#include "workflow_definition.h"
#include "workflow_repo.h"

/* Reads the current version of workflow key (cached); false when there is none. */
extern bool workflow_cache_current(const char *key, WorkflowRef *ref);

/* The id of version version of workflow key (cached), or 0 when there is none. */
extern int64 workflow_cache_version_id(const char *key, int version);

/*
 * Returns the compiled definition of a workflow version (by its version id),
 * compiling and caching it on first use.  The caller must be connected to SPI.
 */
extern WorkflowDefinition *workflow_cache_get(int64 version_id, const char *workflow_key,
											  int version);

#endif							/* NOTIFLOW_WORKFLOW_CACHE_H */
