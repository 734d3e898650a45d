/*
 * kafka_consumer.c — the "notiflow kafka consumer" background worker: one per
 * row of notiflow.kafka_subscriptions (launcher.c starts and stops them),
 * turning Kafka messages into executions exactly once.
 *
 * Data flow, all in this worker's one thread:
 *
 *   librdkafka high-level consumer (consumer group, eager assignor)
 *     │  rd_kafka_consumer_poll() serves messages, rebalances, errors,
 *     │  statistics and librdkafka's log lines (log.queue) from one queue
 *     ▼
 *   a batch: up to options.batch_size messages or options.batch_time_ms
 *     ▼
 *   one transaction: each message in a subtransaction (kafka_message.c),
 *   dead letters for the bad ones, then the next offset of every partition
 *   it advanced is stored in notiflow.kafka_offsets (compare-and-set,
 *   kafka_repo.c) → commit
 *     ▼
 *   rd_kafka_commit() (asynchronous) of the same offsets, for lag tools
 *
 * Offsets are the database's: on a rebalance the assigned partitions start
 * from kafka_offsets (rd_kafka_assign with those offsets; a partition with
 * none stored starts from the group's Kafka offset, else options.start), so
 * executions and offsets commit or vanish together and a crash, a restart or
 * a rebalance neither loses nor repeats a message.
 *
 * The librdkafka callbacks only record what happened (the record below);
 * they run inside rd_kafka_consumer_poll() in this thread and call nothing
 * of PostgreSQL.  The loop acts on the record after each poll: a revocation
 * is applied after the batch in progress committed, an assignment after its
 * offsets were read.  Background callbacks are never enabled.
 *
 * Waiting: librdkafka writes a byte into a pipe when the consumer queue
 * becomes non-empty (rd_kafka_queue_io_event_enable); the worker sleeps on
 * its latch and that pipe together, so it neither polls nor sleeps through
 * a message.
 *
 * Failures: a message that fails is a dead letter (kafka_message.c).  When
 * the whole transaction fails (the database refuses it, or the offsets were
 * moved by another consumer of the group), it rolls back, the partitions are
 * paused for a backoff (1 s doubling to 30 s), then consumption rewinds to
 * the stored offsets.  After three such failures in a row, the failed
 * batch's messages are read one per transaction, so that a message that
 * runs out of memory every time becomes a dead letter instead of holding
 * its partition.  A broker that is down is retried by librdkafka with
 * its own backoff; the state says "broker_down" until a broker is up again.
 *
 * State: about once a second (when something changed) the worker writes
 * notiflow.kafka_consumer_state and kafka_partition_state (watermarks from
 * librdkafka's last fetch responses, or asked from the broker for paused
 * partitions, which fetch nothing); notiflow.kafka_lag joins them with the
 * offsets.
 */
#include "postgres.h"

#include <fcntl.h>
#include <unistd.h>

#include "access/xact.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "execution_repo.h"
#include "kafka.h"
#include "spi_util.h"
#include "worker.h"

#define STATE_INTERVAL_MS 1000
#define BACKOFF_MIN_MS 1000
#define BACKOFF_MAX_MS 30000
/* failed batch transactions in a row after which the failed batch's messages are read one at a time */
#define ISOLATE_AFTER 3

/*
 * Bytes of message values a batch takes at most (it ends after the message
 * that reaches it): batch_size messages of max_message_bytes each, parsed and
 * kept until the batch commits, would need gigabytes.
 */
#define BATCH_MAX_BYTES ((size_t) 64 * 1024 * 1024)
#define CLOSE_TIMEOUT_MS 5000
#define PIN_TIMEOUT_MS 5000		/* asking the broker where "latest" is */
#define WATERMARK_QUERY_BUDGET_MS 500	/* per publication, for paused partitions */
#define LOG_RING 64
#define ERROR_LEN 512

/* One partition assigned to this consumer. */
typedef struct Assigned
{
	char	   *topic;
	int32		partition;
	int64		stored;			/* next_offset in kafka_offsets as last read or written; -1: none */
	int64		next;			/* the next offset after the batch being built; -1: none taken */
	bool		paused;
	bool		seeked;			/* nothing read since it was assigned or rewound */
	int64		published_low;	/* the watermarks last published */
	int64		published_high;
} Assigned;

/*
 * What the librdkafka callbacks recorded.  They run in this thread inside
 * rd_kafka_consumer_poll() and use no PostgreSQL function (no palloc, no
 * ereport): the loop reads this after each poll.
 */
static struct
{
	rd_kafka_topic_partition_list_t *assign;	/* an assignment to apply (a copy), or NULL */
	bool		revoke;			/* the assignment is to be revoked */
	bool		brokers_down;	/* _ALL_BROKERS_DOWN came and no broker is known up since */
	char		brokers_down_reason[ERROR_LEN];
	bool		error_pending;
	char		error[ERROR_LEN];
	bool		fatal;
	char	   *stats;			/* the latest statistics JSON (librdkafka's memory), or NULL */
	int			nlogs;
	int			logs_dropped;
	struct
	{
		char		facility[32];
		char		text[ERROR_LEN];
	}			logs[LOG_RING];
} recorded;

static KafkaSubscription *sub = NULL;
static MemoryContext consumer_cxt = NULL;	/* the worker's lifetime */
static MemoryContext loop_cxt = NULL;	/* one turn of the loop */
static KafkaConsumerSlot *my_slot = NULL;
static rd_kafka_t *rk = NULL;
static rd_kafka_queue_t *queue = NULL;
static int	wake_pipe[2] = {-1, -1};
static WaitEventSet *wait_set = NULL;

