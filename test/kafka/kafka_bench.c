/*
 * kafka_bench — the producer and the raw consumer of notiflow's Kafka ingest
 * benchmark (bench/kafka.sh), on librdkafka, against any broker (the
 * benchmark uses test/kafka/kafka_mock).
 *
 *   kafka_bench produce BOOTSTRAP TOPIC N [SUBSCRIBERS [PARTITIONS]]
 *       produces N order messages, keyless, message i to partition
 *       i % PARTITIONS (default 1; 0: librdkafka's partitioner).  Spreading
 *       them evenly matters with the mock cluster, which keeps a bounded log
 *       per partition and drops the oldest messages beyond it:
 *         {"order": {"order_id": "A000000001", "total": 57, "currency": "USD"},
 *          "customer_id": "u17"}
 *       total cycles through 1..200 and customer_id through u1..uSUBSCRIBERS
 *       (default 1000); waits until every message is acknowledged and prints
 *       "produced N in SECONDS s".  Exits non-zero if one was not.
 *
 *   kafka_bench consume BOOTSTRAP TOPIC N
 *       the raw consume rate of the same broker: assigns every partition of
 *       TOPIC from its beginning (no group rebalance), reads until N messages
 *       have arrived, touching each payload (a checksum of its bytes), and
 *       prints "consumed N in SECONDS s (BYTES bytes, first message after
 *       SECONDS s)": the clock starts when the first message arrives, so the
 *       connection set-up and the first fetch's round trips are left out (the
 *       benchmark's notiflow consumer is connected and waiting when it starts).
 */
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <librdkafka/rdkafka.h>

static long delivered = 0;
static long failed = 0;

/* Returns a monotonic clock in seconds. */
static double
now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

/* Sets one configuration property or exits. */
static void
set(rd_kafka_conf_t *conf, const char *name, const char *value)
{
	char		errstr[512];

	if (rd_kafka_conf_set(conf, name, value, errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK)
	{
		fprintf(stderr, "kafka_bench: %s=%s: %s\n", name, value, errstr);
		exit(1);
	}
}

/* Counts the acknowledged and the failed messages. */
static void
on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
	(void) rk;
	(void) opaque;
	if (m->err)
	{
		if (failed++ == 0)
			fprintf(stderr, "kafka_bench: delivery failed: %s\n", rd_kafka_err2str(m->err));
	}
	else
		delivered++;
}

/* Produces n order messages; returns the exit status. */
static int
produce(const char *bootstrap, const char *topic, long n, long subscribers, int partitions)
{
	char		errstr[512];
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	rd_kafka_t *rk;
	double		start;

	set(conf, "bootstrap.servers", bootstrap);
	set(conf, "linger.ms", "5");
	set(conf, "batch.num.messages", "10000");
	set(conf, "queue.buffering.max.messages", "1000000");
	set(conf, "queue.buffering.max.kbytes", "1048576");
	set(conf, "log_level", "3");
	rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
	rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
	if (rk == NULL)
	{
		fprintf(stderr, "kafka_bench: %s\n", errstr);
		return 1;
	}
	start = now_s();
	for (long i = 1; i <= n; i++)
	{
		char		msg[256];
		int			len = snprintf(msg, sizeof(msg),
								   "{\"order\": {\"order_id\": \"A%09ld\", \"total\": %ld, \"currency\": \"USD\"}, "
								   "\"customer_id\": \"u%ld\"}",
								   i, 1 + i % 200, 1 + (i - 1) % subscribers);

		for (;;)
		{
			rd_kafka_resp_err_t err = rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic),
														RD_KAFKA_V_PARTITION(partitions > 0 ? (int32_t) (i % partitions)
																			 : RD_KAFKA_PARTITION_UA),
														RD_KAFKA_V_VALUE(msg, (size_t) len),
														RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
														RD_KAFKA_V_END);

			if (err == RD_KAFKA_RESP_ERR_NO_ERROR)
				break;
			if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL)
			{
				fprintf(stderr, "kafka_bench: produce: %s\n", rd_kafka_err2str(err));
				rd_kafka_destroy(rk);
				return 1;
			}
			rd_kafka_poll(rk, 10);
		}
		rd_kafka_poll(rk, 0);
	}
	if (rd_kafka_flush(rk, 120000) != RD_KAFKA_RESP_ERR_NO_ERROR)
		fprintf(stderr, "kafka_bench: flush timed out\n");
	printf("produced %ld in %.3f s\n", delivered, now_s() - start);
	rd_kafka_destroy(rk);
	return (delivered == n && failed == 0) ? 0 : 1;
}

