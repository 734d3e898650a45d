/*
 * delivery_repo.h — data access for deliveries and the provider choice.
 */
#ifndef NOTIFLOW_DELIVERY_REPO_H
#define NOTIFLOW_DELIVERY_REPO_H

#include "postgres.h"
#include "nodes/pg_list.h"
#include "storage/itemptr.h"
#include "utils/hsearch.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

/* One deliveries row as the engine creates it. */
typedef struct DeliveryRecord
{
	int64		execution_id;
	const char *node_id;
	const char *channel;
	const char *provider;
	const char *recipient;
	Jsonb	   *content;
	const char *status;			/* queued, or failed when no provider */
	const char *last_error;
} DeliveryRecord;

/* An enabled provider of a channel. */
typedef struct ProviderRef
{
	char	   *name;
	char	   *kind;
} ProviderRef;

/* The state of one action node's deliveries. */
typedef struct DeliverySummary
{
	int			total;
	int			pending;		/* queued or sending */
	int			succeeded;		/* sent or delivered */
	Jsonb	   *deliveries;		/* [{id, status, provider, recipient, ...}] */
} DeliverySummary;

/* Fills the 8 array arguments of a deliveries insert; true when one is queued. */
extern bool delivery_repo_args(List *deliveries, Datum *args);

/* Inserts deliveries (a List of DeliveryRecord *). */
extern void delivery_repo_insert(List *deliveries);

/* Opens deliveries for direct inserts (row_writer.h); NULL when the statement must be used. */
extern struct RowWriter *delivery_repo_open_writer(void);

/* Inserts one delivery through that writer; returns true when it is queued. */
extern bool delivery_repo_write(struct RowWriter *writer, const DeliveryRecord *d);

/* Returns the enabled providers of a channel, best first (List of ProviderRef *). */
extern List *delivery_repo_providers(const char *channel);

/* Summarises the deliveries an action node created. */
extern void delivery_repo_summary(int64 execution_id, const char *node_id, DeliverySummary *out);

/*
 * Records the terminal or intermediate status of a delivery (and a provider
 * message id it lacks).  Returns true when the status changed and sets
 * *execution_id and *node_id; false when the delivery does not exist or the transition is
 * not allowed (it already ended).
 */
extern bool delivery_repo_set_status(int64 delivery_id, const char *status,
									 const char *provider_message_id, const char *error,
									 int64 *execution_id, char **node_id);

/* --- used by the dispatcher --- */

/* A delivery claimed for sending. */
typedef struct ClaimedDelivery
{
	int64		id;
	int64		execution_id;
	char	   *channel;
	char	   *provider;
	char	   *recipient;
	Jsonb	   *content;
	int			attempts;		/* before this one */
	int			provider_attempts;	/* before this one, with this provider */
	ItemPointerData tid;		/* the row version the claim left */
	TimestampTz lease;			/* the lease the claim gave it (its token) */
} ClaimedDelivery;

/*
 * A place in the queue's order, (next_attempt_at, id): where a claim may
 * start, or the last delivery it took.
 */
typedef struct QueuePosition
{
	TimestampTz at;
	int64		id;
} QueuePosition;

/* True when position a comes after position b in the queue's order. */
static inline bool
queue_position_after(const QueuePosition *a, const QueuePosition *b)
{
	return a->at > b->at || (a->at == b->at && a->id > b->id);
}

/*
 * Claims up to limit due deliveries for lease_ms (status sending): queued
 * ones and those whose lease ran out (their dispatcher died), in the queue's
 * order, after position after (all of the queue when NULL); a List of
 * ClaimedDelivery *.  Sets *last to the position of the last one claimed
 * (unchanged when none).
 */
extern List *delivery_repo_claim(int limit, int lease_ms, const QueuePosition *after,
								 QueuePosition *last);

/*
 * Milliseconds until the next queued delivery or delay is due, and when
 * drained (the last claim took fewer than it could) the next lease to run
 * out; -1 when none.  *overdue: the next delivery or delay was due already
 * when the transaction began.
 */
extern long delivery_repo_next_due_ms(bool drained, bool *overdue);

/* Records one attempt. */
extern void delivery_repo_record_attempt(int64 delivery_id, int attempt, const char *provider,
										 long status_code, int curl_code, double latency_ms,
										 const char *error_class, const char *error,
										 const char *excerpt);

