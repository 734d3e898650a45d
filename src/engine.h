/*
 * engine.h — the workflow engine: runs executions of compiled workflow
 * versions inside the caller's transaction.
 *
 * Entry points connect to SPI themselves, so they can be called from SQL
 * functions and from background workers alike (inside a transaction).
 */
#ifndef NOTIFLOW_ENGINE_H
#define NOTIFLOW_ENGINE_H

#include "postgres.h"
#include "nodes/pg_list.h"
#include "utils/jsonb.h"

/* One execution to start. */
typedef struct TriggerRequest
{
	Jsonb	   *payload;
	Jsonb	   *recipient;		/* may be NULL */
	char	   *idempotency_key;	/* may be NULL */
	int64		execution_id;	/* out */
} TriggerRequest;

/*
 * Starts one execution per request of workflow_key (its current version):
 * runs every node it can reach now, writes the execution, its steps and its
 * deliveries, and sets each request's execution_id (an existing one when the
 * idempotency key was used before).  Bad input raises an error and creates
 * nothing.
 */
extern void engine_trigger(const char *workflow_key, TriggerRequest *requests, int n);

/*
 * Resumes an execution whose waiting steps may be done (deliveries finished,
 * delay over, events received) and runs on from them.  Returns the
 * execution's status after the resume, or NULL when it does not exist.  One
 * that cannot resume (its workflow version was deleted, say) is marked
 * failed, with the reason, and "failed" is returned: the caller's
 * transaction goes on (emit_event's other executions with it).  Lock
 * conflicts, cancels and transient errors (disk full, I/O; not out of
 * memory, which one huge execution causes every time) are raised, for the
 * caller to try again.
 */
extern char *execution_resume(int64 execution_id);

/*
 * While true, execution_resume() runs without a subtransaction of its own
 * and raises whatever the resume raises, for a caller that isolates a whole
 * batch itself and runs it again piece by piece when it fails (the Kafka
 * consumer's events).  Reset it in PG_FINALLY.
 */
extern bool execution_resume_raises;

/*
 * Set once by a worker that must never wait for a correlation key another
 * session holds (a dispatcher: while it waited, its requests in flight would
 * stall and be sent again).  Its resumes take keys without waiting; an
 * execution whose key is held is left, with the outcomes of its deliveries
 * given to its waits, due at once for the timer, which tries again later.
 */
extern bool engine_never_waits_for_keys;

/*
 * Resumes up to limit waiting executions whose delay is over; returns how
 * many were due, and sets *resumed (when not NULL) to how many of them were
 * resumed (not those left for a later round: another transaction held them).
 */
extern int	execution_resume_due(int limit, int *resumed);

/*
 * Records a delivery's status (as a provider reported it) and, when that ends
 * its action node's wait, resumes the execution.  Returns false when the
 * delivery does not exist or had already ended.
 */
extern bool delivery_finish(int64 delivery_id, const char *status,
							const char *provider_message_id, const char *error);

/*
 * Passes on deliveries whose status the caller (the dispatcher) has already
 * recorded set-based (a List of FinishedDelivery *, delivery_repo.h): their
 * outcome events go to the waits that expect them, and their executions
 * resume, all of them in one batch.  An execution whose resume raises an
 * error is marked failed (with a WARNING) without failing the others.
 */
extern void deliveries_finished(List *finished);

#endif							/* NOTIFLOW_ENGINE_H */
