/*
 * workflow_repo.h — data access for workflows and workflow_versions.
 * The only module that holds SQL about those two tables.
 */
#ifndef NOTIFLOW_WORKFLOW_REPO_H
#define NOTIFLOW_WORKFLOW_REPO_H

#include "postgres.h"
#include "utils/jsonb.h"

/* What a trigger needs to know about a workflow. */
typedef struct WorkflowRef
{
	bool		active;
	int			version;		/* the current version */
	int64		version_id;		/* identifies that version's definition */
} WorkflowRef;

/* Reads the current version of workflow key; false when there is none. */
extern bool workflow_repo_current(const char *key, WorkflowRef *ref);

/* Returns the definition of a version (copied into the caller's context). */
extern Jsonb *workflow_repo_definition(int64 version_id);

/* The id of version version of workflow key, or 0 when there is none. */
extern int64 workflow_repo_version_id(const char *key, int version);

/*
 * Stores definition as the new current version of key (creating the
 * workflow) and returns its number; an unchanged definition returns the
 * current version without creating one.
 */
extern int	workflow_repo_put(const char *key, const char *name, Jsonb *definition);

#endif							/* NOTIFLOW_WORKFLOW_REPO_H */