static Assigned *assigned = NULL;
static int	nassigned = 0;
static rd_kafka_message_t **messages = NULL;	/* the batch being built */
static int	nmessages = 0;		/* held in messages (librdkafka waits for them at exit) */

static bool ever_assigned = false;
static bool rewind_needed = false;
static TimestampTz backoff_until = 0;
static int	backoff_ms = 0;
static int	failed_batches = 0;	/* batch transactions that failed in a row */
static int	isolate_left = 0;	/* messages still to read one per transaction */
static TimestampTz state_due = 0;
static bool state_dirty = true;
static KafkaCounters counters;
static TimestampTz started_at;
static char backoff_error[ERROR_LEN];
static char broker_error[ERROR_LEN];
static char topic_error[ERROR_LEN];
static char last_error[ERROR_LEN];
static TimestampTz last_error_at = 0;

/* ---- librdkafka callbacks: record only ---------------------------------- */

/* Records an assignment to apply or a revocation (eager protocol). */
static void
on_rebalance(rd_kafka_t *handle, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t *partitions,
			 void *opaque)
{
	if (recorded.assign != NULL)
	{
		rd_kafka_topic_partition_list_destroy(recorded.assign);
		recorded.assign = NULL;
	}
	if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS)
		recorded.assign = rd_kafka_topic_partition_list_copy(partitions);
	else
		recorded.revoke = true; /* a revocation, or a rebalance error: unassign */
}

/* Records a log line of librdkafka for the loop to report. */
static void
on_log(const rd_kafka_t *handle, int level, const char *facility, const char *text)
{
	if (recorded.nlogs == LOG_RING)
	{
		recorded.logs_dropped++;
		return;
	}
	snprintf(recorded.logs[recorded.nlogs].facility, sizeof(recorded.logs[0].facility), "%s", facility);
	snprintf(recorded.logs[recorded.nlogs].text, sizeof(recorded.logs[0].text), "%s", text);
	recorded.nlogs++;
}

/* Records an error librdkafka reports (it recovers from all but fatal ones by itself). */
static void
on_error(rd_kafka_t *handle, int err, const char *reason, void *opaque)
{
	if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN)
	{
		recorded.brokers_down = true;
		snprintf(recorded.brokers_down_reason, sizeof(recorded.brokers_down_reason),
				 "all brokers are down (%s); retrying", reason);
	}
	if (err == RD_KAFKA_RESP_ERR__FATAL)
		recorded.fatal = true;
	snprintf(recorded.error, sizeof(recorded.error), "%s: %s", rd_kafka_err2name(err), reason);
	recorded.error_pending = true;
}

/* Keeps the latest statistics (the loop reads the brokers' states from them). */
static int
on_stats(rd_kafka_t *handle, char *json, size_t len, void *opaque)
{
	if (recorded.stats != NULL)
		rd_kafka_mem_free(handle, recorded.stats);
	recorded.stats = json;
	return 1;					/* the JSON is ours now */
}

/* Records a failed asynchronous offset commit to Kafka (informational: the database has them). */
static void
on_offset_commit(rd_kafka_t *handle, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t *offsets,
				 void *opaque)
{
	if (err == RD_KAFKA_RESP_ERR_NO_ERROR || err == RD_KAFKA_RESP_ERR__NO_OFFSET)
		return;
	snprintf(recorded.error, sizeof(recorded.error), "offset commit to Kafka failed: %s", rd_kafka_err2str(err));
	recorded.error_pending = true;
}

/* ---- state ------------------------------------------------------------- */

/* Remembers an error as the last one. */
static void
note_error(const char *error)
{
	strlcpy(last_error, error, sizeof(last_error));
	last_error_at = GetCurrentTimestamp();
	state_dirty = true;
}

/* True while a failed batch's backoff runs. */
static bool
in_backoff(void)
{
	return backoff_until != 0 && GetCurrentTimestamp() < backoff_until;
}

/* The status to publish. */
static const char *
current_status(void)
{
	if (backoff_until != 0)
		return "backoff";
	if (recorded.brokers_down)
		return "broker_down";
	return ever_assigned ? "running" : "starting";
}

/* The current problem, or NULL. */
static const char *
current_error(void)
{
	if (backoff_until != 0)
		return backoff_error;
	if (recorded.brokers_down)
		return broker_error;
	return topic_error[0] ? topic_error : NULL;
}

/* Ends broker_down: something came from a broker. */
static void
brokers_seen_up(void)
{
	if (recorded.brokers_down)
	{
		recorded.brokers_down = false;
		broker_error[0] = '\0';
		state_dirty = true;
	}
}

/* Reports what the callbacks recorded: log lines at LOG, errors into the state. */
static void
report_recorded(void)
{
	for (int i = 0; i < recorded.nlogs; i++)
		ereport(LOG,
				(errmsg("kafka consumer \"%s\": %s: %s", sub->name, recorded.logs[i].facility,
						recorded.logs[i].text)));
	if (recorded.logs_dropped > 0)
		ereport(LOG, (errmsg("kafka consumer \"%s\": %d librdkafka log lines dropped", sub->name,
							 recorded.logs_dropped)));
	recorded.nlogs = 0;
	recorded.logs_dropped = 0;

	if (recorded.error_pending)
	{
		recorded.error_pending = false;
		if (recorded.brokers_down)
			strlcpy(broker_error, recorded.brokers_down_reason, sizeof(broker_error));
		note_error(recorded.error);
	}
	if (recorded.fatal)
	{
		char		reason[ERROR_LEN];

		rd_kafka_fatal_error(rk, reason, sizeof(reason));
		ereport(ERROR,
				(errmsg("kafka consumer \"%s\" met a fatal error: %s", sub->name, reason),
				 errhint("The launcher starts it again.")));
	}
	/* a broker that is up again ends broker_down (statistics come about every second) */
	if (recorded.stats != NULL)
	{
		if (strstr(recorded.stats, "\"state\":\"UP\"") != NULL)
			brokers_seen_up();
		rd_kafka_mem_free(rk, recorded.stats);
		recorded.stats = NULL;
	}
}

