/*
 * worker.h — the background workers: a launcher (static worker) that starts
 * and supervises the dispatchers and the Kafka consumers (dynamic workers) in
 * notiflow.database_name, and the shared memory through which transactions
 * wake them at commit.
 */
#ifndef NOTIFLOW_WORKER_H
#define NOTIFLOW_WORKER_H

#include "postgres.h"

#include "miscadmin.h"
#include "datatype/timestamp.h"
#include "port/atomics.h"
#include "storage/latch.h"
#include "storage/spin.h"

#define NOTIFLOW_MAX_DISPATCHERS 32
#define NOTIFLOW_MAX_KAFKA_CONSUMERS 64
#define NOTIFLOW_KAFKA_NAME_LEN 64

/* Per-dispatcher state in shared memory. */
typedef struct DispatcherSlot
{
	pid_t		pid;			/* 0 when the slot is free */
	Latch	   *latch;
	Oid			database;		/* the database it is connected to */
	TimestampTz started_at;
	pg_atomic_uint64 claimed;
	pg_atomic_uint64 claimed_after_front;	/* by claims that started at the claim front */
	pg_atomic_uint64 sent;
	pg_atomic_uint64 retried;
	pg_atomic_uint64 failed;
	pg_atomic_uint64 in_flight;
	pg_atomic_uint64 record_retries;	/* record transactions run again after a lock conflict */
} DispatcherSlot;

/* A Kafka subscription that should have a consumer (published by the sync worker). */
typedef struct KafkaWanted
{
	int64		subscription_id;
	int32		revision;		/* bumped by every change of the subscription */
	char		name[NOTIFLOW_KAFKA_NAME_LEN + 1];
} KafkaWanted;

/* Per-consumer state: the launcher fills want, the consumer pid and latch. */
typedef struct KafkaConsumerSlot
{
	KafkaWanted want;			/* subscription_id 0 when the slot is free */
	pid_t		pid;
	Latch	   *latch;
	Oid			database;		/* the database it is connected to */
} KafkaConsumerSlot;

/* A backend dropping the workers' database (DROP DATABASE waits for them to leave). */
typedef struct DroppingMark
{
	pid_t		pid;			/* 0 when the mark is free */
	Oid			database;
} DroppingMark;

#define NOTIFLOW_MAX_DROPPING 8

/*
 * A provider's rate_per_second token bucket, shared by the dispatchers
 * (rate_mutex): one bucket per provider, so the rate is the provider's
 * whatever the number of dispatchers and however the work falls to them.
 */
typedef struct RateBucket
{
	char		name[NAMEDATALEN + 1];	/* the provider (up to 64 characters); "" when free */
	double		tokens;
	TimestampTz refilled_at;
	TimestampTz next_slot;		/* the last send time handed to a delivery deferred here */
} RateBucket;

#define NOTIFLOW_MAX_RATE_BUCKETS 256

typedef struct NotiflowShared
{
	slock_t		mutex;
	pid_t		launcher_pid;
	Latch	   *launcher_latch;
	DroppingMark dropping[NOTIFLOW_MAX_DROPPING];	/* (mutex) workers leave a database being dropped */
	DispatcherSlot dispatchers[NOTIFLOW_MAX_DISPATCHERS];

	/*
	 * The dispatchers' claim front (mutex): the queue position, (due time,
	 * id), of the last delivery taken by a claim that filled its batch;
	 * invalid once a claim came back short.  See claim() in dispatcher.c.
	 */
	bool		claim_front_valid;
	TimestampTz claim_front_at;
	int64		claim_front_id;

	/*
	 * Kafka: kafka_generation moves at every commit that changed
	 * notiflow.kafka_subscriptions; the sync worker reads the table and
	 * publishes kafka_wanted with the generation it read (mutex).
	 */
	pg_atomic_uint64 kafka_generation;
	bool		kafka_synced;	/* kafka_wanted has been published */
	uint64		kafka_synced_generation;
	int			kafka_wanted_count;
	KafkaWanted kafka_wanted[NOTIFLOW_MAX_KAFKA_CONSUMERS];
	KafkaConsumerSlot kafka_consumers[NOTIFLOW_MAX_KAFKA_CONSUMERS];

	slock_t		rate_mutex;
	RateBucket	rate_buckets[NOTIFLOW_MAX_RATE_BUCKETS];
} NotiflowShared;

/* NULL unless the library was preloaded. */
extern NotiflowShared *notiflow_shared;

/* GUCs for the workers (defined in notiflow.c). */
extern char *notiflow_database_name;
extern int	notiflow_dispatch_workers;
extern int	notiflow_http_concurrency;
extern int	notiflow_dispatch_batch_size;
extern int	notiflow_lease_ms;
extern int	notiflow_stop_timeout_ms;

/*
 * A delivery's lease is at least its provider's timeout_ms and this margin
 * (the claim before the request, the record after it):
 * notiflow.provider_lease_ms() in SQL, provider_lease_ms() in the dispatcher.
 */
#define NOTIFLOW_LEASE_MARGIN_MS 5000
extern bool notiflow_allow_private_urls;
extern int	notiflow_circuit_failures;
extern int	notiflow_circuit_cooldown_ms;

/* Registers the launcher and the shared memory hooks (preload only). */
extern void notiflow_workers_register(void);

/* Wakes every dispatcher when the current transaction commits. */
extern void notiflow_wake_dispatchers_at_commit(void);

/* Asks the launcher to read the Kafka subscriptions again when the current transaction commits. */
extern void notiflow_kafka_sync_at_commit(void);

/* Asks the launcher to read the Kafka subscriptions again now. */
extern void notiflow_kafka_request_sync(void);

/* Whether a live backend is dropping a database (InvalidOid: any database). */
extern bool notiflow_database_dropping(Oid database);

/* Background worker entry points. */
extern PGDLLEXPORT void notiflow_launcher_main(Datum arg);
extern PGDLLEXPORT void notiflow_dispatcher_main(Datum arg);
extern PGDLLEXPORT void notiflow_kafka_sync_main(Datum arg);
extern PGDLLEXPORT void notiflow_kafka_consumer_main(Datum arg);

/* worker_memory.c: keeps the C heap's pages between batches (dispatchers, Kafka consumers). */
extern void notiflow_worker_keep_memory(void);
/* worker_memory.c: no JIT, no parallel plans in a connected dispatcher's session. */
extern void notiflow_worker_plan_settings(void);
extern void notiflow_worker_session_settings(void);

/*
 * A query cancel (pg_cancel_backend) that comes while a worker runs no
 * statement cancels nothing: it is dropped before the worker's loop checks
 * for interrupts (raised there, outside any transaction, it ended the
 * worker, whose requests in flight were then sent again after their lease).
 * One that comes during a batch rolls that batch back, to be run again.
 */
static inline void
notiflow_worker_drop_idle_cancel(void)
{
	QueryCancelPending = false;
}

#endif							/* NOTIFLOW_WORKER_H */
