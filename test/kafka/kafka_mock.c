/*
 * kafka_mock — a Kafka cluster for notiflow's tests, built on librdkafka's
 * in-process mock cluster (rdkafka_mock.h): brokers on loopback ports,
 * topics, produce/fetch, consumer groups with offset commits.
 *
 *   kafka_mock [--brokers N] [--topic NAME:PARTITIONS]...
 *
 * Prints "bootstrap HOST:PORT[,...]" on stdout once the cluster is up, then
 * stays up until SIGTERM or SIGINT.  The brokers can be taken down and
 * brought back, by signal or by a command line on stdin:
 *
 *   SIGUSR1 | "down [ID]"   disconnect every broker (or broker ID) and refuse connections
 *   SIGUSR2 | "up [ID]"     accept connections again
 *   "topic NAME PARTITIONS" create one more topic
 *
 * Each command is acknowledged with a line on stdout ("down", "up", "topic NAME").
 * Messages are produced with any client, e.g. kcat -P -b <bootstrap> -t NAME.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

static volatile sig_atomic_t stop_requested = 0;
static volatile sig_atomic_t down_requested = 0;
static volatile sig_atomic_t up_requested = 0;

/* Records a signal for the main loop. */
static void
on_signal(int sig)
{
	if (sig == SIGUSR1)
		down_requested = 1;
	else if (sig == SIGUSR2)
		up_requested = 1;
	else
		stop_requested = 1;
}

/* Prints a line on stdout at once (the tests wait for it). */
static void
say(const char *fmt, const char *arg)
{
	printf(fmt, arg);
	putchar('\n');
	fflush(stdout);
}

/* Creates topic "NAME:PARTITIONS" (or NAME and PARTITIONS apart); returns 0 on success. */
static int
create_topic(rd_kafka_mock_cluster_t *mc, const char *name, int partitions)
{
	rd_kafka_resp_err_t err;

	if (partitions < 1)
	{
		fprintf(stderr, "kafka_mock: topic %s needs at least one partition\n", name);
		return 1;
	}
	err = rd_kafka_mock_topic_create(mc, name, partitions, 1);
	if (err)
	{
		fprintf(stderr, "kafka_mock: cannot create topic %s: %s\n", name, rd_kafka_err2str(err));
		return 1;
	}
	return 0;
}

/* Creates a topic given as NAME:PARTITIONS. */
static int
create_topic_spec(rd_kafka_mock_cluster_t *mc, const char *spec)
{
	char	   *copy = strdup(spec);
	char	   *colon = strrchr(copy, ':');
	int			rc;

	if (colon == NULL)
	{
		fprintf(stderr, "kafka_mock: --topic expects NAME:PARTITIONS, got %s\n", spec);
		free(copy);
		return 1;
	}
	*colon = '\0';
	rc = create_topic(mc, copy, atoi(colon + 1));
	free(copy);
	return rc;
}

/* Takes brokers down or up: id < 0 means all of them. */
static void
set_brokers(rd_kafka_mock_cluster_t *mc, int broker_count, int id, int up)
{
	for (int b = 1; b <= broker_count; b++)
	{
		if (id >= 0 && b != id)
			continue;
		if (up)
			rd_kafka_mock_broker_set_up(mc, b);
		else
			rd_kafka_mock_broker_set_down(mc, b);
	}
	say("%s", up ? "up" : "down");
}

/* Runs one command line from stdin. */
static void
run_command(rd_kafka_mock_cluster_t *mc, int broker_count, char *line)
{
	char		verb[32];
	char		name[256];
	int			n = 0;
	int			fields = sscanf(line, "%31s %255s %d", verb, name, &n);

	if (fields < 1)
		return;
	if (strcmp(verb, "down") == 0 || strcmp(verb, "up") == 0)
		set_brokers(mc, broker_count, fields >= 2 ? atoi(name) : -1, verb[0] == 'u');
	else if (strcmp(verb, "topic") == 0 && fields == 3)
	{
		if (create_topic(mc, name, n) == 0)
			say("topic %s", name);
	}
	else
		fprintf(stderr, "kafka_mock: unknown command: %s", line);
}

int
main(int argc, char **argv)
{
	char		errstr[512];
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	rd_kafka_t *rk;
	rd_kafka_mock_cluster_t *mc;
	struct sigaction sa;
	int			broker_count = 1;
	int			stdin_open = 1;
	char		line[1024];
	size_t		used = 0;

	for (int i = 1; i < argc; i++)
		if (strcmp(argv[i], "--brokers") == 0 && i + 1 < argc)
			broker_count = atoi(argv[++i]);

	if (rd_kafka_conf_set(conf, "log_level", "3", errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK)
	{
		fprintf(stderr, "kafka_mock: %s\n", errstr);
		return 1;
	}
	rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
	if (rk == NULL)
	{
		fprintf(stderr, "kafka_mock: %s\n", errstr);
		return 1;
	}
	mc = rd_kafka_mock_cluster_new(rk, broker_count);
	if (mc == NULL)
	{
		fprintf(stderr, "kafka_mock: cannot create the mock cluster\n");
		return 1;
	}
	for (int i = 1; i < argc; i++)
	{
		if (strcmp(argv[i], "--topic") == 0 && i + 1 < argc)
		{
			if (create_topic_spec(mc, argv[++i]) != 0)
				return 1;
		}
		else if (strcmp(argv[i], "--brokers") == 0)
			i++;
		else
		{
			fprintf(stderr, "usage: kafka_mock [--brokers N] [--topic NAME:PARTITIONS]...\n");
			return 2;
		}
	}

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGUSR1, &sa, NULL);
	sigaction(SIGUSR2, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	say("bootstrap %s", rd_kafka_mock_cluster_bootstraps(mc));

	while (!stop_requested)
	{
		struct pollfd pfd = {.fd = STDIN_FILENO, .events = POLLIN};
		int			ready = poll(&pfd, stdin_open ? 1 : 0, 100);

		if (down_requested)
		{
			down_requested = 0;
			set_brokers(mc, broker_count, -1, 0);
		}
		if (up_requested)
		{
			up_requested = 0;
			set_brokers(mc, broker_count, -1, 1);
		}
		if (ready > 0 && stdin_open)
		{
			ssize_t		got = read(STDIN_FILENO, line + used, sizeof(line) - 1 - used);
			char	   *nl;

			if (got <= 0)
			{
				if (got < 0 && errno == EINTR)
					continue;
				stdin_open = 0;
				continue;
			}
			used += (size_t) got;
			line[used] = '\0';
			while ((nl = strchr(line, '\n')) != NULL)
			{
				*nl = '\0';
				run_command(mc, broker_count, line);
				memmove(line, nl + 1, used - (size_t) (nl + 1 - line) + 1);
				used -= (size_t) (nl + 1 - line);
			}
			if (used == sizeof(line) - 1)
				used = 0;		/* an overlong line is dropped */
		}
	}
	rd_kafka_mock_cluster_destroy(mc);
	rd_kafka_destroy(rk);
	return 0;
}