/* ---- transactions ------------------------------------------------------- */

typedef void (*TransactionWork) (void *arg);

/*
 * Runs work in a transaction with SPI connected and loop_cxt current.
 * Returns false when it raised: the error is logged, kept in *error, and the
 * transaction rolled back.
 */
static bool
run_transaction(const char *activity, TransactionWork work, void *arg, char **error)
{
	volatile bool ok = true;

	PG_TRY();
	{
		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "notiflow: SPI_connect failed");
		PushActiveSnapshot(GetTransactionSnapshot());
		pgstat_report_activity(STATE_RUNNING, activity);
		MemoryContextSwitchTo(loop_cxt);
		work(arg);
		PopActiveSnapshot();
		SPI_finish();
		CommitTransactionCommand();
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(loop_cxt);
		EmitErrorReport();
		edata = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
		*error = edata->detail ? psprintf("%s: %s", edata->message, edata->detail) : edata->message;
		ok = false;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(loop_cxt);
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
	return ok;
}

/* Leaves when the subscription is gone or changed: the launcher learns it from a sync. */
static void
leave_if_not_current(void)
{
	if (kafka_subscription_current(sub->id, sub->revision))
		return;
	ereport(LOG, (errmsg("kafka consumer \"%s\" stops: its subscription was removed or changed", sub->name)));
	notiflow_kafka_request_sync();
	proc_exit(0);
}

/* ---- the assignment ----------------------------------------------------- */

/* Reads the stored offset of every partition of a list into it (a transaction's work). */
static void
read_offsets(void *arg)
{
	rd_kafka_topic_partition_list_t *list = arg;

	for (int i = 0; i < list->cnt; i++)
	{
		int64		stored = kafka_repo_offset(sub->group_id, list->elems[i].topic, list->elems[i].partition);

		list->elems[i].offset = stored >= 0 ? stored : RD_KAFKA_OFFSET_INVALID;
	}
}

/* Stores the offsets of a list where none is stored yet, and reads back the stored ones (a transaction's work). */
static void
pin_offsets(void *arg)
{
	rd_kafka_topic_partition_list_t *list = arg;

	for (int i = 0; i < list->cnt; i++)
	{
		rd_kafka_topic_partition_t *p = &list->elems[i];

		(void) kafka_repo_store_offset(sub->group_id, p->topic, p->partition, -1, p->offset, sub->name);
		p->offset = kafka_repo_offset(sub->group_id, p->topic, p->partition);
	}
}

/*
 * With start "latest", a partition that has no stored offset yet gets one:
 * the end of the partition now (or the group's committed offset, which
 * librdkafka would take first).  Left to librdkafka, "latest" is read again
 * at every assignment until a batch stores an offset, so whatever came
 * while nobody read the partition (a restart, a rebalance, a first batch
 * that failed) was skipped.  Network calls: no transaction is open.  False,
 * with *error, when the broker could not tell.
 */
static bool
pin_latest(rd_kafka_topic_partition_list_t *list, char **error)
{
	rd_kafka_topic_partition_list_t *missing;
	rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_NO_ERROR;
	bool		ok = true;

	if (strcmp(sub->start, "latest") != 0)
		return true;
	missing = rd_kafka_topic_partition_list_new(Max(list->cnt, 1));
	for (int i = 0; i < list->cnt; i++)
		if (list->elems[i].offset == RD_KAFKA_OFFSET_INVALID)
			rd_kafka_topic_partition_list_add(missing, list->elems[i].topic, list->elems[i].partition);
	if (missing->cnt > 0)
		err = rd_kafka_committed(rk, missing, PIN_TIMEOUT_MS);
	for (int i = 0; i < missing->cnt && ok && !err; i++)
	{
		rd_kafka_topic_partition_t *p = &missing->elems[i];
		int64_t		low;
		int64_t		high;

		if (p->err)
			err = p->err;
		else if (p->offset < 0)
		{
			err = rd_kafka_query_watermark_offsets(rk, p->topic, p->partition, &low, &high, PIN_TIMEOUT_MS);
			p->offset = high;
		}
	}
	if (err)
	{
		*error = psprintf("cannot find where \"latest\" is: %s", rd_kafka_err2str(err));
		ok = false;
	}
	else if (missing->cnt > 0 && (ok = run_transaction("notiflow: storing kafka start offsets", pin_offsets,
													   missing, error)))
	{
		for (int i = 0; i < missing->cnt; i++)
			for (int k = 0; k < list->cnt; k++)
				if (list->elems[k].partition == missing->elems[i].partition &&
					strcmp(list->elems[k].topic, missing->elems[i].topic) == 0)
					list->elems[k].offset = missing->elems[i].offset >= 0 ? missing->elems[i].offset
						: RD_KAFKA_OFFSET_INVALID;
	}
	rd_kafka_topic_partition_list_destroy(missing);
	return ok;
}

