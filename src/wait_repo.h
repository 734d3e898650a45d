/*
 * wait_repo.h — data access for wait nodes: the event inbox and execution_waits.
 */
#ifndef NOTIFLOW_WAIT_REPO_H
#define NOTIFLOW_WAIT_REPO_H

#include "postgres.h"
#include "nodes/pg_list.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

/* Serialises everything about one correlation key until the transaction ends. */
extern void wait_repo_lock_key(const char *key);
extern bool wait_repo_try_lock_key(const char *key);

/*
 * Returns the oldest live inbox event of each of the names that none of the
 * execution's waits_before (ids of the wait nodes this one is reached from)
 * took: an object {name: data}, and in *inbox_ids their ids (an int8[], for
 * wait_repo_insert).  The events stay in the inbox, for the other waits
 * reached before they expire.
 */
extern Jsonb *wait_repo_take_inbox(const char *key, List *names, int64 execution_id, List *waits_before,
								   Datum *inbox_ids);

/* Records a wait (status waiting or completed) and the inbox events it took. */
extern void wait_repo_insert(int64 execution_id, const char *node_id, const char *key, List *names,
							 Jsonb *received, const char *status, TimestampTz deadline, Datum inbox_ids);

/*
 * Locks a wait and returns its status and received events; a waiting wait
 * whose deadline passed becomes 'timeout'.
 */
extern char *wait_repo_settle(int64 execution_id, const char *node_id, Jsonb **received,
							  TimestampTz *deadline);

/*
 * Gives an event to the waiting waits of one execution that expect it
 * (delivery outcomes); true when it completed one of them (the execution has
 * a wait to settle).
 */
extern bool wait_repo_execution_event(int64 execution_id, const char *name, Jsonb *data);

/*
 * Of n executions, returns those with a waiting wait (a List of int64 *),
 * with one statement: only these can take a delivery outcome event.
 */
extern List *wait_repo_waiting_executions(int64 *execution_ids, int n);

#endif							/* NOTIFLOW_WAIT_REPO_H */
