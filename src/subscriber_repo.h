/*
 * subscriber_repo.h — data access for subscribers.
 */
#ifndef NOTIFLOW_SUBSCRIBER_REPO_H
#define NOTIFLOW_SUBSCRIBER_REPO_H

#include "postgres.h"
#include "utils/jsonb.h"

typedef struct SubscriberInfo
{
	char	   *id;
	Jsonb	   *recipient;		/* {subscriber_id, name, email, phone, ...} */
	Jsonb	   *preferences;
	List	   *invalid_addresses;	/* char * */
} SubscriberInfo;

/* Loads a subscriber; false when there is none with this id. */
extern bool subscriber_repo_load(const char *id, SubscriberInfo *out);

/* Loads the subscribers among ids: one index scan, or one query (a List of SubscriberInfo *). */
extern List *subscriber_repo_load_many(List *ids);

#endif							/* NOTIFLOW_SUBSCRIBER_REPO_H */