/* Finds an assigned partition. */
static Assigned *
find_assigned(const char *topic, int32 partition)
{
	for (int i = 0; i < nassigned; i++)
		if (assigned[i].partition == partition && strcmp(assigned[i].topic, topic) == 0)
			return &assigned[i];
	return NULL;
}

/* Forgets the assignment. */
static void
clear_assigned(void)
{
	for (int i = 0; i < nassigned; i++)
		pfree(assigned[i].topic);
	if (assigned != NULL)
		pfree(assigned);
	assigned = NULL;
	nassigned = 0;
	state_dirty = true;
}

/*
 * Resumes the partitions a backoff paused.  librdkafka keeps the
 * application's pause of a partition through an unassign: a partition given
 * back while paused and assigned again later would never be fetched.
 */
static void
resume_paused(void)
{
	for (int i = 0; i < nassigned; i++)
		if (assigned[i].paused)
		{
			rd_kafka_topic_partition_list_t *one = rd_kafka_topic_partition_list_new(1);

			rd_kafka_topic_partition_list_add(one, assigned[i].topic, assigned[i].partition);
			rd_kafka_resume_partitions(rk, one);
			rd_kafka_topic_partition_list_destroy(one);
			assigned[i].paused = false;
		}
}

/*
 * A message whose offset went down within a batch (librdkafka reset its
 * partition meanwhile: take_message): it begins the next batch.
 */
static rd_kafka_message_t *carried = NULL;

/* Destroys the carried message too: the batch failed or ends, and its partitions are read again. */
static void
release_carried(void)
{
	if (carried != NULL)
		rd_kafka_message_destroy(carried);
	carried = NULL;
}

/* Applies a revocation: the batch that used the partitions has committed already. */
static void
apply_revoke(void)
{
	rd_kafka_resp_err_t err;

	release_carried();			/* its partition is no longer ours as it was */
	resume_paused();
	err = rd_kafka_assign(rk, NULL);
	recorded.revoke = false;
	ereport(LOG, (errmsg("kafka consumer \"%s\" gives back %d partition(s)", sub->name, nassigned)));
	if (err)
		note_error(psprintf("unassign failed: %s", rd_kafka_err2str(err)));
	clear_assigned();
	rewind_needed = false;
}

/* Starts a backoff after a failed transaction: partitions paused, rewind afterwards. */
static void
start_backoff(const char *error)
{
	rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(Max(nassigned, 1));

	backoff_ms = backoff_ms == 0 ? BACKOFF_MIN_MS : Min(backoff_ms * 2, BACKOFF_MAX_MS);
	backoff_until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), backoff_ms);
	strlcpy(backoff_error, error, sizeof(backoff_error));
	note_error(error);
	for (int i = 0; i < nassigned; i++)
	{
		rd_kafka_topic_partition_list_add(list, assigned[i].topic, assigned[i].partition);
		assigned[i].paused = true;
		assigned[i].next = -1;
	}
	if (nassigned > 0)
		rd_kafka_pause_partitions(rk, list);
	rd_kafka_topic_partition_list_destroy(list);
	rewind_needed = true;
	ereport(LOG, (errmsg("kafka consumer \"%s\" backs off for %d ms: %s", sub->name, backoff_ms, error)));
}

/*
 * Assigns a partition list after reading its offsets from the database
 * (a new assignment, or the current one again to rewind).  Returns false
 * (and starts a backoff) when the offsets cannot be read.
 */
static bool
assign_from_database(rd_kafka_topic_partition_list_t *list)
{
	char	   *error;
	rd_kafka_resp_err_t err;
	MemoryContext old;

	if (!run_transaction("notiflow: reading kafka offsets", read_offsets, list, &error))
	{
		start_backoff(psprintf("cannot read the stored offsets: %s", error));
		return false;
	}
	if (!pin_latest(list, &error))
	{
		start_backoff(error);
		return false;
	}
	resume_paused();
	err = rd_kafka_assign(rk, list);
	if (err)
	{
		start_backoff(psprintf("assign failed: %s", rd_kafka_err2str(err)));
		return false;
	}
	clear_assigned();
	old = MemoryContextSwitchTo(consumer_cxt);
	assigned = palloc0(sizeof(Assigned) * Max(list->cnt, 1));
	for (int i = 0; i < list->cnt; i++)
	{
		assigned[i].topic = pstrdup(list->elems[i].topic);
		assigned[i].partition = list->elems[i].partition;
		assigned[i].stored = list->elems[i].offset >= 0 ? list->elems[i].offset : -1;
		assigned[i].next = -1;
		assigned[i].seeked = true;
		assigned[i].published_low = assigned[i].published_high = -2;
	}
	nassigned = list->cnt;
	MemoryContextSwitchTo(old);
	rewind_needed = false;
	ever_assigned = true;
	backoff_until = 0;
	topic_error[0] = '\0';
	state_dirty = true;
	return true;
}

/* Applies a recorded assignment. */
static void
apply_assign(void)
{
	rd_kafka_topic_partition_list_t *list = recorded.assign;

	release_carried();			/* the partitions are read from their stored offsets */
	brokers_seen_up();
	if (assign_from_database(list))
	{
		recorded.assign = NULL;
		rd_kafka_topic_partition_list_destroy(list);
		ereport(LOG, (errmsg("kafka consumer \"%s\" is assigned %d partition(s)", sub->name, nassigned)));
	}
}

/* Assigns the current partitions again from the stored offsets (after a failed batch). */
static void
rewind_to_stored(void)
{
	rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(Max(nassigned, 1));

	release_carried();
	for (int i = 0; i < nassigned; i++)
		rd_kafka_topic_partition_list_add(list, assigned[i].topic, assigned[i].partition);
	assign_from_database(list);
	rd_kafka_topic_partition_list_destroy(list);
}

