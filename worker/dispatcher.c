/*
 * dispatcher.c — the "notiflow dispatcher" background worker: deliveries → providers.
 *
 * One loop, three phases, never a transaction open during network I/O:
 *
 *   1. claim (transaction): resume executions whose delay is over, claim a
 *      batch of due deliveries (queued ones, and sending ones whose lease
 *      expired) with FOR UPDATE SKIP LOCKED (status sending, lease: a HOT
 *      update, see deliveries_due in the schema), check each provider's
 *      circuit and rate limit, and build every request with its adapter;
 *      commit.
 *   2. send (no transaction): hand the requests to libcurl's multi interface
 *      (http.c) and let them progress while the worker waits on its latch and
 *      curl's sockets together.
 *   3. record (transaction): classify each finished attempt with its adapter,
 *      log it in delivery_attempts, and apply the policy: sent → finish the
 *      delivery (which resumes the execution); retryable → back off (with
 *      jitter; Retry-After wins when larger) until max_attempts; then, or on a
 *      permanent error or an open circuit → the next provider of the channel;
 *      none left → failed, a dead letter, and the execution resumes.
 *
 * A transaction that queues deliveries sets this worker's latch at commit
 * (worker_shmem.c); the wait's timeout is the next due retry, delay or lease,
 * so the table is not polled.  A dispatcher killed mid-flight loses nothing:
 * its claimed deliveries come back when their lease expires (a request that
 * had reached the provider is then sent twice, and counted in
 * delivery_attempts).  One asked to stop (SIGTERM) claims nothing more and
 * first records the requests it has in flight (dispatcher_sigterm).
 */
#include "postgres.h"

#include <math.h>

#include <curl/curl.h>

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_extension.h"
#include "common/hashfn.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/lmgr.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/numeric.h"
#include "utils/snapmgr.h"
#include "utils/timeout.h"
#include "utils/timestamp.h"

#include "delivery_repo.h"
#include "engine.h"
#include "execution_repo.h"
#include "http.h"
#include "jsonb_util.h"
#include "provider.h"
#include "provider_repo.h"
#include "push_crypto.h"
#include "safe_input.h"
#include "spi_util.h"
#include "worker.h"

/* One delivery being sent: everything lives in cxt, across transactions. */
typedef struct InFlight
{
	MemoryContext cxt;
	DeliveryJob job;
	ItemPointerData tid;		/* the delivery's row version left by the claim */
	TimestampTz lease;			/* the lease the claim gave it */
	ProviderRequest req;
	const ProviderAdapter *adapter;
	int			max_attempts;
	int			backoff_min_ms;
	int			backoff_max_ms;
	bool		probe;			/* the half-open circuit's probe of its provider */
	double		rate;			/* its provider's rate_per_second: it took a token when > 0 */
	struct ClaimToken *token;	/* that token, while the claim that built it runs */
} InFlight;

/*
 * A rate token the running claim took (in claim_cxt), and whether its
 * delivery sends no request with it (its build failed, its adapter
 * deferred it or built a token request).  Tokens are in shared memory: a
 * rollback does not give them back, so the claim gives them back once its
 * end is known, the unused ones when it commits, all when it is rolled
 * back (its deliveries stay queued, none is sent).
 */
typedef struct ClaimToken
{
	char		provider[NAMEDATALEN + 1];
	double		rate;
	bool		unused;
} ClaimToken;

static List *claim_tokens = NIL;

/*
 * What the current transaction did, for the worker's statistics: added to
 * its slot when the transaction commits (phase_end), forgotten when it is
 * rolled back (a record run again would count it twice).
 */
typedef struct UncommittedCounts
{
	int			sent;
	int			retried;
	int			failed;
} UncommittedCounts;

static UncommittedCounts uncommitted;

/* The stop (see dispatcher_sigterm). */
#define STOP_MARGIN_MS 1000
static volatile sig_atomic_t stop_requested = false;
static volatile TimestampTz stop_requested_at = 0;
static volatile int stop_timeout_ms = 0;	/* notiflow.stop_timeout when the stop was asked for */
static volatile sig_atomic_t phase_running = false;
static TimestampTz stop_deadline = 0;	/* 0: not stopping yet */
static TimeoutId stop_timer;
static bool stop_logged = false;	/* the exit was logged (stop_if_asked) */

/* When a transaction still running while stopping is ended. */
static TimestampTz
stop_kill_at(void)
{
	return stop_requested_at + (TimestampTz) (stop_timeout_ms + STOP_MARGIN_MS) * 1000;
}

/* Per-provider state kept by this worker for one claim: config and circuit. */
typedef struct ProviderInfo
{
	char		name[NAMEDATALEN + 1];	/* a provider name has up to 64 characters */
	bool		found;
	ProviderRow row;
	CircuitState circuit;
	int			lease_ms;		/* provider_lease_ms() of its config */
	bool		probe_taken;
} ProviderInfo;

static DispatcherSlot *my_slot = NULL;

/*
 * Whether this dispatcher still has its slot: a stopping one may outlive it
 * (the launcher started again starts a dispatcher in the same slot), and must
 * not write its counters into the new one's.
 */
#define SLOT_MINE() (my_slot != NULL && my_slot->pid == MyProcPid)
static MemoryContext dispatcher_cxt = NULL;	/* InFlights: live across transactions */
static MemoryContext loop_cxt = NULL;	/* one loop iteration's lists; reset each time */
static MemoryContext claim_cxt = NULL;	/* the InFlights a claim builds, until it commits */

/*
 * Whether the extension is installed in this database, known until a
 * relcache invalidation of its queue table (or of every relation): DROP
 * EXTENSION drops the table, and the invalidation reaches this worker when
 * its next transaction starts or takes a lock.  Scanning pg_extension at
 * every claim was 0.8% of a dispatcher's CPU in the dispatch benchmark.
 */
static Oid	extension_oid = InvalidOid;
static Oid	queue_relid = InvalidOid;
static bool queue_relid_known = false;

/* Reads a float config value with a default. */
static double
config_float(Jsonb *config, const char *key, double def)
{
	JsonbValue *v = jsonb_get(config, key);

	if (v == NULL || v->type != jbvNumeric)
		return def;
	return DatumGetFloat8(DirectFunctionCall1(numeric_float8_no_overflow, NumericGetDatum(v->val.numeric)));
}

/*
 * Reads an integer config value, bounded to [min, INT_MAX]: put_provider
 * refuses values out of range, but a row written some other way must not
 * make every claim raise (a worker that raises exits and claims the same
 * delivery again when it restarts).
 */
static int
config_int(Jsonb *config, const char *key, int def, int min)
{
	return jsonb_value_int_bounded(jsonb_get(config, key), def, min);
}

/*
 * The lease a delivery of this provider needs: notiflow.lease_time, or its
 * longest request (timeout_ms, default 10 s, as worker/http.c reads it) and
 * NOTIFLOW_LEASE_MARGIN_MS, whichever is longer.  The claim gives it
 * (notiflow.provider_lease_ms() computes the same in SQL).  A lease that ran
 * out under a request still waiting for its answer let the next claim send
 * the delivery again.
 */
static int
provider_lease_ms(Jsonb *config)
{
	int			timeout_ms = config_int(config, "timeout_ms", 10000, 1);

	return timeout_ms > notiflow_lease_ms - NOTIFLOW_LEASE_MARGIN_MS
		? (int) Min((int64) timeout_ms + NOTIFLOW_LEASE_MARGIN_MS, (int64) PG_INT32_MAX)
		: notiflow_lease_ms;
}

/*
 * The provider's bucket in shared memory, or NULL with *free_one set to the
 * free bucket met, if any (rate_mutex held): open addressing from the name's
 * hash, so a lookup compares about one name.  Buckets are never emptied,
 * only taken over, so a probe that meets a free one knows the name is not
 * there.  When all are taken (more rate-limited providers than buckets),
 * rate_bucket starts the one refilled longest ago again, full, for this one.
 */
static RateBucket *
rate_bucket_find(const char *provider, RateBucket **free_one)
{
	uint32		home = hash_bytes((const unsigned char *) provider, strlen(provider)) % NOTIFLOW_MAX_RATE_BUCKETS;

	*free_one = NULL;
	for (int i = 0; i < NOTIFLOW_MAX_RATE_BUCKETS; i++)
	{
		RateBucket *c = &notiflow_shared->rate_buckets[(home + i) % NOTIFLOW_MAX_RATE_BUCKETS];

		if (c->name[0] == '\0')
		{
			*free_one = c;
			return NULL;
		}
		if (strcmp(c->name, provider) == 0)
			return c;
	}
	return NULL;
}

