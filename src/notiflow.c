/*
 * notiflow.c — module entry point: _PG_init defines the configuration
 * variables (GUCs, all prefixed "notiflow.").
 *
 * The library works both when loaded on demand by its SQL functions (plain
 * SQL use: triggers, workflows, the engine) and when listed in
 * shared_preload_libraries, where it also registers the background workers
 * that deliver notifications (worker/).
 */
#include "postgres.h"

#include "catalog/namespace.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"

#include "notiflow.h"
#include "worker.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

int			notiflow_max_payload_size_kb = 256;
char	   *notiflow_database_name = NULL;
int			notiflow_dispatch_workers = 1;
int			notiflow_http_concurrency = 256;
int			notiflow_dispatch_batch_size = 200;
int			notiflow_lease_ms = 60000;
int			notiflow_stop_timeout_ms = 5000;
bool		notiflow_allow_private_urls = false;
int			notiflow_circuit_failures = 5;
int			notiflow_circuit_cooldown_ms = 30000;
char	   *notiflow_retention = NULL;
char	   *notiflow_alert_workflow = NULL;
char	   *notiflow_event_ttl = NULL;
static char *alert_circuit_open_after = NULL;
static int	alert_dead_letters = 10;
static char *alert_dead_letters_window = NULL;
static char *alert_worker_down_after = NULL;
static int	alert_kafka_lag = 10000;
static char *health_window = NULL;
static int	api_statement_timeout = 30000;

const char *const notiflow_channel_names[] = {"email", "sms", "push", "chat", "webhook"};

/*
 * Relation OIDs by name, kept per backend: a trigger looks up three tables
 * and a sequence, each two catalog cache probes.  Any change to pg_class
 * names or to schemas (CREATE/DROP EXTENSION, a rename) forgets them all.
 * Only found relations are kept.
 */
#define RELID_CACHE_SIZE 16
typedef struct RelidEntry
{
	char		name[NAMEDATALEN];
	Oid			relid;
} RelidEntry;

static RelidEntry relid_cache[RELID_CACHE_SIZE];
static int	relid_cached = 0;
static bool relid_callbacks = false;
static uint64 relid_resets = 0;	/* a reset during a lookup: its answer is not kept */

static void
relid_cache_reset(Datum arg, int cacheid, uint32 hashvalue)
{
	relid_cached = 0;
	relid_resets++;
}

Oid
notiflow_relid(const char *name)
{
	Oid			nsp;
	Oid			relid;
	uint64		resets;

	for (int i = 0; i < relid_cached; i++)
		if (strcmp(relid_cache[i].name, name) == 0)
			return relid_cache[i].relid;
	if (!relid_callbacks)
	{
		CacheRegisterSyscacheCallback(RELNAMENSP, relid_cache_reset, (Datum) 0);
		CacheRegisterSyscacheCallback(NAMESPACENAME, relid_cache_reset, (Datum) 0);
		relid_callbacks = true;
	}
	resets = relid_resets;
	nsp = get_namespace_oid("notiflow", true);
	relid = OidIsValid(nsp) ? get_relname_relid(name, nsp) : InvalidOid;
	if (OidIsValid(relid) && relid_resets == resets &&
		relid_cached < RELID_CACHE_SIZE && strlen(name) < NAMEDATALEN)
	{
		strlcpy(relid_cache[relid_cached].name, name, NAMEDATALEN);
		relid_cache[relid_cached].relid = relid;
		relid_cached++;
	}
	return relid;
}

