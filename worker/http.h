/*
 * http.h — the dispatcher's libcurl multi driver: many transfers in flight on
 * the worker's own thread, sockets watched through one epoll descriptor that
 * the worker waits on together with its latch.
 */
#ifndef NOTIFLOW_HTTP_H
#define NOTIFLOW_HTTP_H

#include "postgres.h"
#include "nodes/pg_list.h"

#include "provider.h"

typedef struct HttpTransfer HttpTransfer;

/* Creates the multi handle and the epoll descriptor. */
extern void http_init(void);

/* Applies notiflow.http_concurrency to the connection limits (after a reload). */
extern void http_configure(void);

/* The descriptor to wait on (readable when some transfer can progress). */
extern int	http_wait_fd(void);

/* Milliseconds until curl's next timer, or -1 when none. */
extern long http_timeout_ms(void);

/* Number of transfers in flight. */
extern int	http_in_flight(void);

/*
 * Starts sending req for job.  The request and job must live until the
 * transfer completes (allocate them in a context that outlives transactions).
 */
extern HttpTransfer *http_start(const DeliveryJob *job, ProviderRequest *req, void *owner);

/*
 * Lets curl progress on ready sockets and due timers and returns the owners
 * of the transfers that completed (their ProviderResponse filled in *resp of
 * each; see http_transfer_response).
 */
extern List *http_drive(void);

/* The response of a completed transfer (allocated in the current context by http_drive). */
extern ProviderResponse *http_transfer_response(HttpTransfer *t);

/* True when the transfer was refused because a URL from data resolved to a private address. */
extern bool http_transfer_refused_private(HttpTransfer *t);

/* The owner passed to http_start. */
extern void *http_transfer_owner(HttpTransfer *t);

/* Frees a completed transfer. */
extern void http_transfer_free(HttpTransfer *t);

#endif							/* NOTIFLOW_HTTP_H */
