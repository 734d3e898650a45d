/*
 * delivery_repo.h — data access for deliveries and the provider choice.
 */
#ifndef NOTIFLOW_DELIVERY_REPO_H
#define NOTIFLOW_DELIVERY_REPO_H

#include "postgres.h"
#include "nodes/pg_list.h"
#include "utils/jsonb.h"

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

/* Inserts deliveries (a List of DeliveryRecord *). */
extern void delivery_repo_insert(List *deliveries);

/* Returns the enabled providers of a channel, best first (List of ProviderRef *). */
extern List *delivery_repo_providers(const char *channel);

/* Summarises the deliveries an action node created. */
extern void delivery_repo_summary(int64 execution_id, const char *node_id, DeliverySummary *out);

/*
 * Records the terminal or intermediate status of a delivery.  Returns false
 * when the delivery does not exist or was already terminal; otherwise sets
 * *execution_id.
 */
extern bool delivery_repo_set_status(int64 delivery_id, const char *status,
									 const char *provider_message_id, const char *error,
									 int64 *execution_id);

#endif							/* NOTIFLOW_DELIVERY_REPO_H */