/* The provider's bucket, made (full) when it has none (rate_mutex held). */
static RateBucket *
rate_bucket(const char *provider, double rate, TimestampTz now)
{
	RateBucket *b;
	RateBucket *found = rate_bucket_find(provider, &b);

	if (found != NULL)
		return found;
	if (b == NULL)
	{
		b = &notiflow_shared->rate_buckets[0];
		for (int i = 1; i < NOTIFLOW_MAX_RATE_BUCKETS; i++)
			if (notiflow_shared->rate_buckets[i].refilled_at < b->refilled_at)
				b = &notiflow_shared->rate_buckets[i];
	}
	strlcpy(b->name, provider, sizeof(b->name));
	b->tokens = Max(rate, 1.0);
	b->refilled_at = now;
	b->next_slot = 0;
	return b;
}

/*
 * Takes a token from the provider's bucket; returns 0, or the milliseconds to
 * wait when the bucket is empty.  The bucket is in shared memory, one per
 * provider for all the dispatchers (each with rate/N of its own, a provider
 * got half its rate from one of two dispatchers that had all its work, and
 * a burst of N when the rate was below N).  The deliveries beyond the rate
 * get send times one interval (1/rate) apart, after those handed out
 * already: they come back at the rate, and a backlog is deferred about once.
 * (All deferred to the moment the next token came, a backlog was claimed and
 * written again in full at every token.)
 */
static int
rate_limit_wait_ms(const char *provider, double rate)
{
	RateBucket *b;
	TimestampTz now = GetCurrentTimestamp();
	double		capacity = Max(rate, 1.0);
	int			wait_ms = 0;

	if (rate <= 0 || notiflow_shared == NULL)
		return 0;
	SpinLockAcquire(&notiflow_shared->rate_mutex);
	b = rate_bucket(provider, rate, now);
	if (b->refilled_at - now > USECS_PER_SEC)
	{
		/* the clock stepped back: the bucket would get no token until it caught up */
		b->refilled_at = now;
		b->next_slot = Min(b->next_slot, now);
	}
	if (now > b->refilled_at)
	{
		b->tokens = Min(capacity, b->tokens + rate * (now - b->refilled_at) / 1000000.0);
		b->refilled_at = now;
	}
	b->tokens = Min(capacity, b->tokens);	/* the rate may have been lowered */
	if (b->tokens >= capacity)
		b->next_slot = 0;		/* a full bucket: the slots handed out are past or void */
	if (b->tokens >= 1.0)
		b->tokens -= 1.0;
	else
	{
		/* at most an hour ahead: a rate as small as 1e-12 would overflow an int */
		double		interval_ms = Min(1000.0 / rate, 3600.0 * 1000.0);
		TimestampTz first = now + (TimestampTz) Min((1.0 - b->tokens) / rate * 1000000.0, 3600.0 * 1000000.0);
		TimestampTz slot = b->next_slot > now ? b->next_slot + (TimestampTz) (interval_ms * 1000.0) : first;

		slot = Min(Max(slot, first), now + (TimestampTz) 3600 * USECS_PER_SEC);
		b->next_slot = slot;
		wait_ms = (int) ((slot - now) / 1000) + 1;
	}
	SpinLockRelease(&notiflow_shared->rate_mutex);
	return wait_ms;
}

/*
 * Gives back a token taken for a request that was not sent to the provider
 * (see ClaimToken; also one refused for a private address): a provider
 * limited to a few requests a second lost one for each, and a delivery
 * deferred for a push token found the bucket empty when the token came.
 * A bucket taken over by another provider meanwhile is left alone.
 */
static void
rate_limit_refund(const char *provider, double rate)
{
	RateBucket *b;
	RateBucket *free_one;

	if (rate <= 0 || notiflow_shared == NULL)
		return;
	SpinLockAcquire(&notiflow_shared->rate_mutex);
	b = rate_bucket_find(provider, &free_one);
	if (b != NULL)
		b->tokens = Min(Max(rate, 1.0), b->tokens + 1.0);
	SpinLockRelease(&notiflow_shared->rate_mutex);
}

/* Exponential backoff with full jitter, bounded; Retry-After wins when larger. */
static int
backoff_ms(InFlight *f, int attempt, int retry_after_ms)
{
	double		cap = Min((double) f->backoff_max_ms, (double) f->backoff_min_ms * pow(2.0, Max(attempt - 1, 0)));
	double		jittered = f->backoff_min_ms + (cap - f->backoff_min_ms) * ((double) random() / (double) RAND_MAX);

	return (int) Max(jittered, (double) retry_after_ms);
}

/*
 * Looks up (once per claim) a provider's config and circuit.  cache is the
 * claim's list of the providers met so far: a claim meets few, and a list
 * costs less than a hash table made for each claim (0.6% of a dispatcher).
 */
static ProviderInfo *
provider_info(List **cache, const char *name)
{
	ProviderInfo *p;
	ListCell   *lc;

	if (name == NULL)
		name = "";
	foreach(lc, *cache)
	{
		p = lfirst(lc);
		if (strcmp(p->name, name) == 0)
			return p;
	}
	p = palloc0(sizeof(ProviderInfo));
	strlcpy(p->name, name, sizeof(p->name));
	p->found = name[0] != '\0' && provider_repo_load(name, &p->row) && p->row.enabled;
	if (p->found)
	{
		provider_repo_circuit(name, &p->circuit);
		p->lease_ms = provider_lease_ms(p->row.config);
	}
	*cache = lappend(*cache, p);
	return p;
}

/* Ends a delivery that has no provider left: failed, dead letter, execution resumed. */
static void
delivery_give_up(int64 id, const char *request_body, const char *error)
{
	delivery_repo_dead_letter(id, request_body, error);
	delivery_finish(id, "failed", NULL, error);
	uncommitted.failed++;
}

/* Falls back to the next provider, or gives up. */
static void
delivery_fall_back(int64 id, const char *kind, const char *request_body, const char *error)
{
	if (delivery_repo_fall_back(id, kind, error) == NULL)
		delivery_give_up(id, request_body, error);
}

