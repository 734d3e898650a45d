/*
 * execution_repo.h — data access for executions and execution_steps.
 */
#ifndef NOTIFLOW_EXECUTION_REPO_H
#define NOTIFLOW_EXECUTION_REPO_H

#include "postgres.h"
#include "nodes/pg_list.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

/* One executions row as the engine writes it. */
typedef struct ExecutionRecord
{
	int64		id;
	char	   *workflow_key;
	int			version;
	const char *status;
	Jsonb	   *payload;
	Jsonb	   *context;
	Jsonb	   *recipient;
	char	   *subscriber_id;
	char	   *idempotency_key;
	char	   *error;
	TimestampTz wake_at;		/* 0: none */
	bool		inserted;		/* set by execution_repo_insert */
} ExecutionRecord;

/* One execution_steps row. */
typedef struct StepRecord
{
	int64		execution_id;
	const char *node_id;
	const char *node_type;
	int			seq;
	const char *status;
	const char *outcome;
	Jsonb	   *output;
	const char *error;
	TimestampTz started_at;
	TimestampTz finished_at;	/* 0: not finished */
} StepRecord;

/* A stored step, as read back when an execution resumes. */
typedef struct StoredStep
{
	char	   *node_id;
	char	   *status;
	int			seq;
	Jsonb	   *output;
} StoredStep;

/* Returns a new execution id. */
extern int64 execution_repo_next_id(void);

/* Serialises, until the transaction ends, the triggers that use one idempotency key. */
extern void execution_repo_lock_idempotency(const char *workflow_key, const char *key);

/* Returns the execution created with this idempotency key, or 0. */
extern int64 execution_repo_find_idempotent(const char *workflow_key, const char *key);

/*
 * Inserts new executions (a List of ExecutionRecord *, all of one workflow
 * version) with their steps (StepRecord *) and deliveries (DeliveryRecord *)
 * in one statement, skipping executions whose idempotency key is taken and
 * their rows; sets ->inserted.
 */
extern void execution_repo_insert(List *executions, List *steps, List *deliveries);

/* Locks an execution for a resume and fills rec; false when it does not exist. */
extern bool execution_repo_lock(int64 id, ExecutionRecord *rec, TimestampTz *created_at);

/* Saves the state of an execution after a resume. */
extern void execution_repo_update(ExecutionRecord *rec);

/* Reads the steps of an execution (a List of StoredStep *). */
extern List *execution_repo_steps(int64 execution_id);

/* Inserts or updates steps (a List of StepRecord *). */
extern void execution_repo_save_steps(List *steps);

/* Returns up to limit ids of waiting executions whose wake-up time has come. */
extern List *execution_repo_due(int limit);

#endif							/* NOTIFLOW_EXECUTION_REPO_H */