/* ---- batches ------------------------------------------------------------ */

/* Destroys the messages of the batch. */
static void
release_messages(void)
{
	for (int i = 0; i < nmessages; i++)
		rd_kafka_message_destroy(messages[i]);
	nmessages = 0;
}


/* Drains the wake-up pipe (before a poll, so that no wake-up is lost). */
static void
drain_pipe(void)
{
	char		buf[64];

	while (read(wake_pipe[0], buf, sizeof(buf)) > 0)
		;
}

/* Waits for the latch, the consumer queue or the timeout. */
static void
wait_for_events(long timeout_ms)
{
	WaitEvent	event;

	(void) WaitEventSetWait(wait_set, Max(timeout_ms, 0), &event, 1, PG_WAIT_EXTENSION);
	ResetLatch(MyLatch);
	notiflow_worker_drop_idle_cancel();
	CHECK_FOR_INTERRUPTS();
}

/* Returns the next message of the queue, or NULL; the callbacks run meanwhile. */
static rd_kafka_message_t *
poll_message(void)
{
	for (;;)
	{
		rd_kafka_message_t *m;

		drain_pipe();
		m = rd_kafka_consumer_poll(rk, 0);
		if (m == NULL)
			return NULL;
		brokers_seen_up();
		if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR)
			return m;
		if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
		{
			char	   *error = m->rkt
				? psprintf("%s [%d]: %s", rd_kafka_topic_name(m->rkt), (int) m->partition, rd_kafka_message_errstr(m))
				: psprintf("%s", rd_kafka_message_errstr(m));

			strlcpy(topic_error, error, sizeof(topic_error));
			note_error(error);
		}
		rd_kafka_message_destroy(m);
	}
}

/*
 * Takes a message into the batch when its partition is ours and it is not in
 * the batch yet.
 *
 * A partition is read from its stored offset (assigned there, or rewound
 * there; librdkafka drops older fetches and offsets below the one asked
 * for), so a first message below that offset means librdkafka found the
 * offset out of range, past the partition's end (the log was truncated, the
 * topic created again, the offset set by hand), and reset it by
 * auto.offset.reset to the partition's first message.  The partition is read
 * from there: skipping up to the old offset would lose every message below
 * it.  A first message above the stored offset after an assignment or a
 * rewind is logged (not after each batch: a transactional producer's markers
 * leave such a gap after every transaction): offsets without
 * a message (transaction markers, compaction) or messages deleted by
 * retention before anyone read them.
 * docs/kafka.md says what that means for idempotency keys.
 */
typedef enum TakeResult
{
	TAKE_DROP,					/* not ours (any more) */
	TAKE_TAKEN,
	TAKE_CARRY					/* its offset went down: it begins the next batch */
} TakeResult;

static TakeResult
take_message(rd_kafka_message_t *m)
{
	Assigned   *a = find_assigned(rd_kafka_topic_name(m->rkt), m->partition);

	if (a == NULL)
		return TAKE_DROP;

	/*
	 * Below an offset of this batch: librdkafka reset the partition in the
	 * middle of it (no fetch repeats an offset otherwise).  Dropping it, and
	 * those after it up to the batch's offset, would lose the messages a
	 * truncated log has written there since: the batch ends before it, and
	 * it begins the next, which reads the partition from there.
	 */
	if (a->next >= 0 && m->offset < a->next)
	{
		if (nmessages > 0)
		{
			/*
			 * the batch stores the carried message's offset for the
			 * partition: should the next batch not commit, the partition is
			 * read again from there, not from past the messages of the reset
			 */
			a->next = m->offset;
			return TAKE_CARRY;
		}
		a->next = -1;			/* (a batch begins: read from here, as below) */
	}
	if (a->next < 0 && a->stored >= 0 && m->offset < a->stored)
		ereport(WARNING,
				(errmsg("kafka consumer \"%s\": %s [%d] starts at offset %lld, below its stored offset %lld",
						sub->name, a->topic, a->partition, (long long) m->offset, (long long) a->stored),
				 errdetail("The stored offset is past the end of the partition (was the topic created again, or truncated?); it is read from its first message.")));
	else if (a->next < 0 && a->seeked && a->stored >= 0 && m->offset > a->stored)
		ereport(LOG,
				(errmsg("kafka consumer \"%s\": %s [%d] starts at offset %lld, above its stored offset %lld",
						sub->name, a->topic, a->partition, (long long) m->offset, (long long) a->stored),
				 errdetail("Offsets without a message (transaction markers, compaction), or messages deleted by the topic's retention before they were read: the partition is read from the first message it has.")));
	a->next = m->offset + 1;
	a->seeked = false;
	return TAKE_TAKEN;
}

/* Processes the batch and stores the offsets it advanced (compare-and-set); counts into arg. */
static void
batch_transaction(void *arg)
{
	KafkaCounters *batch_counters = arg;

	leave_if_not_current();
	kafka_messages_process(sub, messages, nmessages, batch_counters, isolate_left > 0);
	for (int i = 0; i < nassigned; i++)
	{
		Assigned   *a = &assigned[i];

		if (a->next < 0 || a->next == a->stored)
			continue;
		if (!kafka_repo_store_offset(sub->group_id, a->topic, a->partition, a->stored, a->next, sub->name))
			ereport(ERROR,
					(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
					 errmsg("kafka offsets of %s [%d] moved under consumer \"%s\"", a->topic, a->partition,
							sub->name),
					 errdetail("Another consumer of group \"%s\" stored them after this one was assigned the partition; the batch rolls back.",
							   sub->group_id)));
	}
}