/* Builds the request of one claimed delivery into a new InFlight; NULL when it cannot be sent now. */
static InFlight *
prepare(ClaimedDelivery *c, List **providers)
{
	ProviderInfo *p = provider_info(providers, c->provider);
	const ProviderAdapter *adapter;
	InFlight   *f;
	MemoryContext old;
	int			wait_ms;
	double		rate;
	ClaimToken *token = NULL;
	bool		probing = false;

	if (!p->found)
	{
		delivery_repo_record_attempt(c->id, c->attempts + 1, c->provider, 0, 0, 0, "permanent",
									 "provider missing or disabled", NULL);
		/* a disabled one's kind is known: push and chat fall back within it */
		delivery_fall_back(c->id, p->row.kind, NULL, "provider missing or disabled");
		return NULL;
	}
	adapter = provider_adapter(p->row.kind);
	if (adapter == NULL)
	{
		delivery_repo_record_attempt(c->id, c->attempts + 1, c->provider, 0, 0, 0, "no_adapter",
									 psprintf("no adapter for kind %s", p->row.kind), NULL);
		delivery_fall_back(c->id, p->row.kind, NULL, psprintf("no adapter for kind %s", p->row.kind));
		return NULL;
	}
	if (strcmp(p->circuit.state, "closed") != 0)
	{
		bool		cooled = p->circuit.open_for_ms >= notiflow_circuit_cooldown_ms;

		/*
		 * A probe that gave no verdict within a lease is lost (its dispatcher
		 * died, or it ended deferred or refused): another delivery probes.
		 */
		bool		probe_lost = strcmp(p->circuit.state, "half_open") == 0 &&
			p->circuit.probe_for_ms >= p->lease_ms;

		if (((strcmp(p->circuit.state, "open") == 0 && cooled) || probe_lost) && !p->probe_taken &&
			provider_repo_circuit_probe(p->row.name, p->lease_ms))
			p->probe_taken = probing = true;	/* this delivery is the probe */
		else if (strcmp(p->circuit.state, "open") == 0 && !cooled)
		{
			delivery_repo_record_attempt(c->id, c->attempts + 1, c->provider, 0, 0, 0, "circuit_open",
										 "circuit open", NULL);
			delivery_fall_back(c->id, p->row.kind, NULL, psprintf("circuit of provider %s is open", p->row.name));
			return NULL;
		}
		else
		{
			/* a probe is in flight: wait for its verdict */
			delivery_repo_defer(c->id, Max(notiflow_circuit_cooldown_ms / 10, 100));
			return NULL;
		}
	}
	rate = config_float(p->row.config, "rate_per_second", 0);
	wait_ms = rate_limit_wait_ms(p->row.name, rate);
	if (wait_ms == 0 && rate > 0)
	{
		/* noted at once: a cancel in what follows rolls the claim back (claim) */
		MemoryContext cxt = MemoryContextSwitchTo(claim_cxt);

		token = palloc0(sizeof(ClaimToken));
		strlcpy(token->provider, p->row.name, sizeof(token->provider));
		token->rate = rate;
		claim_tokens = lappend(claim_tokens, token);
		MemoryContextSwitchTo(cxt);
	}
	if (wait_ms > 0)
	{
		delivery_repo_defer(c->id, wait_ms);
		/* (the claim's other deliveries of the provider still wait: the next claim probes) */
		if (probing)
			provider_repo_circuit_release_probe(p->row.name);
		return NULL;
	}

	/*
	 * The claim gave the lease its provider needs; a provider whose timeout_ms
	 * changed between the claim's statement and this read needs it here.
	 */
	if (p->lease_ms > notiflow_lease_ms &&
		c->lease < TimestampTzPlusMilliseconds(GetCurrentTransactionStartTimestamp(), p->lease_ms) &&
		!delivery_repo_extend_lease(c->id, &c->tid, p->lease_ms, &c->lease))
		ereport(WARNING,
				(errmsg("notiflow: could not lengthen the lease of delivery " INT64_FORMAT, c->id),
				 errdetail("Its row did not take the update (a trigger on notiflow.deliveries?); "
						   "if its request outlasts notiflow.lease_time, it is sent again.")));

	{
		/* in the claim's context until the claim commits (claim) */
		MemoryContext cxt = AllocSetContextCreate(claim_cxt, "notiflow delivery", ALLOCSET_SMALL_SIZES);

		f = MemoryContextAllocZero(cxt, sizeof(InFlight));
		f->cxt = cxt;
	}
	old = MemoryContextSwitchTo(f->cxt);
	f->adapter = adapter;
	f->probe = probing;
	f->rate = rate;
	f->token = token;
	f->job.delivery_id = c->id;
	f->tid = c->tid;
	f->lease = c->lease;
	f->job.execution_id = c->execution_id;
	f->job.attempt = c->provider_attempts + 1;
	f->job.channel = pstrdup(c->channel);
	f->job.provider = pstrdup(p->row.name);
	f->job.kind = pstrdup(p->row.kind);
	f->job.config = (Jsonb *) PG_DETOAST_DATUM_COPY(JsonbPGetDatum(p->row.config));
	f->job.recipient = c->recipient ? pstrdup(c->recipient) : NULL;
	f->job.content = (Jsonb *) PG_DETOAST_DATUM_COPY(JsonbPGetDatum(c->content));
	f->max_attempts = config_int(f->job.config, "max_attempts", 5, 1);
	f->backoff_min_ms = config_int(f->job.config, "backoff_min_ms", 1000, 0);
	f->backoff_max_ms = Max(config_int(f->job.config, "backoff_max_ms", 300000, 0), f->backoff_min_ms);
	initStringInfo(&f->req.body);
	MemoryContextSwitchTo(old);
	return f;
}

/* Runs an adapter's build for an InFlight, in the InFlight's memory context. */
static void
build_in_flight(void *arg)
{
	InFlight   *f = arg;
	MemoryContext old = MemoryContextSwitchTo(f->cxt);

	f->adapter->build(&f->job, &f->req);
	if (f->req.url == NULL && f->req.defer_ms <= 0)
		ereport(ERROR, (errmsg("adapter %s built no URL", f->job.kind)));
	MemoryContextSwitchTo(old);
}

/* Gives back the circuit probe a delivery holds, if it is one: it brings no verdict. */
static void
release_probe(InFlight *f)
{
	if (f->probe)
		provider_repo_circuit_release_probe(f->job.provider);
}

/* For a delivery its claim sends no request for: its probe, and its provider's token (ClaimToken). */
static void
release_unsent(InFlight *f)
{
	release_probe(f);
	if (f->token != NULL)
		f->token->unused = true;
}

/* Runs one adapter's build in a subtransaction; false with *error set when it raises. */
static bool
build_one(InFlight *f, char **error)
{
	ErrorData  *edata = run_in_subtransaction(build_in_flight, f);

	if (edata == NULL)
		return true;
	if (error_is_interrupt(edata))
		ReThrowError(edata);	/* a stop's cancel: the claim rolls back, nothing fails */
	*error = edata->detail ? psprintf("%s: %s", edata->message, edata->detail) : edata->message;
	return false;
}

/* Builds every request of the batch; a build that raises fails only its delivery. */
static List *
build_requests(List *prepared)
{
	List	   *ready = NIL;
	ListCell   *lc;

	foreach(lc, prepared)
	{
		InFlight   *f = lfirst(lc);
		char	   *error = NULL;

		if (!build_one(f, &error))
		{
			delivery_repo_record_attempt(f->job.delivery_id, f->job.attempt, f->job.provider, 0, 0, 0,
										 "permanent", error, NULL);
			delivery_fall_back(f->job.delivery_id, f->job.kind, NULL, error);
			release_unsent(f);
			MemoryContextDelete(f->cxt);	/* f with it */
		}
		else if (f->req.defer_ms > 0)
		{
			/* the adapter waits (for a token being fetched): nothing to send, no attempt */
			delivery_repo_defer(f->job.delivery_id, f->req.defer_ms);
			release_unsent(f);
			MemoryContextDelete(f->cxt);	/* f with it */
		}
		else
		{
			/* a preliminary request (a token) goes to another service than the provider's */
			if (f->req.purpose != 0 && f->token != NULL)
			{
				f->token->unused = true;
				f->rate = 0;
			}
			ready = lappend(ready, f);
		}
	}
	return ready;
}

static void
queue_relcache_callback(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == queue_relid)
		queue_relid_known = false;
}

/* Looks the extension and its queue table up. */
static void
extension_lookup(void)
{
	Oid			nsp = InvalidOid;

	extension_oid = get_extension_oid("notiflow", true);
	if (OidIsValid(extension_oid))
		nsp = get_namespace_oid("notiflow", true);
	queue_relid = OidIsValid(nsp) ? get_relname_relid("deliveries", nsp) : InvalidOid;
	/* absent, it is looked for again at every phase (the loop then waits 10 s) */
	queue_relid_known = OidIsValid(queue_relid);
}

/*
 * True when the extension is installed; it then stays so until the
 * transaction ends.  The transaction holds the extension (a share lock on
 * the object), so DROP EXTENSION waits for it rather than dropping the
 * tables under a phase's statements (which failed, and restarted the
 * worker, when a drop raced a claim).  Taking the lock reads the
 * invalidations sent meanwhile: a drop that committed first is seen.
 */
static bool
extension_installed(void)
{
	Oid			locked = InvalidOid;

	for (;;)
	{
		if (!queue_relid_known)
			extension_lookup();
		if (!OidIsValid(queue_relid) || extension_oid == locked)
			return OidIsValid(queue_relid);
		locked = extension_oid;
		LockDatabaseObject(ExtensionRelationId, locked, 0, AccessShareLock);
	}
}

/*
 * The claim front.  A claim scans the queue (deliveries_due) in order, and
 * the deliveries in flight come first there: they were due earliest.  In a
 * backlog, every claim stepped over all of them, the dispatchers' own and
 * each other's (half of the claim's heap fetches in the dispatch benchmark).
 * So while the dispatchers are behind, a claim starts after the shared
 * front, the position of the last delivery taken by a claim that filled its
 * batch.  What lies behind the front and is still due — a lease that ran
 * out, a row committed by a transaction that began before the front's due
 * time, a row another claim skipped as locked and left — is taken by a
 * claim of the whole queue, which each dispatcher makes at least once a
 * second, and whenever there is no valid front: a claim that comes back
 * short has reached the end of what is due and invalidates the front.
 */
#define FULL_CLAIM_INTERVAL_MS 1000

/* Executions resumed per claim; a full batch means more may be due now. */
#define RESUME_BATCH 100

/* How soon to look again at due rows another transaction holds locked. */
#define HELD_RETRY_MS 100

static TimestampTz next_full_claim_at = 0;

/* Sets *front to the claim front; false when there is none. */
static bool
claim_front_get(QueuePosition *front)
{
	bool		valid;

	SpinLockAcquire(&notiflow_shared->mutex);
	valid = notiflow_shared->claim_front_valid;
	front->at = notiflow_shared->claim_front_at;
	front->id = notiflow_shared->claim_front_id;
	SpinLockRelease(&notiflow_shared->mutex);
	return valid;
}