/* Counts an attempt and queues the delivery again after delay_ms. */
extern void delivery_repo_retry_later(int64 delivery_id, int delay_ms, const char *error);

/* Queues the delivery again after delay_ms without counting an attempt (rate limit, half-open circuit). */
extern void delivery_repo_defer(int64 delivery_id, int delay_ms);

/*
 * Moves the delivery to the next enabled provider of its channel (of the same
 * kind for push and chat) that it has not tried; returns that provider's
 * name, or NULL when none is left.
 */
extern char *delivery_repo_fall_back(int64 delivery_id, const char *kind, const char *error);

/* Counts the final attempt and files a dead letter with the full request context. */
extern void delivery_repo_dead_letter(int64 delivery_id, const char *request_body, const char *error);

/* Marks the delivery's address invalid on its subscriber. */
extern void delivery_repo_mark_address_invalid(int64 delivery_id);

/* Counts a successful attempt (the status itself goes through delivery_finish). */
extern void delivery_repo_count_attempt(int64 delivery_id);

/*
 * True when the delivery is still sending under the lease its claim gave
 * (and locks it): a late result of a delivery that moved on (finished by an
 * event, claimed again after its lease ran out) must not move it back.
 */
extern bool delivery_repo_still_claimed(int64 delivery_id, TimestampTz lease);

/* Gives a just-claimed delivery a lease of lease_ms from now (new row version in *tid); false when gone. */
extern bool delivery_repo_extend_lease(int64 delivery_id, ItemPointer tid, int lease_ms,
									   TimestampTz *lease);

/* Locks deliveries in id order (ids sorted or not). */
extern void delivery_repo_lock(int64 *ids, int n);

/*
 * Status callbacks that came before a send was recorded (Twilio's, matched by
 * message id alone; 47_delivery_events.sql): applied for the deliveries just
 * marked sent, or (sweep) for every delivery that has its message id now.
 */
extern void delivery_repo_apply_early_events(int64 *ids, int n);
extern void delivery_repo_sweep_early_events(void);
extern bool delivery_repo_early_events_kept(void);

/* --- set-based recording: one statement per dispatcher batch --- */

/* One finished attempt, as delivery_attempts logs it. */
typedef struct AttemptRecord
{
	int64		delivery_id;
	int			attempt;
	const char *provider;
	long		status_code;	/* 0: no HTTP answer */
	int			curl_code;
	double		latency_ms;
	const char *error_class;
	const char *error;
	const char *excerpt;
} AttemptRecord;

/* A delivery whose status changed, for the engine to pass on (delivery_finished_many). */
typedef struct FinishedDelivery
{
	int64		delivery_id;
	int64		execution_id;
	char	   *node_id;
	const char *status;
	char	   *provider_message_id;
	char	   *error;
	/* complete: the row as it now is, the fields of its summary (delivery_repo_mark_sent) */
	bool		complete;
	char	   *provider;
	char	   *recipient;
	int			attempts;
	char	   *last_error;
} FinishedDelivery;

/* Logs n attempts with one statement. */
extern void delivery_repo_record_attempts(AttemptRecord *attempts, int n);

/*
 * Marks sent, and counts the successful attempt of, those of the n deliveries
 * that are still being sent (status sending) and still in the row version
 * their claim left (tids) with one statement; returns them (a List of
 * FinishedDelivery *).  A delivery not returned has moved on meanwhile (a
 * provider event overtook the dispatcher, a lease ran out): record it alone.
 */
extern List *delivery_repo_mark_sent(int64 *ids, char **message_ids, ItemPointerData *tids, int n);

/* One action node's summary inside delivery_repo_summaries' result. */
typedef struct NodeSummary
{
	char	   *node_id;
	DeliverySummary summary;
} NodeSummary;

/*
 * Summarises the deliveries of n executions with one statement: a List of
 * NodeSummary * per execution, in a hash table keyed by execution id (int64)
 * whose entries are { int64 execution_id; List *nodes; }.
 */
typedef struct ExecutionSummaries
{
	int64		execution_id;	/* hash key */
	List	   *nodes;
} ExecutionSummaries;

extern HTAB *delivery_repo_summaries(int64 *execution_ids, int n);

#endif							/* NOTIFLOW_DELIVERY_REPO_H */