/* Commits the offsets a batch stored to Kafka too (asynchronously), then marks them stored. */
static void
batch_committed(void)
{
	rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(Max(nassigned, 1));

	for (int i = 0; i < nassigned; i++)
	{
		Assigned   *a = &assigned[i];

		if (a->next < 0)
			continue;
		if (a->next != a->stored)
			rd_kafka_topic_partition_list_add(list, a->topic, a->partition)->offset = a->next;
		a->stored = a->next;
		a->next = -1;
	}
	if (list->cnt > 0)
		rd_kafka_commit(rk, list, 1);
	rd_kafka_topic_partition_list_destroy(list);
}

/*
 * Builds a batch from the queue — what is queued, up to batch_size
 * messages, waiting for more until batch_time_ms after the first, stopping
 * at a rebalance — and processes it.  Returns whether there was one.
 */
static bool
consume_batch(void)
{
	KafkaCounters batch_counters;
	TimestampTz deadline = 0;
	size_t		batch_bytes = 0;
	char	   *error;
	bool		ok;

	memset(&batch_counters, 0, sizeof(batch_counters));
	while (nmessages < (isolate_left > 0 ? 1 : sub->batch_size) && batch_bytes < BATCH_MAX_BYTES)
	{
		rd_kafka_message_t *m = carried != NULL ? carried : poll_message();
		bool		rebalance = recorded.revoke || recorded.assign != NULL || recorded.fatal;
		long		left;
		TakeResult	took = m != NULL ? take_message(m) : TAKE_DROP;

		carried = NULL;
		if (took == TAKE_TAKEN)
		{
			if (nmessages == 0)
				deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), sub->batch_time_ms);
			messages[nmessages++] = m;
			batch_bytes += m->len;
		}
		else if (took == TAKE_CARRY)
		{
			carried = m;
			break;
		}
		else if (m != NULL)
			rd_kafka_message_destroy(m);
		if (rebalance || (m == NULL && nmessages == 0))
			break;
		if (m != NULL)
			continue;			/* what is queued already joins the batch */
		left = (long) ((deadline - GetCurrentTimestamp()) / 1000);
		if (left <= 0)
			break;
		wait_for_events(left);
	}
	if (nmessages == 0)
		return false;

	ok = run_transaction("notiflow: kafka batch", batch_transaction, &batch_counters, &error);
	if (!ok)
	{
		/*
		 * A message whose error may pass (out of memory, say) fails its batch
		 * every time: after a few failures in a row, the batch's messages are
		 * read one per transaction, where such an error makes that message
		 * alone a dead letter.
		 */
		if (++failed_batches >= ISOLATE_AFTER && isolate_left == 0)
		{
			isolate_left = nmessages;
			ereport(LOG,
					(errmsg("kafka consumer \"%s\": %d batches failed in a row; its next %d messages are read one at a time",
							sub->name, failed_batches, isolate_left)));
		}
		release_messages();
		release_carried();		/* the partitions are read again from their stored offsets */
		start_backoff(error);
		return true;
	}
	failed_batches = 0;
	if (isolate_left > 0)
		isolate_left -= nmessages;
	release_messages();
	batch_committed();
	counters.messages += batch_counters.messages;
	counters.executions += batch_counters.executions;
	counters.events += batch_counters.events;
	counters.filtered += batch_counters.filtered;
	counters.dead_letters += batch_counters.dead_letters;
	counters.batches_split += batch_counters.batches_split;
	backoff_ms = 0;
	topic_error[0] = '\0';
	state_dirty = true;
	return true;
}

/* During a backoff: serves the callbacks; messages are dropped (the rewind fetches them again). */
static void
discard_while_backing_off(void)
{
	rd_kafka_message_t *m;

	while ((m = poll_message()) != NULL)
		rd_kafka_message_destroy(m);
}

/* ---- published state ---------------------------------------------------- */

/* Writes the state (a transaction's work). */
static void
publish_transaction(void *arg)
{
	KafkaConsumerState *state = arg;

	leave_if_not_current();
	kafka_repo_publish_state(sub->name, state);
}

/*
 * Returns a partition's watermarks: those of librdkafka's last fetch
 * response, or for a paused partition (which fetches nothing) those the
 * broker returns now, within what is left of *budget_ms.
 */
static bool
watermarks(Assigned *a, int *budget_ms, int64 *low, int64 *high)
{
	if (a->paused && !recorded.brokers_down && *budget_ms > 0)
	{
		TimestampTz start = GetCurrentTimestamp();
		rd_kafka_resp_err_t err = rd_kafka_query_watermark_offsets(rk, a->topic, a->partition, low, high,
																   Min(*budget_ms, 200));

		*budget_ms -= (int) ((GetCurrentTimestamp() - start) / 1000);
		if (err == RD_KAFKA_RESP_ERR_NO_ERROR)
			return *low >= 0 && *high >= 0;
	}
	return rd_kafka_get_watermark_offsets(rk, a->topic, a->partition, low, high) == RD_KAFKA_RESP_ERR_NO_ERROR &&
		*low >= 0 && *high >= 0;
}