/* Moves the claim front on to last (when further), or invalidates it (last NULL). */
static void
claim_front_set(const QueuePosition *last)
{
	QueuePosition front;

	SpinLockAcquire(&notiflow_shared->mutex);
	front.at = notiflow_shared->claim_front_at;
	front.id = notiflow_shared->claim_front_id;
	if (last == NULL)
		notiflow_shared->claim_front_valid = false;
	else if (!notiflow_shared->claim_front_valid || queue_position_after(last, &front))
	{
		notiflow_shared->claim_front_valid = true;
		notiflow_shared->claim_front_at = last->at;
		notiflow_shared->claim_front_id = last->id;
	}
	SpinLockRelease(&notiflow_shared->mutex);
}

/*
 * Claims up to limit due deliveries: after the claim front, or from the start
 * of the queue (*from_start).
 */
static List *
claim_due(int limit, bool *from_start)
{
	TimestampTz now = GetCurrentTimestamp();
	QueuePosition front;
	QueuePosition last;
	bool		from_front;
	List	   *claimed;

	from_front = now < next_full_claim_at && claim_front_get(&front);
	claimed = delivery_repo_claim(limit, notiflow_lease_ms, from_front ? &front : NULL, &last);
	if (!from_front)
		next_full_claim_at = TimestampTzPlusMilliseconds(now, FULL_CLAIM_INTERVAL_MS);
	claim_front_set(list_length(claimed) == limit ? &last : NULL);
	if (from_front && SLOT_MINE())
		pg_atomic_fetch_add_u64(&my_slot->claimed_after_front, list_length(claimed));
	*from_start = !from_front;
	return claimed;
}

/* Starts a transaction for one phase of the loop. */
static void
phase_begin(const char *activity)
{
	/* (a SIGTERM from here on cancels this transaction, or finds its timer armed) */
	phase_running = true;
	/* stopping: this transaction ends at the latest at the stop timeout and its margin */
	if (stop_requested)
		enable_timeout_at(stop_timer, stop_kill_at());
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "notiflow: SPI_connect failed");
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, activity);
}

/* After a phase's transaction ended (committed or rolled back): no stop cancel or timer for it. */
static void
phase_over(void)
{
	phase_running = false;
	QueryCancelPending = false; /* a stop's cancel that came too late for this phase */
	if (stop_requested)
		disable_timeout(stop_timer, false);
}

/* Commits a phase. */
static void
phase_end(void)
{
	PopActiveSnapshot();
	SPI_finish();
	CommitTransactionCommand();
	phase_over();
	if (SLOT_MINE() && (uncommitted.sent | uncommitted.retried | uncommitted.failed) != 0)
	{
		pg_atomic_fetch_add_u64(&my_slot->sent, uncommitted.sent);
		pg_atomic_fetch_add_u64(&my_slot->retried, uncommitted.retried);
		pg_atomic_fetch_add_u64(&my_slot->failed, uncommitted.failed);
	}
	memset(&uncommitted, 0, sizeof(uncommitted));
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
}

/* What phase_try rolls back and returns instead of raising. */
#define ABSORB_CONFLICTS	0x01	/* a lock conflict */
#define ABSORB_DATA_ERRORS	0x02	/* an error about the data (isolatable) */
#define ABSORB_CANCEL		0x04	/* a query cancel (one a SIGTERM makes: see dispatcher_sigterm) */

/*
 * True for an error about the rows a phase wrote: a value out of range or
 * badly encoded (class 22), a constraint (23, 27, 44), a value too large for
 * an index someone added (54), or a trigger or function someone added that
 * refuses them (P0: PL/pgSQL's RAISE; 38, 39: PL/Python, PL/Perl, PL/Tcl and
 * C functions; 2F, 21, 09).  Anything else (a privilege taken away, a table
 * missing, locks, resources, I/O, internal errors) is about the server and
 * would fail every record alike: it ends the worker, as before.
 */
static bool
error_is_about_data(const ErrorData *edata)
{
	int			category = ERRCODE_TO_CATEGORY(edata->sqlerrcode);

	return edata->elevel == ERROR &&
		(category == ERRCODE_DATA_EXCEPTION ||
		 category == ERRCODE_INTEGRITY_CONSTRAINT_VIOLATION ||
		 category == ERRCODE_TRIGGERED_DATA_CHANGE_VIOLATION ||
		 category == ERRCODE_WITH_CHECK_OPTION_VIOLATION ||
		 category == ERRCODE_PROGRAM_LIMIT_EXCEEDED ||
		 category == ERRCODE_PLPGSQL_ERROR ||
		 category == ERRCODE_EXTERNAL_ROUTINE_EXCEPTION ||
		 category == ERRCODE_EXTERNAL_ROUTINE_INVOCATION_EXCEPTION ||
		 category == ERRCODE_SQL_ROUTINE_EXCEPTION ||
		 category == ERRCODE_CARDINALITY_VIOLATION ||
		 category == ERRCODE_TRIGGERED_ACTION_EXCEPTION);
}

/*
 * Runs a phase (fn: its transaction, begun and ended by phase_begin and
 * phase_end).  When it raises an error that absorb names, the transaction is
 * rolled back, the error logged, and the error returned; any other error is
 * raised (it ends the worker).  NULL when it committed.
 */
