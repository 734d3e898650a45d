/*
 * workflow_cache.h — per-backend cache of compiled workflow versions.
 */
#ifndef NOTIFLOW_WORKFLOW_CACHE_H
#define NOTIFLOW_WORKFLOW_CACHE_H

#include "workflow_definition.h"

/*
 * Returns the compiled definition of a workflow version (by its version id),
 * compiling and caching it on first use.  The caller must be connected to SPI.
 */
extern WorkflowDefinition *workflow_cache_get(int64 version_id, const char *workflow_key,
											  int version);

#endif							/* NOTIFLOW_WORKFLOW_CACHE_H */