/* Publishes the state when it changed, at most every STATE_INTERVAL_MS. */
static void
publish_state_if_due(void)
{
	KafkaConsumerState state;
	TimestampTz now = GetCurrentTimestamp();
	bool		changed = state_dirty;
	char	   *error;
	int			query_budget_ms = WATERMARK_QUERY_BUDGET_MS;

	if (now < state_due)
		return;
	memset(&state, 0, sizeof(state));
	state.partitions = palloc0(sizeof(KafkaPartitionState) * Max(nassigned, 1));
	for (int i = 0; i < nassigned; i++)
	{
		KafkaPartitionState *p = &state.partitions[i];
		int64		low = -1;
		int64		high = -1;

		if (!watermarks(&assigned[i], &query_budget_ms, &low, &high))
			low = high = -1;
		p->topic = assigned[i].topic;
		p->partition = assigned[i].partition;
		p->paused = assigned[i].paused;
		p->low_watermark = low;
		p->high_watermark = high;
		changed = changed || low != assigned[i].published_low || high != assigned[i].published_high;
	}
	state.npartitions = nassigned;
	state_due = TimestampTzPlusMilliseconds(now, STATE_INTERVAL_MS);
	if (!changed)
		return;
	state.status = current_status();
	state.error = current_error();
	state.last_error = last_error[0] ? last_error : NULL;
	state.last_error_at = last_error_at;
	state.started_at = started_at;
	state.counters = counters;
	if (!run_transaction("notiflow: publishing kafka consumer state", publish_transaction, &state, &error))
		return;
	for (int i = 0; i < nassigned; i++)
	{
		assigned[i].published_low = state.partitions[i].low_watermark;
		assigned[i].published_high = state.partitions[i].high_watermark;
	}
	state_dirty = false;
}

/* ---- start and stop ----------------------------------------------------- */

/* Sets one librdkafka property (validated when subscribing). */
static void
conf_set(rd_kafka_conf_t *conf, const char *name, const char *value)
{
	char		errstr[512];

	if (rd_kafka_conf_set(conf, name, value, errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK)
	{
		rd_kafka_conf_destroy(conf);
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("kafka consumer \"%s\": cannot set %s: %s", sub->name, name, errstr)));
	}
}

/* Creates the consumer, subscribes it to the topics and sets up the wait. */
static void
consumer_create(void)
{
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	rd_kafka_topic_partition_list_t *topics;
	char		errstr[512];
	ListCell   *ln;
	ListCell   *lv;
	rd_kafka_resp_err_t err;

	conf_set(conf, "client.id", psprintf("notiflow-%s", sub->name));
	conf_set(conf, "statistics.interval.ms", "1000");
	forboth(ln, sub->rdkafka_names, lv, sub->rdkafka_values)
		conf_set(conf, lfirst(ln), lfirst(lv));

	/* notiflow's own properties last */
	conf_set(conf, "bootstrap.servers", sub->brokers);
	kafka_conf_set_own(conf, sub);
	conf_set(conf, "log.queue", "true");
	rd_kafka_conf_set_rebalance_cb(conf, on_rebalance);
	rd_kafka_conf_set_log_cb(conf, on_log);
	rd_kafka_conf_set_error_cb(conf, on_error);
	rd_kafka_conf_set_stats_cb(conf, on_stats);
	rd_kafka_conf_set_offset_commit_cb(conf, on_offset_commit);

	rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
	if (rk == NULL)
	{
		rd_kafka_conf_destroy(conf);
		ereport(ERROR, (errmsg("kafka consumer \"%s\" cannot start: %s", sub->name, errstr)));
	}
	/* logs, errors, statistics and rebalances all come through the consumer queue */
	rd_kafka_set_log_queue(rk, NULL);
	rd_kafka_poll_set_consumer(rk);
	queue = rd_kafka_queue_get_consumer(rk);

	if (pipe(wake_pipe) != 0 ||
		fcntl(wake_pipe[0], F_SETFL, O_NONBLOCK) != 0 || fcntl(wake_pipe[1], F_SETFL, O_NONBLOCK) != 0)
		ereport(ERROR, (errcode_for_socket_access(), errmsg("could not create a pipe: %m")));
	rd_kafka_queue_io_event_enable(queue, wake_pipe[1], "1", 1);
	wait_set = CreateWaitEventSet(TopMemoryContext, 3);
	AddWaitEventToSet(wait_set, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(wait_set, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	AddWaitEventToSet(wait_set, WL_SOCKET_READABLE, wake_pipe[0], NULL, NULL);

	topics = rd_kafka_topic_partition_list_new(list_length(sub->topics));
	foreach(ln, sub->topics)
		rd_kafka_topic_partition_list_add(topics, lfirst(ln), RD_KAFKA_PARTITION_UA);
	err = rd_kafka_subscribe(rk, topics);
	rd_kafka_topic_partition_list_destroy(topics);
	if (err)
		ereport(ERROR, (errmsg("kafka consumer \"%s\" cannot subscribe: %s", sub->name, rd_kafka_err2str(err))));
}

/*
 * Leaves the group (revoking the assignment: nothing uncommitted is pending
 * at exit) within CLOSE_TIMEOUT_MS, destroys the consumer and frees the slot.
 */
static void
consumer_shutdown(int code, Datum arg)
{
	/*
	 * An exit in the middle of a batch (SIGTERM, an error) leaves its
	 * transaction open until PostgreSQL's own exit hook, which runs after
	 * this one: end it before closing the consumer talks to the brokers (up
	 * to CLOSE_TIMEOUT_MS) so that no lock is held meanwhile.  Its offsets
	 * were not stored; the batch is read again.
	 */
	AbortOutOfAnyTransaction();
	if (rk != NULL)
	{
		TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), CLOSE_TIMEOUT_MS);
		rd_kafka_error_t *error;

		/* a batch cut short by the exit: librdkafka's destroy waits for its messages */
		release_messages();
		release_carried();
		error = rd_kafka_consumer_close_queue(rk, queue);
		if (error != NULL)
			rd_kafka_error_destroy(error);
		while (!rd_kafka_consumer_closed(rk) && GetCurrentTimestamp() < deadline)
		{
			rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);

			if (m != NULL)
				rd_kafka_message_destroy(m);
			if (recorded.revoke)
			{
				recorded.revoke = false;
				rd_kafka_assign(rk, NULL);
			}
		}
		if (recorded.assign != NULL)
			rd_kafka_topic_partition_list_destroy(recorded.assign);
		recorded.assign = NULL;
		if (recorded.stats != NULL)
			rd_kafka_mem_free(rk, recorded.stats);
		recorded.stats = NULL;
		rd_kafka_queue_io_event_enable(queue, -1, NULL, 0);
		rd_kafka_queue_destroy(queue);
		rd_kafka_destroy_flags(rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
		rk = NULL;
	}
	if (my_slot != NULL)
	{
		SpinLockAcquire(&notiflow_shared->mutex);
		if (my_slot->pid == MyProcPid)
		{
			my_slot->pid = 0;
			my_slot->latch = NULL;
		}
		SpinLockRelease(&notiflow_shared->mutex);
	}
}