/* Reads n messages from every partition's beginning; returns the exit status. */
static int
consume(const char *bootstrap, const char *topic, long n)
{
	char		errstr[512];
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	rd_kafka_t *rk;
	const struct rd_kafka_metadata *md = NULL;
	rd_kafka_topic_t *rkt;
	rd_kafka_topic_partition_list_t *parts;
	long		got = 0;
	unsigned long sum = 0;
	long long	bytes = 0;
	double		start,
				first = 0,
				deadline;
	int			partitions;

	set(conf, "bootstrap.servers", bootstrap);
	set(conf, "group.id", "kafka-bench-raw");
	set(conf, "enable.auto.commit", "false");
	set(conf, "enable.partition.eof", "false");
	set(conf, "fetch.wait.max.ms", "10");
	set(conf, "log_level", "3");
	rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
	if (rk == NULL)
	{
		fprintf(stderr, "kafka_bench: %s\n", errstr);
		return 1;
	}
	rd_kafka_poll_set_consumer(rk);
	rkt = rd_kafka_topic_new(rk, topic, NULL);
	if (rd_kafka_metadata(rk, 0, rkt, &md, 10000) != RD_KAFKA_RESP_ERR_NO_ERROR ||
		md->topic_cnt != 1 || md->topics[0].err)
	{
		fprintf(stderr, "kafka_bench: no metadata for topic %s\n", topic);
		return 1;
	}
	partitions = md->topics[0].partition_cnt;
	rd_kafka_metadata_destroy(md);
	rd_kafka_topic_destroy(rkt);

	parts = rd_kafka_topic_partition_list_new(partitions);
	for (int p = 0; p < partitions; p++)
		rd_kafka_topic_partition_list_add(parts, topic, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
	start = now_s();
	deadline = start + 120;
	if (rd_kafka_assign(rk, parts) != RD_KAFKA_RESP_ERR_NO_ERROR)
	{
		fprintf(stderr, "kafka_bench: assign failed\n");
		return 1;
	}
	rd_kafka_topic_partition_list_destroy(parts);
	while (got < n && now_s() < deadline)
	{
		rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);

		if (m == NULL)
			continue;
		if (m->err)
			fprintf(stderr, "kafka_bench: consume: %s\n", rd_kafka_message_errstr(m));
		else
		{
			const unsigned char *p = m->payload;

			if (got == 0)
				first = now_s();
			for (size_t i = 0; i < m->len; i++)
				sum += p[i];
			bytes += (long long) m->len;
			got++;
		}
		rd_kafka_message_destroy(m);
	}
	printf("consumed %ld in %.3f s (%lld bytes, checksum %lu, first message after %.3f s)\n", got,
		   got > 0 ? now_s() - first : 0.0, bytes, sum, got > 0 ? first - start : 0.0);
	rd_kafka_consumer_close(rk);
	rd_kafka_destroy(rk);
	return got == n ? 0 : 1;
}

int
main(int argc, char **argv)
{
	if (argc >= 5 && strcmp(argv[1], "produce") == 0)
		return produce(argv[2], argv[3], atol(argv[4]), argc >= 6 ? atol(argv[5]) : 1000,
					   argc >= 7 ? atoi(argv[6]) : 1);
	if (argc == 5 && strcmp(argv[1], "consume") == 0)
		return consume(argv[2], argv[3], atol(argv[4]));
	fprintf(stderr, "usage: kafka_bench produce BOOTSTRAP TOPIC N [SUBSCRIBERS [PARTITIONS]]\n"
			"       kafka_bench consume BOOTSTRAP TOPIC N\n");
	return 2;
}