/* Defines the GUCs and, when preloaded, registers the background workers. */
void
_PG_init(void)
{
	DefineCustomIntVariable("notiflow.max_payload_size",
							"Largest trigger payload (or inline recipient, or subscriber) accepted.",
							"A trigger whose payload is larger is rejected with SQLSTATE 54000.",
							&notiflow_max_payload_size_kb,
							256,
							1,
							1024 * 1024,
							PGC_USERSET,
							GUC_UNIT_KB,
							NULL, NULL, NULL);

	DefineCustomStringVariable("notiflow.database_name",
							   "Database in which the notiflow workers run.",
							   "Set at server start: workers connected to one database cannot move to another.",
							   &notiflow_database_name,
							   "postgres",
	/* server start only; a library loaded later may not define such a setting (no workers then) */
							   process_shared_preload_libraries_in_progress ? PGC_POSTMASTER : PGC_SIGHUP,
							   0, NULL, NULL, NULL);
	DefineCustomIntVariable("notiflow.dispatch_workers",
							"Number of delivery dispatcher workers.",
							NULL,
							&notiflow_dispatch_workers,
							1, 0, NOTIFLOW_MAX_DISPATCHERS,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("notiflow.http_concurrency",
							"Requests each dispatcher keeps in flight at most.",
							NULL,
							&notiflow_http_concurrency,
							256, 1, 10000,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("notiflow.dispatch_batch_size",
							"Deliveries a dispatcher claims in one transaction at most.",
							NULL,
							&notiflow_dispatch_batch_size,
							200, 1, 10000,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("notiflow.lease_time",
							"How long a claimed delivery stays with its dispatcher before another may claim it.",
							NULL,
							&notiflow_lease_ms,
							60000, 1000, 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("notiflow.stop_timeout",
							"How long a stopping dispatcher waits for the answers to its requests in flight.",
							"Requests still in flight then are sent again after their lease.",
							&notiflow_stop_timeout_ms,
							5000, 0, 600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomBoolVariable("notiflow.allow_private_urls",
							 "Allow URLs from data to reach loopback, private and link-local addresses.",
							 NULL,
							 &notiflow_allow_private_urls,
							 false,
							 PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("notiflow.circuit_failures",
							"Consecutive failures after which a provider's circuit opens.",
							NULL,
							&notiflow_circuit_failures,
							5, 1, 1000,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("notiflow.circuit_cooldown",
							"How long an open circuit rejects deliveries before a probe.",
							NULL,
							&notiflow_circuit_cooldown_ms,
							30000, 100, 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);

	DefineCustomStringVariable("notiflow.retention",
							   "Age after which executions are archived and deleted (an interval).",
							   "Read by notiflow.apply_retention(); daily statistics are kept.",
							   &notiflow_retention,
							   "6 months",
							   PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("notiflow.alert_workflow",
							   "Workflow triggered for every alert raised (empty: none).",
							   NULL,
							   &notiflow_alert_workflow,
							   "",
							   PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("notiflow.event_ttl",
							   "How long an event is kept for the executions that reach a wait on its key later (an interval).",
							   NULL,
							   &notiflow_event_ttl,
							   "1 hour",
							   PGC_SUSET, 0, NULL, NULL, NULL);

	/* read by the SQL of monitoring and alerts (src/sql/80_operations.sql) */
	DefineCustomStringVariable("notiflow.alert_circuit_open_after",
							   "How long a circuit stays open before it raises an alert (an interval).",
							   NULL, &alert_circuit_open_after, "5 minutes",
							   PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("notiflow.alert_dead_letters",
							"New dead letters within notiflow.alert_dead_letters_window that raise an alert.",
							NULL, &alert_dead_letters, 10, 1, INT_MAX,
							PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("notiflow.alert_dead_letters_window",
							   "Window over which new dead letters are counted (an interval).",
							   NULL, &alert_dead_letters_window, "15 minutes",
							   PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("notiflow.alert_worker_down_after",
							   "How long a missing dispatcher is tolerated before an alert (an interval).",
							   NULL, &alert_worker_down_after, "1 minute",
							   PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("notiflow.alert_kafka_lag",
							"Kafka consumer lag (messages) that raises an alert.",
							NULL, &alert_kafka_lag, 10000, 1, INT_MAX,
							PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("notiflow.health_window",
							   "Window of the provider health figures (an interval).",
							   NULL, &health_window, "15 minutes",
							   PGC_SUSET, 0, NULL, NULL, NULL);

	DefineCustomIntVariable("notiflow.api_statement_timeout",
							"statement_timeout of every REST API request (0: none).",
							"Set by the API's pre-request check (notiflow_api.check_api_key) for the rest of the request, "
							"so that no API caller holds a pooled connection with an expensive filter.",
							&api_statement_timeout, 30000, 0, INT_MAX,
							PGC_SUSET, GUC_UNIT_MS, NULL, NULL, NULL);

	MarkGUCPrefixReserved("notiflow");

	if (process_shared_preload_libraries_in_progress)
		notiflow_workers_register();
}