/* Loads the subscription (a transaction's work). */
static void
load_transaction(void *arg)
{
	int64		id = *(int64 *) arg;
	MemoryContext old = MemoryContextSwitchTo(consumer_cxt);

	sub = kafka_subscription_load(id);
	MemoryContextSwitchTo(old);
}

void
notiflow_kafka_consumer_main(Datum arg)
{
	int			slot = DatumGetInt32(arg);
	KafkaWanted want;
	char	   *error;
	int			key_lock_limit = execution_repo_key_lock_limit();

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	notiflow_worker_keep_memory();
	BackgroundWorkerInitializeConnection(notiflow_database_name, NULL, 0);
	notiflow_worker_session_settings();

	SpinLockAcquire(&notiflow_shared->mutex);
	my_slot = &notiflow_shared->kafka_consumers[slot];
	want = my_slot->want;
	my_slot->pid = MyProcPid;
	my_slot->latch = MyLatch;
	my_slot->database = MyDatabaseId;
	SpinLockRelease(&notiflow_shared->mutex);
	before_shmem_exit(consumer_shutdown, (Datum) 0);

	consumer_cxt = AllocSetContextCreate(TopMemoryContext, "notiflow kafka consumer", ALLOCSET_DEFAULT_SIZES);
	loop_cxt = AllocSetContextCreate(consumer_cxt, "notiflow kafka consumer loop", ALLOCSET_DEFAULT_SIZES);
	MemoryContextSwitchTo(loop_cxt);

	if (!run_transaction("notiflow: loading kafka subscription", load_transaction, &want.subscription_id, &error))
		ereport(ERROR, (errmsg("kafka consumer for subscription \"%s\" cannot load it: %s", want.name, error)));
	if (sub == NULL || sub->revision != want.revision)
	{
		notiflow_kafka_request_sync();
		proc_exit(0);
	}
	pgstat_report_appname(sub->name);
	started_at = GetCurrentTimestamp();
	/* each message locks a key until its batch commits: a batch takes at most a quarter of the lock table */
	if (sub->batch_size > key_lock_limit)
	{
		ereport(LOG,
				(errmsg("kafka consumer \"%s\" reads batches of %d messages, not %d", sub->name,
						key_lock_limit, sub->batch_size),
				 errdetail("Each message locks a key until its batch commits; a batch may take a quarter of the lock table (max_locks_per_transaction × (max_connections + worker processes + max_prepared_transactions)).")));
		sub->batch_size = key_lock_limit;
	}
	messages = MemoryContextAlloc(consumer_cxt, sizeof(rd_kafka_message_t *) * sub->batch_size);
	consumer_create();
	ereport(LOG, (errmsg("kafka consumer \"%s\" started: topics of group \"%s\" at %s", sub->name,
						 sub->group_id, sub->brokers)));

	for (;;)
	{
		bool		busy = false;
		long		timeout = STATE_INTERVAL_MS;

		MemoryContextReset(loop_cxt);
		notiflow_worker_drop_idle_cancel();
		CHECK_FOR_INTERRUPTS();
		spi_replan_if_due();	/* plans follow the tables' growth (a queue starts empty) */
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		if (notiflow_database_dropping(MyDatabaseId))
			proc_exit(0);

		report_recorded();
		if (recorded.revoke)
			apply_revoke();
		if (backoff_until != 0 && !in_backoff() && !rewind_needed && recorded.assign == NULL)
			backoff_until = 0;	/* the partitions that failed were revoked meanwhile */
		if (in_backoff())
			discard_while_backing_off();
		else
		{
			if (recorded.assign != NULL)
				apply_assign();
			else if (rewind_needed)
				rewind_to_stored();
			if (!in_backoff())
				busy = consume_batch();
		}
		publish_state_if_due();
		/* an assignment recorded during a backoff waits for its end: no spinning meanwhile */
		if (busy || recorded.revoke || (recorded.assign != NULL && !in_backoff()) || recorded.nlogs > 0)
			continue;
		if (backoff_until != 0 && in_backoff())
			timeout = Min(timeout, (long) ((backoff_until - GetCurrentTimestamp()) / 1000) + 1);
		if (state_dirty)
			timeout = Min(timeout, Max((long) ((state_due - GetCurrentTimestamp()) / 1000), 0) + 1);
		wait_for_events(timeout);
	}
}
