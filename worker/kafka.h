/*
 * kafka.h — Kafka triggers.
 *
 *   kafka_subscription.c  subscribe_kafka / unsubscribe_kafka, the validated
 *                         configuration of a subscription, the sync worker
 *                         that tells the launcher which consumers to run
 *   kafka_consumer.c      the consumer worker: librdkafka, rebalances, the
 *                         batch transaction with its offsets, consumer state
 *   kafka_message.c       what one batch does with its messages: parse,
 *                         filter, extract, trigger or emit, dead letters
 *   kafka_repo.c          the SQL of kafka_offsets, the consumer state
 *                         tables and Kafka dead letters
 */
#ifndef NOTIFLOW_KAFKA_H
#define NOTIFLOW_KAFKA_H

#include "postgres.h"

#include <librdkafka/rdkafka.h>

#include "datatype/timestamp.h"
#include "nodes/pg_list.h"
#include "utils/jsonb.h"
#include "utils/jsonpath.h"

/* What a subscription does with a message. */
typedef enum KafkaMode
{
	KAFKA_MODE_TRIGGER,			/* start an execution of workflow_key */
	KAFKA_MODE_EVENT			/* notiflow.emit_event(): wake waiting executions */
} KafkaMode;

/* Where an execution's idempotency key comes from. */
typedef enum KafkaKeySource
{
	KAFKA_KEY_POSITION,			/* "topic/partition/offset" (default) */
	KAFKA_KEY_PATH,				/* options.idempotency_key */
	KAFKA_KEY_NONE				/* options.idempotency_key: null */
} KafkaKeySource;

/* A subscription's validated configuration (options compiled). */
typedef struct KafkaSubscription
{
	int64		id;
	int32		revision;
	char	   *name;
	char	   *brokers;
	List	   *topics;			/* of C strings */
	char	   *workflow_key;	/* NULL in event mode */
	char	   *group_id;
	KafkaMode	mode;
	JsonPath   *filter;			/* NULL: every message */
	JsonPath   *payload;		/* NULL: the whole message */
	JsonPath   *recipient;		/* NULL: the workflow's trigger node decides */
	KafkaKeySource key_source;
	JsonPath   *idempotency_key;	/* with KAFKA_KEY_PATH */
	JsonPath   *event_name;		/* event mode */
	JsonPath   *correlation_key;	/* event mode */
	const char *start;			/* auto.offset.reset: earliest or latest */
	int			max_message_bytes;
	int			batch_size;
	int			batch_time_ms;
	List	   *rdkafka_names;	/* extra librdkafka properties, in order */
	List	   *rdkafka_values;
} KafkaSubscription;

/* What the consumer counts (since it started). */
typedef struct KafkaCounters
{
	int64		messages;
	int64		executions;
	int64		events;
	int64		filtered;
	int64		dead_letters;
	int64		batches_split;	/* batches whose trigger or events raised, run again message by message */
} KafkaCounters;

/* One assigned partition as the consumer publishes it. */
typedef struct KafkaPartitionState
{
	char	   *topic;
	int32		partition;
	bool		paused;
	int64		low_watermark;	/* -1: unknown */
	int64		high_watermark; /* -1: unknown */
} KafkaPartitionState;

/* The consumer's state as it publishes it. */
typedef struct KafkaConsumerState
{
	const char *status;			/* starting, running, broker_down, backoff */
	const char *error;			/* the current problem, or NULL */
	const char *last_error;
	TimestampTz last_error_at;
	TimestampTz started_at;
	KafkaCounters counters;
	KafkaPartitionState *partitions;
	int			npartitions;
} KafkaConsumerState;

/* kafka_subscription.c */

/*
 * Validates and compiles a subscription's settings; raises 22023 with a
 * DETAIL naming the field.  Checks nothing in the catalogs.
 */
extern KafkaSubscription *kafka_subscription_parse(const char *name, const char *brokers, List *topics,
												   const char *workflow_key, Jsonb *options);

/*
 * Sets on conf the properties notiflow's consumer relies on (but
 * bootstrap.servers), after the subscription's own, which may not replace
 * them: they are refused, but librdkafka also takes a topic property with a
 * "topic." prefix, or under another name.  The consumer sets them, and so
 * does the check of a subscription's properties together.  On an error,
 * conf is destroyed.
 */
extern void kafka_conf_set_own(rd_kafka_conf_t *conf, const KafkaSubscription *sub);

/* Loads subscription id (in the current transaction); NULL when it is gone. */
extern KafkaSubscription *kafka_subscription_load(int64 id);

/* True when subscription id still exists with this revision (false also without the extension). */
extern bool kafka_subscription_current(int64 id, int32 revision);

/* kafka_message.c */

/*
 * Processes a batch of messages of sub in the current transaction (SPI
 * connected): each message is parsed, filtered and extracted in its own
 * subtransaction, the executions are started together (one by one when that
 * fails), and a message that cannot be processed becomes a dead letter.
 * An error that may pass (error_is_transient) is raised, for the batch to
 * run again after a backoff; with alone (a message read by itself after
 * failed batches), out of memory is not: it makes that message a dead
 * letter.
 * Adds to *counters.
 */
extern void kafka_messages_process(KafkaSubscription *sub, rd_kafka_message_t **messages, int n,
								   KafkaCounters *counters, bool alone);

/* kafka_repo.c */

/* Returns the stored next offset of a partition for group, or -1 when none is stored. */
extern int64 kafka_repo_offset(const char *group_id, const char *topic, int32 partition);

/*
 * Stores next_offset for a partition of group if the stored one is still
 * expected (-1: none stored); false when another consumer moved it.
 */
extern bool kafka_repo_store_offset(const char *group_id, const char *topic, int32 partition,
									int64 expected, int64 next_offset, const char *subscription);

/* Files a Kafka dead letter. */
extern void kafka_repo_dead_letter(const char *reference, const char *data, size_t len,
								   Jsonb *details, const char *error);

/* Writes the consumer's state and its partitions' watermarks. */
extern void kafka_repo_publish_state(const char *subscription, const KafkaConsumerState *state);

#endif							/* NOTIFLOW_KAFKA_H */
