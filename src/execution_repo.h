/*
 * execution_repo.h — data access for executions and their steps (executions.steps).
 */
#ifndef NOTIFLOW_EXECUTION_REPO_H
#define NOTIFLOW_EXECUTION_REPO_H

#include "postgres.h"
#include "nodes/pg_list.h"
#include "storage/itemptr.h"
#include "utils/hsearch.h"
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
	Jsonb	   *steps;			/* every step, an array (execution_repo_steps) */
	bool		inserted;		/* set by execution_repo_insert */
	ItemPointerData tid;		/* the row version locked by execution_repo_lock_many */
} ExecutionRecord;

/* One step (an element of executions.steps, a row of the view execution_steps). */
typedef struct StepRecord
{
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
	char	   *node_type;		/* NULL: not stored (an earlier release) */
	char	   *status;
	int			seq;
	Jsonb	   *output;			/* NULL: none */
	Jsonb	   *stored;			/* the element as stored */
} StoredStep;

/* The outcome of a stored step (sent, failed, completed...), or NULL. */
extern char *execution_repo_step_outcome(const StoredStep *s);

/*
 * The steps array of an execution created at created_at: the stored steps in
 * their order, each replaced by a record of the same node if there is one,
 * then the other records (StepRecord *).
 */
extern Jsonb *execution_repo_steps(List *stored, List *records, TimestampTz created_at);

/* Returns a new execution id. */
extern int64 execution_repo_next_id(void);

/* Serialises, until the transaction ends, the triggers that use one idempotency key. */
extern void execution_repo_lock_idempotency(const char *workflow_key, const char *key);

/* Returns the execution created with this idempotency key, or 0. */
extern int64 execution_repo_find_idempotent(const char *workflow_key, const char *key);

/*
 * The same for a batch, with one statement each: locks the keys (in sorted
 * order, so that concurrent batches cannot deadlock), then returns the
 * executions already created with them: a hash table keyed by the key
 * (char[NOTIFLOW_IDEMPOTENCY_KEY_LEN]; longer keys are not looked up here) whose
 * entries are IdempotentExecution.
 */
#define NOTIFLOW_IDEMPOTENCY_KEY_LEN 1024

typedef struct IdempotentExecution
{
	char		key[NOTIFLOW_IDEMPOTENCY_KEY_LEN];	/* hash key */
	int64		execution_id;
} IdempotentExecution;

extern HTAB *execution_repo_claim_idempotent(const char *workflow_key, List *keys);
extern int	execution_repo_key_lock_limit(void);

/*
 * Inserts new executions (a List of ExecutionRecord *, all of one workflow
 * version) with their deliveries (DeliveryRecord *), skipping executions
 * whose idempotency key is taken and their deliveries; sets
 * ->inserted.  keys_claimed: the caller locked and looked up every key in
 * this transaction and no key is there twice (the rows are then written
 * without the executor).  This relies on every writer of
 * executions.idempotency_key taking the same advisory lock first (they all go
 * through execution_repo_lock_idempotency or _claim_idempotent): a row
 * inserted with a key by other means would make such a trigger raise
 * unique_violation instead of returning the existing execution.
 */
extern void execution_repo_insert(List *executions, List *deliveries, bool keys_claimed);

/* An execution locked for a resume, with what the resume reads back. */
typedef struct LockedExecution
{
	ExecutionRecord rec;
	TimestampTz created_at;
	List	   *steps;			/* StoredStep *, in seq order */
} LockedExecution;

/*
 * Locks n executions (in id order, so that concurrent resumes cannot
 * deadlock) and reads them with their steps: one statement for the batch.
 * Returns a List of LockedExecution * in id order; missing ids are skipped.
 */
extern List *execution_repo_lock_many(int64 *ids, int n);

/*
 * Saves the status, context and steps of many executions after a resume (a
 * List of ExecutionRecord *, each locked by execution_repo_lock_many in this
 * transaction).
 */
extern void execution_repo_update_many(List *recs);

/*
 * Locks executions (FOR UPDATE, in id order) before their wait rows are
 * touched: the engine and emit_event take an execution's row before its
 * waits', and a path taking them the other way round could deadlock them.
 */
extern void execution_repo_lock_ids(int64 *ids, int n);

/* Makes waiting executions due now, for the timer (those waiting for nothing earlier). */
extern void execution_repo_wake_now(int64 *ids, int n);

/* Ends an execution that cannot go on (its resume raised error); false when it had ended already. */
extern bool execution_repo_fail(int64 id, const char *error);

/* Returns up to limit ids of waiting executions whose wake-up time has come. */
extern List *execution_repo_due(int limit, const int64 *passed_over, int n_passed_over);

#endif							/* NOTIFLOW_EXECUTION_REPO_H */