static ErrorData *
phase_try(void (*fn) (void *arg), void *arg, int absorb)
{
	MemoryContext cxt = CurrentMemoryContext;
	ErrorData  *volatile edata = NULL;

	PG_TRY();
	{
		fn(arg);
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		if (!(((absorb & ABSORB_CONFLICTS) && error_is_lock_conflict(edata)) ||
			  ((absorb & ABSORB_CANCEL) && edata->sqlerrcode == ERRCODE_QUERY_CANCELED) ||
			  ((absorb & ABSORB_DATA_ERRORS) && error_is_about_data(edata))))
			PG_RE_THROW();
		HOLD_INTERRUPTS();
		EmitErrorReport();
		FlushErrorState();
		AbortCurrentTransaction();
		phase_over();
		RESUME_INTERRUPTS();
		memset(&uncommitted, 0, sizeof(uncommitted));
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
	return edata;
}

/* phase_try, absorbing lock conflicts and cancels when absorb is set; true when it committed. */
static bool
phase_run(void (*fn) (void *arg), void *arg, bool absorb)
{
	return phase_try(fn, arg, absorb ? ABSORB_CONFLICTS | ABSORB_CANCEL : 0) == NULL;
}

/* The arguments and results of claim_transaction. */
typedef struct ClaimCall
{
	int			limit;
	long		next_due_ms;
	bool		extension_present;
	int			claimed_count;
	List	   *ready;
} ClaimCall;

/*
 * Status callbacks kept because they came before their send was recorded
 * (Twilio's; 47_delivery_events.sql): a record applies those of its
 * deliveries, and this sweep, at most every EARLY_SWEEP_MS, those kept after
 * the record looked.  While some are kept the dispatcher looks again within
 * EARLY_SWEEP_MS; the callback that keeps one wakes the dispatchers.
 */
#define EARLY_SWEEP_MS 500
static TimestampTz early_swept_at = 0;

/* Sweeps when it is time; returns whether to look again within EARLY_SWEEP_MS. */
static bool
sweep_early_events(void)
{
	TimestampTz now = GetCurrentTimestamp();

	/* too soon: maybe a callback kept one since the last sweep and woke us */
	if (!TimestampDifferenceExceeds(early_swept_at, now, EARLY_SWEEP_MS))
		return true;
	early_swept_at = now;
	delivery_repo_sweep_early_events();		/* nothing to do when none is kept: it looks first */
	return delivery_repo_early_events_kept();
}

/* The claim's transaction (claim). */
static void
claim_transaction(void *arg)
{
	ClaimCall  *call = arg;
	int			limit = call->limit;
	long	   *next_due_ms = &call->next_due_ms;
	bool	   *extension_present = &call->extension_present;
	int		   *claimed_count = &call->claimed_count;
	List	   *ready = NIL;
	List	   *prepared = NIL;
	ListCell   *lc;

	*claimed_count = 0;
	phase_begin("notiflow: claiming deliveries");

	/*
	 * The claim need not wait for its WAL flush: were it lost in a crash, its
	 * deliveries would be queued again and sent, just as they are when a
	 * durable claim's lease runs out.  Sending starts a flush earlier.
	 */
	(void) set_config_option("synchronous_commit", "off", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_LOCAL, true, 0, false);
	*extension_present = extension_installed();
	if (*extension_present)
	{
		List	   *providers = NIL;
		List	   *claimed;
		bool		from_start = false;
		int			resumed = 0;
		int			due;
		bool		early_soon;

		/* first, while this transaction holds no row */
		early_soon = sweep_early_events();
		due = execution_resume_due(RESUME_BATCH, &resumed);
		claimed = limit > 0 ? claim_due(limit, &from_start) : NIL;
		*claimed_count = list_length(claimed);
		foreach(lc, claimed)
		{
			InFlight   *f = prepare(lfirst(lc), &providers);

			if (f != NULL)
				prepared = lappend(prepared, f);
		}
		ready = build_requests(prepared);
		/*
		 * A full claim leaves more due now, most likely: the loop claims
		 * again as soon as it has room, so the next due time is not read
		 * (that query was 1.7% of a dispatcher's CPU in a backlog).
		 */
		if (limit > 0 && *claimed_count == limit)
			*next_due_ms = 0;
		else
		{
			bool		overdue;

			*next_due_ms = delivery_repo_next_due_ms(limit > 0 && *claimed_count < limit, &overdue);

			/*
			 * Due when the claim looked, yet neither claimed from the start
			 * of the queue nor resumed in a batch that had room (or resumed
			 * none of a full one): another transaction holds those rows
			 * (SKIP LOCKED passed them) or their correlation keys, and its
			 * end may wake nobody.  Look again a little later, not at once
			 * in a loop.  (Rows that fell due since are taken at once.)
			 */
			if (*next_due_ms == 0 && overdue && from_start && (due < RESUME_BATCH || resumed == 0))
				*next_due_ms = HELD_RETRY_MS;
		}
		/* kept early callbacks: look again soon, a record that commits later makes them match */
		if (early_soon && (*next_due_ms < 0 || *next_due_ms > EARLY_SWEEP_MS))
			*next_due_ms = EARLY_SWEEP_MS;
		if (SLOT_MINE())
			pg_atomic_fetch_add_u64(&my_slot->claimed, *claimed_count);
	}
	/* the list must outlive the transaction's SPI memory */
	{
		MemoryContext old = MemoryContextSwitchTo(loop_cxt);

		call->ready = list_copy(ready);
		MemoryContextSwitchTo(old);
	}
	phase_end();
}

/*
 * Gives back the claim's tokens once its end is known: all of them when it
 * was rolled back or the worker ends in it (nothing it took was sent), only
 * the unused ones when it committed.
 */
static void
claim_tokens_give_back(bool all)
{
	ListCell   *lc;

	foreach(lc, claim_tokens)
	{
		ClaimToken *t = lfirst(lc);

		if (all || t->unused)
			rate_limit_refund(t->provider, t->rate);
	}
	claim_tokens = NIL;
}

/*
 * Phase 1: claims up to limit deliveries and builds their requests.  Returns
 * the InFlights to send; sets *next_due_ms and *extension_present.
 *
 * A claim that loses a lock conflict (a deadlock, lock_timeout: a resume of
 * a due execution, a circuit's probe, a delivery given up) is rolled back and
 * looked at again HELD_RETRY_MS later; it ended the worker, and with it the
 * requests in flight, whose deliveries were sent again after their lease.
 * Its InFlights go with claim_cxt; those it built are moved out of it once
 * it committed.
 */
static List *
claim(int limit, long *next_due_ms, bool *extension_present, int *claimed_count)
{
	ClaimCall	call = {limit, *next_due_ms, true, 0, NIL};
	ListCell   *lc;
	bool		committed;

	claim_cxt = AllocSetContextCreate(dispatcher_cxt, "notiflow claim", ALLOCSET_SMALL_SIZES);
	claim_tokens = NIL;
	committed = phase_run(claim_transaction, &call, true);
	if (!committed)
	{
		ereport(LOG, (errmsg("notiflow: the claim was rolled back (a lock conflict, or a cancel); claiming again in %d ms", HELD_RETRY_MS)));
		push_tokens_forget_pending();	/* a token request it built was not sent */
		call.ready = NIL;
		call.claimed_count = 0;
		call.next_due_ms = HELD_RETRY_MS;
	}
	claim_tokens_give_back(!committed);
	foreach(lc, call.ready)
	{
		((InFlight *) lfirst(lc))->token = NULL;	/* freed with claim_cxt */
		MemoryContextSetParent(((InFlight *) lfirst(lc))->cxt, dispatcher_cxt);
	}
	MemoryContextDelete(claim_cxt);
	claim_cxt = NULL;
	*next_due_ms = call.next_due_ms;
	*extension_present = call.extension_present;
	*claimed_count = call.claimed_count;
	return call.ready;
}

/*
 * True when the provider's circuit is closed with no failures; looked up once
 * per record batch (*healthy lists the providers found so: few, as in
 * provider_info).
 */
static bool
provider_known_healthy(List **healthy, const char *provider)
{
	CircuitState cs;
	ListCell   *lc;

	foreach(lc, *healthy)
	{
		if (strcmp(lfirst(lc), provider) == 0)
			return true;
	}
	provider_repo_circuit(provider, &cs);
	if (cs.failures > 0 || strcmp(cs.state, "closed") != 0)
		return false;
	*healthy = lappend(*healthy, pstrdup(provider));
	return true;
}

/* Forgets that a provider was found healthy (it just failed). */
static void
provider_not_healthy(List **healthy, const char *provider)
{
	ListCell   *lc;

	foreach(lc, *healthy)
	{
		if (strcmp(lfirst(lc), provider) == 0)
		{
			*healthy = foreach_delete_current(*healthy, lc);
			return;
		}
	}
}

static const char *const outcome_classes[] = {"sent", "retry", "permanent", "invalid_recipient", "again",
"rejected"};

/* Classifies one finished attempt with its adapter. */
static void
classify(InFlight *f, ProviderResponse *resp, bool refused_private, ProviderResult *res)
{
	memset(res, 0, sizeof(ProviderResult));
	if (refused_private)
	{
		res->outcome = OUTCOME_PERMANENT;
		res->error = pstrdup(resp->curl_error ? resp->curl_error
							 : "refused: the URL resolves to a private address");
	}
	else
		f->adapter->classify(&f->job, &f->req, resp, res);
	if (res->outcome != OUTCOME_SENT && res->error == NULL)
		res->error = psprintf("HTTP %ld", resp->status);
}

/* Applies the policy to an attempt that did not send (inside the record transaction). */
static void
apply_not_sent(InFlight *f, ProviderResult *res)
{
	const char *logged_body = f->req.log_body ? f->req.log_body : f->req.body.data;

	switch (res->outcome)
	{
		case OUTCOME_SENT:
			Assert(false);
			break;
		case OUTCOME_RETRY:
			if (f->job.attempt < f->max_attempts)
			{
				delivery_repo_retry_later(f->job.delivery_id,
										  backoff_ms(f, f->job.attempt, res->retry_after_ms), res->error);
				uncommitted.retried++;
			}
			else
				delivery_fall_back(f->job.delivery_id, f->job.kind, logged_body,
								   psprintf("gave up after %d attempts: %s", f->job.attempt, res->error));
			break;
		case OUTCOME_INVALID_RECIPIENT:
			if (f->job.recipient != NULL)
			{
				/*
				 * The execution before the subscriber, as status callbacks
				 * lock them (47_delivery_events.sql): the other way round a
				 * bounce reported for the same subscriber could deadlock.
				 * The address is marked before the execution resumes, so
				 * that a node it goes on to skips it.
				 */
				execution_repo_lock_ids(&f->job.execution_id, 1);
				delivery_repo_mark_address_invalid(f->job.delivery_id);
				delivery_give_up(f->job.delivery_id, logged_body, res->error);
				break;
			}
			/* the provider's own configured destination is broken: another provider may work */
			/* FALLTHROUGH */
		case OUTCOME_PERMANENT:
			delivery_fall_back(f->job.delivery_id, f->job.kind, logged_body, res->error);
			break;
		case OUTCOME_AGAIN:
			delivery_repo_defer(f->job.delivery_id, 0);
			break;
		case OUTCOME_REJECTED:
			/*
			 * Not another provider: an opted-out recipient must not get it
			 * elsewhere.  No dead letter either: nothing failed that a replay
			 * (through the channel's first provider) should send again.
			 */
			delivery_finish(f->job.delivery_id, "failed", NULL, res->error);
			uncommitted.failed++;
			break;
	}
}

/*
 * Feeds an attempt's outcome to its provider's circuit (inside the record
 * transaction).  The circuit counts the provider's failures, not bad
 * addresses: an invalid recipient does not count, nor does any failure of a
 * request whose URL came from data (a subscriber's webhook or push
 * endpoint): that host is the subscriber's, and one dead or throttled
 * endpoint must not open the circuit for every other delivery.  Its
 * successes still close a circuit.
 */
static void
count_in_circuit(InFlight *f, ProviderResult *res, List **healthy)
{
	/*
	 * An answer about the recipient is a coherent answer: the provider works.
	 * It counts as a success, so that a run of bad addresses does not open the
	 * circuit, and a half-open circuit's probe that meets one closes it
	 * instead of holding the provider back for a lease.
	 */
	bool		success = res->outcome == OUTCOME_SENT || res->outcome == OUTCOME_REJECTED ||
		(res->outcome == OUTCOME_INVALID_RECIPIENT && f->job.recipient != NULL) ||
		(res->outcome == OUTCOME_PERMANENT && res->recipient_fault);

	if (res->outcome == OUTCOME_AGAIN || (f->req.url_from_data && !success))
	{
		/* no verdict on the provider: a probe is given back, for the next claim */
		release_probe(f);
		return;
	}
	/* a success only writes when it closes a circuit that had failures */
	if (!success || !provider_known_healthy(healthy, f->job.provider))
		provider_repo_circuit_result(f->job.provider, success, notiflow_circuit_failures,
									 success ? NULL : res->error);
	if (!success)
		provider_not_healthy(healthy, f->job.provider);
}

/* Orders indexes of flights (arg) by provider name, then index (qsort_arg). */
static int
circuit_order_cmp(const void *a, const void *b, void *arg)
{
	InFlight  **flights = arg;
	int			ia = *(const int *) a;
	int			ib = *(const int *) b;
	int			c = strcmp(flights[ia]->job.provider, flights[ib]->job.provider);

	return c != 0 ? c : (ia > ib) - (ia < ib);
}

/*
 * Records a sent delivery outside the batch's set-based marking (one that
 * moved on meanwhile, or recorded alone): its attempt counted, its message id
 * kept, its execution resumed.
 */
static void
finish_sent_alone(int64 delivery_id, const char *message_id)
{
	delivery_repo_count_attempt(delivery_id);
	delivery_finish(delivery_id, "sent", message_id, NULL);
}

/* Orders finished transfers by delivery id (list_sort). */
static int
transfer_delivery_cmp(const ListCell *a, const ListCell *b)
{
	int64		x = ((InFlight *) http_transfer_owner(lfirst(a)))->job.delivery_id;
	int64		y = ((InFlight *) http_transfer_owner(lfirst(b)))->job.delivery_id;

	return x < y ? -1 : x > y ? 1 : 0;
}

/*
 * Phase 3: records the finished transfers, set-based where it counts: the
 * row writer logs every attempt, one statement marks every success sent, the
 * engine resumes their executions in one batch (deliveries_finished).  The
 * rarer outcomes (retry, fallback, dead letter) go one by one.  In a
 * transaction; the extension is installed.
 */
static void
record_results(List *done)
{
	int			n = list_length(done);
	InFlight  **flights = palloc(sizeof(InFlight *) * n);
	ProviderResult *results = palloc(sizeof(ProviderResult) * n);
	AttemptRecord *attempts = palloc0(sizeof(AttemptRecord) * n);
	int64	   *sent_ids = palloc(sizeof(int64) * n);
	int64	   *ids = palloc(sizeof(int64) * n);	/* every delivery, in order */
	char	  **sent_message_ids = palloc(sizeof(char *) * n);
	ItemPointerData *sent_tids = palloc(sizeof(ItemPointerData) * n);
	int			n_sent = 0;
	List	   *finished;
	ListCell   *lc;
	List	   *healthy = NIL;
	bool	   *still_claimed = palloc0(sizeof(bool) * n);
	int			i = 0;

	/*
	 * Rows are locked in delivery id order, all the deliveries before any
	 * execution, as the status callbacks lock them (47_delivery_events.sql):
	 * the deliveries (mark_sent follows the arrays' order; with failures,
	 * all are locked first), then the executions (deliveries_finished).  A
	 * sent one that changed meanwhile is recorded alone, its execution with
	 * it, before the failures are looked at: that rare path keeps no order.
	 */
	list_sort(done, transfer_delivery_cmp);
	foreach(lc, done)
	{
		HttpTransfer *t = lfirst(lc);
		InFlight   *f = http_transfer_owner(t);
		ProviderResponse *resp = http_transfer_response(t);
		AttemptRecord *a = &attempts[i];

		flights[i] = f;
		ids[i] = f->job.delivery_id;
		classify(f, resp, http_transfer_refused_private(t), &results[i]);
		a->delivery_id = f->job.delivery_id;
		a->attempt = f->job.attempt;
		a->provider = f->job.provider;
		a->status_code = resp->status;
		a->curl_code = resp->curl_code;
		a->latency_ms = resp->latency_ms;
		a->error_class = outcome_classes[results[i].outcome];
		a->error = results[i].error;
		/* a preliminary request's answer (an access token) is not kept */
		a->excerpt = f->req.purpose != 0 ? NULL : provider_response_excerpt(resp, 500);
		if (results[i].outcome == OUTCOME_SENT)
		{
			sent_ids[n_sent] = f->job.delivery_id;
			sent_tids[n_sent] = f->tid;
			sent_message_ids[n_sent++] = results[i].message_id;
		}
		i++;
	}
	delivery_repo_record_attempts(attempts, n);

	/*
	 * With failures among them, mark_sent's pass over the sent ones and the
	 * pass over the failed ones below would be two ascending passes, not one
	 * order: all of them are locked first, in one.
	 */
	if (n_sent < n)
		delivery_repo_lock(ids, n);
	finished = delivery_repo_mark_sent(sent_ids, sent_message_ids, sent_tids, n_sent);
	if (list_length(finished) < n_sent)
	{
		/* some moved on meanwhile (a provider's event came first): record those alone */
		for (int k = 0; k < n; k++)
		{
			bool		marked = false;

			if (results[k].outcome != OUTCOME_SENT)
				continue;
			foreach(lc, finished)
				marked |= ((FinishedDelivery *) lfirst(lc))->delivery_id == flights[k]->job.delivery_id;
			if (marked)
				continue;
			finish_sent_alone(flights[k]->job.delivery_id, results[k].message_id);
		}
	}
	/*
	 * A failure moves the delivery on (retry, fallback, dead letter) only
	 * when it is still this claim's: one finished meanwhile (a provider's
	 * event came first after a timeout) or claimed again after its lease ran
	 * out stays as it is.  The attempt is logged either way.
	 */
	for (int k = 0; k < n; k++)
		still_claimed[k] = results[k].outcome != OUTCOME_SENT &&
			delivery_repo_still_claimed(flights[k]->job.delivery_id, flights[k]->lease);
	deliveries_finished(finished);
	uncommitted.sent += n_sent;

	for (int k = 0; k < n; k++)
		if (still_claimed[k])
			apply_not_sent(flights[k], &results[k]);

	/*
	 * The circuits last, by provider name (each provider's results in their
	 * order): in delivery id order, two dispatchers recording failures of the
	 * same two providers took their circuit rows in opposite orders, and
	 * deadlocked, during an outage, when records run most.
	 */
	{
		int		   *order = palloc(sizeof(int) * n);

		for (int k = 0; k < n; k++)
			order[k] = k;
		qsort_arg(order, n, sizeof(int), circuit_order_cmp, flights);
		for (int k = 0; k < n; k++)
			count_in_circuit(flights[order[k]], &results[order[k]], &healthy);
	}

	/*
	 * Status callbacks that came before these sends were recorded, for the
	 * kinds matched by message id alone (Twilio): last, after every row
	 * this record locks in its order.  One that commits after this looked
	 * is the sweep's (claim_transaction).
	 */
	{
		int			n_early = 0;

		for (int k = 0; k < n; k++)
			if (results[k].outcome == OUTCOME_SENT && strcmp(flights[k]->job.kind, "twilio") == 0)
				ids[n_early++] = flights[k]->job.delivery_id;
		delivery_repo_apply_early_events(ids, n_early);
	}
}

/* The record's transaction (record). */
static void
record_transaction(void *arg)
{
	phase_begin("notiflow: recording delivery attempts");
	if (extension_installed())
		record_results((List *) arg);
	phase_end();
}

/*
 * Records finished transfers in one transaction.  When it loses a lock
 * conflict (the victim of a deadlock: executions and correlation keys are
 * locked in different orders by different paths), it is rolled back and run
 * again, up to RECORD_ATTEMPTS times: the results are still in memory, and
 * the other transaction has gone on meanwhile.  Ending the worker instead
 * would lose them, and their deliveries would be sent again after their
 * lease.  Returns NULL, or an error about the data (error_is_about_data),
 * rolled back; other errors are raised.
 */
#define RECORD_ATTEMPTS 5

static ErrorData *
record_together(List *done)
{
	int			cancels = 0;

	for (int attempt = 1;;)
	{
		ErrorData  *e = phase_try(record_transaction, done,
								  ABSORB_DATA_ERRORS | ABSORB_CANCEL |
								  (attempt < RECORD_ATTEMPTS ? ABSORB_CONFLICTS : 0));

		if (e == NULL || error_is_about_data(e))
			return e;
		/*
		 * A cancel (a stop's: see dispatcher_sigterm) is no attempt: the
		 * record runs again; but not for ever (an operator cancelling it
		 * again and again, a trigger raising 57014): then as a data error.
		 */
		if (e->sqlerrcode != ERRCODE_QUERY_CANCELED)
			attempt++;
		else if (++cancels >= RECORD_ATTEMPTS)
			return e;
		ereport(LOG,
				(errmsg("notiflow: recording %d delivery attempts again (try %d of %d)",
						list_length(done), attempt, RECORD_ATTEMPTS)));
		if (SLOT_MINE())
			pg_atomic_fetch_add_u64(&my_slot->record_retries, 1);
	}
}

/* A transfer whose record failed alone, and why (record_alone_transaction). */
typedef struct Unrecordable
{
	HttpTransfer *transfer;
	ErrorData  *error;
	const char *outcome;		/* set by record_alone_transaction: how it was recorded */
} Unrecordable;

/*
 * The last resort for one transfer whose record failed alone (a trigger or
 * constraint someone added refuses its attempt row, say): what
 * record_results does, without the attempt row.  Sent: sent (the provider
 * has it; a retry would send it twice).  Anything else: the policy of
 * apply_not_sent (retry, fallback, dead letter, opted out...).  Then the
 * circuit.  Only while it is still this claim's.
 */
static void
record_alone_transaction(void *arg)
{
	Unrecordable *u = arg;
	InFlight   *f = http_transfer_owner(u->transfer);
	ProviderResult res;
	List	   *healthy = NIL;

	phase_begin("notiflow: recording a delivery attempt without its row");
	if (extension_installed())
	{
		classify(f, http_transfer_response(u->transfer), http_transfer_refused_private(u->transfer), &res);
		if (res.outcome == OUTCOME_SENT)
		{
			/* as record_results: kept even when it moved on meanwhile (its message id, the count) */
			finish_sent_alone(f->job.delivery_id, res.message_id);
			uncommitted.sent++;
		}
		else if (delivery_repo_still_claimed(f->job.delivery_id, f->lease))
			apply_not_sent(f, &res);
		count_in_circuit(f, &res, &healthy);
		u->outcome = outcome_classes[res.outcome];
	}
	phase_end();
}

/*
 * Records the finished transfers (phase 3) and frees them.  When the
 * extension was dropped while they were in flight, there is nothing left to
 * record them in.
 *
 * A record that fails for its data is run again one transfer at a time, so
 * that the one whose rows are refused does not take the others with it.
 * Raised, the error ended the worker, whose restart met the same answers
 * again after their lease: every request of the batch was sent again, round
 * after round.  The one that fails alone too ends as record_alone_transaction
 * says; if even that fails, it is left to its lease (and logged).
 */
static void
record(List *done)
{
	ListCell   *lc;
	ErrorData  *e = record_together(done);

	if (e != NULL && list_length(done) > 1)
		ereport(LOG,
				(errmsg("notiflow: recording %d delivery attempts one by one", list_length(done)),
				 errdetail("Recording them together failed: %s", e->message)));
	if (e != NULL)
	{
		foreach(lc, done)
		{
			Unrecordable u = {lfirst(lc), NULL, NULL};
			InFlight   *f = http_transfer_owner(u.transfer);
			ErrorData  *alone;

			if (list_length(done) > 1 && (u.error = record_together(list_make1(u.transfer))) == NULL)
				continue;
			if (u.error == NULL)
				u.error = e;
			alone = phase_try(record_alone_transaction, &u, ABSORB_CONFLICTS | ABSORB_DATA_ERRORS | ABSORB_CANCEL);

			/* a cancel (a stop's) or a lock conflict: once more */
			if (alone != NULL && !error_is_about_data(alone))
				alone = phase_try(record_alone_transaction, &u,
								  ABSORB_CONFLICTS | ABSORB_DATA_ERRORS | ABSORB_CANCEL);
			if (alone == NULL && u.outcome != NULL)
				ereport(LOG,
						(errmsg("notiflow: recorded delivery " INT64_FORMAT " (%s) without its attempt row",
								f->job.delivery_id, u.outcome),
						 errdetail("Recording its attempt failed: %s", u.error->message)));
			if (alone != NULL)
				ereport(WARNING,
						(errmsg("notiflow: could not record the attempt of delivery " INT64_FORMAT, f->job.delivery_id),
						 errdetail("It is claimed again when its lease runs out, and sent again."),
						 errhint("Something refuses notiflow's own writes to this delivery (a trigger or constraint on notiflow.deliveries?).")));
		}
	}
	foreach(lc, done)
	{
		HttpTransfer *t = lfirst(lc);
		InFlight   *f = http_transfer_owner(t);

		http_transfer_free(t);
		MemoryContextDelete(f->cxt);	/* f with it */
	}
	if (SLOT_MINE())
		pg_atomic_write_u64(&my_slot->in_flight, http_in_flight());
}

/*
 * Stopping (SIGTERM: a server shutdown, fewer notiflow.dispatch_workers, a
 * launcher that ends, pg_terminate_backend).  Ending at once, as die() does,
 * abandoned the requests in flight: the provider had them, and their
 * deliveries were sent again after their lease.  Instead the dispatcher
 * claims nothing more (what a claim under way took is given back), waits up
 * to notiflow.stop_timeout (as it was when the stop was asked for) for the
 * answers, records them, and exits; what is still in flight then is left to
 * its lease (and logged).
 *
 * No transaction of the dispatcher's outlives the stop timeout by more than
 * STOP_MARGIN_MS (one waiting for a lock a prepared transaction holds, say):
 * the one running when SIGTERM comes is cancelled (it rolls back, and runs
 * again: a claim, a record), and those begun while stopping run under a
 * timer that does what die() does.  The timer is armed only while stopping:
 * PostgreSQL's SIGALRM sets the latch, and one armed for every transaction
 * woke the idle loop into a claim.  A SIGTERM that comes more than a second
 * after the first ends the dispatcher at once (an operator's second try); in
 * a server shutdown the postmaster's and the ending launcher's
 * (TerminateBackgroundWorker) come together.
 */
static void
dispatcher_sigterm(SIGNAL_ARGS)
{
	int			save_errno = errno;
	TimestampTz now = GetCurrentTimestamp();

	if (!stop_requested)
	{
		stop_requested_at = now;
		stop_timeout_ms = notiflow_stop_timeout_ms;
		stop_requested = true;
		if (phase_running)
		{
			QueryCancelPending = true;
			InterruptPending = true;
		}
	}
	else if (now - stop_requested_at > USECS_PER_SEC)
		die(postgres_signal_arg);
	SetLatch(MyLatch);
	errno = save_errno;
}

/*
 * A query cancel (SIGINT, pg_cancel_backend) cancels the transaction under
 * way, which runs again; between transactions it is not for a worker, and
 * is not even noted: processed at the next log line, outside any PG_TRY, it
 * would end the worker.
 */
static void
dispatcher_sigint(SIGNAL_ARGS)
{
	int			save_errno = errno;

	if (phase_running && !proc_exit_inprogress)
	{
		QueryCancelPending = true;
		InterruptPending = true;
	}
	SetLatch(MyLatch);
	errno = save_errno;
}

/* The stop timer (a SIGALRM handler): what die() does. */
static void
stop_timer_fired(void)
{
	if (!proc_exit_inprogress)
	{
		InterruptPending = true;
		ProcDiePending = true;
	}
	SetLatch(MyLatch);
}

/* Begins the stop, once it was asked for: its deadline. */
static void
stop_begin(void)
{
	int			in_flight;

	if (!stop_requested || stop_deadline != 0)
		return;
	in_flight = http_in_flight();
	stop_deadline = TimestampTzPlusMilliseconds(stop_requested_at, stop_timeout_ms);
	if (in_flight > 0 && stop_timeout_ms > 0)
		ereport(LOG,
				(errmsg_plural("notiflow dispatcher stopping: waiting up to %d ms for %d request in flight",
							   "notiflow dispatcher stopping: waiting up to %d ms for %d requests in flight",
							   in_flight, (int) stop_timeout_ms, in_flight)));
}

/*
 * Called at the top of the loop, no transaction open: begins the stop when it
 * was asked for, and exits once nothing is in flight or the time is up.
 * Returns the milliseconds left to wait for answers, or -1 when not stopping.
 */
static long
stop_if_asked(void)
{
	TimestampTz now;
	int			in_flight = http_in_flight();

	if (!stop_requested)
		return -1;
	stop_begin();
	now = GetCurrentTimestamp();
	if (in_flight == 0)
	{
		ereport(LOG, (errmsg("notiflow dispatcher stopped")));
		stop_logged = true;
		proc_exit(0);
	}
	if (now >= stop_deadline)
	{
		stop_logged = true;
		ereport(LOG,
				(errmsg_plural("notiflow dispatcher stopped with %d request in flight",
							   "notiflow dispatcher stopped with %d requests in flight",
							   in_flight, in_flight),
				 errdetail("Their deliveries are claimed again when their lease runs out; a provider that had them sees them twice."),
				 errhint("Raise notiflow.stop_timeout to wait longer for answers when stopping.")));
		proc_exit(0);
	}
	return (long) ((stop_deadline - now + 999) / 1000);
}

/* Gives back the deliveries a claim took while the stop was asked for (give_back). */
static void
give_back_transaction(void *arg)
{
	ListCell   *lc;

	phase_begin("notiflow: giving back deliveries claimed while stopping");
	if (extension_installed())
		foreach(lc, (List *) arg)
		{
			InFlight   *f = lfirst(lc);

			if (delivery_repo_still_claimed(f->job.delivery_id, f->lease))
				delivery_repo_defer(f->job.delivery_id, 0);
			release_probe(f);
		}
	notiflow_wake_dispatchers_at_commit();	/* the others take them */
	phase_end();
}

/*
 * Gives back what a claim took while the stop was asked for, so that it is
 * not sent now with at most notiflow.stop_timeout to answer; returns what is
 * left to send (all of it when giving back lost a lock conflict).
 */
static List *
give_back(List *ready)
{
	ListCell   *lc;

	if (!stop_requested || ready == NIL || !phase_run(give_back_transaction, ready, true))
		return ready;
	ereport(LOG, (errmsg("notiflow dispatcher stopping: gave back %d deliveries it had just claimed",
						 list_length(ready))));
	foreach(lc, ready)
	{
		InFlight   *f = lfirst(lc);

		/* only now that they are given back for sure: a rollback would send them */
		rate_limit_refund(f->job.provider, f->rate);
		MemoryContextDelete(f->cxt);
	}
	return NIL;
}

/* Releases this worker's slot at exit. */
static void
dispatcher_detach(int code, Datum arg)
{
	/* a claim the worker ends in: nothing it took was sent (see ClaimToken) */
	claim_tokens_give_back(true);

	if (stop_requested && !stop_logged)
		ereport(LOG,
				(errmsg("notiflow dispatcher ended while stopping, before it had recorded what it sent"),
				 errdetail("A transaction ran past notiflow.stop_timeout, or a second SIGTERM came: the deliveries it had claimed are claimed again when their lease runs out, and sent again.")));
	if (my_slot == NULL)
		return;
	SpinLockAcquire(&notiflow_shared->mutex);
	if (my_slot->pid == MyProcPid)	/* not taken over by another dispatcher meanwhile */
	{
		my_slot->pid = 0;
		my_slot->latch = NULL;
	}
	SpinLockRelease(&notiflow_shared->mutex);
}

void
notiflow_dispatcher_main(Datum arg)
{
	int			slot = DatumGetInt32(arg);

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, dispatcher_sigterm);
	pqsignal(SIGINT, dispatcher_sigint);
	BackgroundWorkerUnblockSignals();
	stop_timer = RegisterTimeout(USER_TIMEOUT, stop_timer_fired);
	notiflow_worker_keep_memory();
	BackgroundWorkerInitializeConnection(notiflow_database_name, NULL, 0);
	/* a resume never waits for a correlation key another session holds: see engine.h */
	engine_never_waits_for_keys = true;
	notiflow_worker_plan_settings();
	notiflow_worker_session_settings();

	SpinLockAcquire(&notiflow_shared->mutex);
	my_slot = &notiflow_shared->dispatchers[slot];
	my_slot->pid = MyProcPid;
	my_slot->latch = MyLatch;
	my_slot->database = MyDatabaseId;
	my_slot->started_at = GetCurrentTimestamp();
	/* counters count since this dispatcher started (a slot outlives its dispatchers) */
	pg_atomic_write_u64(&my_slot->claimed, 0);
	pg_atomic_write_u64(&my_slot->claimed_after_front, 0);
	pg_atomic_write_u64(&my_slot->sent, 0);
	pg_atomic_write_u64(&my_slot->retried, 0);
	pg_atomic_write_u64(&my_slot->failed, 0);
	pg_atomic_write_u64(&my_slot->in_flight, 0);
	pg_atomic_write_u64(&my_slot->record_retries, 0);
	SpinLockRelease(&notiflow_shared->mutex);
	before_shmem_exit(dispatcher_detach, (Datum) 0);

	dispatcher_cxt = AllocSetContextCreate(TopMemoryContext, "notiflow dispatcher", ALLOCSET_DEFAULT_SIZES);
	loop_cxt = AllocSetContextCreate(TopMemoryContext, "notiflow dispatcher loop", ALLOCSET_DEFAULT_SIZES);
	srandom((unsigned int) (MyProcPid ^ GetCurrentTimestamp()));
	CacheRegisterRelcacheCallback(queue_relcache_callback, (Datum) 0);
	http_init();

	for (;;)
	{
		long		next_due_ms = -1;
		long		timeout;
		long		curl_ms;
		long		stop_ms;
		bool		extension_present = true;
		int			claimed = 0;
		int			capacity;
		List	   *done;

		notiflow_worker_drop_idle_cancel();
		CHECK_FOR_INTERRUPTS();
		MemoryContextSwitchTo(loop_cxt);
		MemoryContextReset(loop_cxt);
		spi_replan_if_due();	/* plans follow the tables' growth (a queue starts empty) */
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			http_configure();
		}
		if (notiflow_database_dropping(MyDatabaseId))
			proc_exit(0);
		stop_ms = stop_if_asked();

		capacity = notiflow_http_concurrency - http_in_flight();
		if (capacity > 0 && stop_ms < 0)
		{
			List	   *ready = give_back(claim(Min(capacity, notiflow_dispatch_batch_size), &next_due_ms,
												&extension_present, &claimed));
			ListCell   *lc;

			foreach(lc, ready)
			{
				InFlight   *f = lfirst(lc);
				MemoryContext old = MemoryContextSwitchTo(f->cxt);

				http_start(&f->job, &f->req, f);
				MemoryContextSwitchTo(old);
			}
			if (SLOT_MINE())
				pg_atomic_write_u64(&my_slot->in_flight, http_in_flight());
		}

		MemoryContextSwitchTo(loop_cxt);	/* a commit left us in TopMemoryContext */
		done = http_drive();
		if (done != NIL)
		{
			ListCell   *lc;

			/* a request refused for a private address never left the host */
			foreach(lc, done)
				if (http_transfer_refused_private(lfirst(lc)))
				{
					InFlight   *f = http_transfer_owner(lfirst(lc));

					rate_limit_refund(f->job.provider, f->rate);
				}
			record(done);
			MemoryContextSwitchTo(loop_cxt);
		}

		/* more may be due right away: a full batch, or deliveries the records just queued */
		if ((claimed > 0 && claimed == Min(capacity, notiflow_dispatch_batch_size) &&
			 http_in_flight() < notiflow_http_concurrency) || done != NIL)
			continue;

		timeout = extension_present ? next_due_ms : 10000;
		curl_ms = http_timeout_ms();
		if (curl_ms >= 0 && (timeout < 0 || curl_ms < timeout))
			timeout = curl_ms;
		if (stop_ms >= 0 && (timeout < 0 || stop_ms < timeout))
			timeout = stop_ms;
		if (timeout < 0 || timeout > 10000)
			timeout = 10000;	/* a safety net for wake-ups nobody sent */
		(void) WaitLatchOrSocket(MyLatch,
								 WL_LATCH_SET | WL_SOCKET_READABLE | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
								 http_wait_fd(), timeout, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}
