/*
 * provider_double.c — an HTTP test double of the notification providers that
 * notiflow's dispatcher talks to: SendGrid, Mailgun, Amazon SES, Twilio,
 * Amazon SNS, Vonage, Slack (Web API and incoming webhooks), Discord,
 * Microsoft Teams (connectors and Workflows) and signed generic webhooks.
 *
 * Integration tests and benchmarks point the providers' base URLs at this
 * process instead of the real APIs.  A request is routed by its path to one
 * row of the provider table; the row checks the credential and the body the
 * way the real provider does (SigV4 signatures are recomputed with the
 * configured secret, webhook HMACs likewise) and answers with the provider's
 * own success or error shape.  Credentials come from a JSON file (--config).
 *
 * Tests steer failures through the control API under /_double/: scripted
 * responses (status with Retry-After, provider error codes, late answers,
 * dropped connections) are consumed in order before normal handling, and
 * every request is kept in a bounded ring that tests read back.
 *
 * Threads and locking: libmicrohttpd runs a pool of epoll threads that call
 * request_handle; a Request belongs to the thread serving its connection.
 * Shared state is small and guarded separately:
 *   - config: loaded before the daemon starts, read-only afterwards;
 *   - stats: atomic counters, no lock;
 *   - scripts: script_lock, taken only while at least one script is loaded;
 *   - the record ring: ring_lock, held only to insert or collect entries
 *     (entries are immutable once inserted and reference counted);
 *   - late answers: the pool thread suspends the connection and hands it to
 *     the delay thread (delay_lock), which resumes it when due; the pool
 *     thread then finishes the request as usual;
 *   - the receive log (--receive-log, for latency benchmarks): one write(2)
 *     of one line per provider request on an O_APPEND descriptor, no lock.
 */
#define _GNU_SOURCE

#include <arpa/inet.h>
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define MAX_BODY (8u * 1024 * 1024)
#define MAX_SEGMENTS 16
#define SIGV4_MAX_SKEW_S 900
#define WEBHOOK_DEFAULT_TOLERANCE_S 300

/* ---------------------------------------------------------------- types */

typedef struct Buf
{
	char *data;
	size_t len;
	size_t cap;
} Buf;

/* One scripted response; spec keeps body, content_type, headers and error. */
typedef struct ScriptStep
{
	json_t *spec;
	int status;
	int retry_after;
	int delay_ms;
	bool drop;
} ScriptStep;

/* A failed check, in the terms the provider's error shape needs. */
typedef struct Problem
{
	int status;
	char code[96];
	char message[512];
} Problem;

typedef struct Provider Provider;

typedef struct Request
{
	struct MHD_Connection *conn;
	const char *method;
	const char *url;
	char *path_buf;
	const char *seg[MAX_SEGMENTS];
	int nseg;
	bool control;
	const Provider *provider;
	Buf body;
	bool too_large;
	ScriptStep step;
	bool delayed;
	uint64_t due_ms;
	struct Request *delay_next;
	json_t *json;
	bool json_tried;
	json_t *form;
	struct MHD_Response *response;
	int status;
	const char *verdict;
	char message_id[128];
	int64_t received_ms;
	int64_t received_us;
} Request;

/* One row per provider endpoint: how to route, check, accept and refuse. */
struct Provider
{
	const char *name;
	bool (*match)(const Request *rq);
	bool (*check)(Request *rq, Problem *p);
	void (*accept)(Request *rq);
	void (*fail)(Request *rq, const Problem *p);
	int soft_status;
};

typedef struct Counters
{
	atomic_ulong requests;
	atomic_ulong accepted;
	atomic_ulong rejected;
	atomic_ulong scripted;
	atomic_ulong dropped;
} Counters;

typedef struct Script
{
	char *match;
	const Provider *provider;
	ScriptStep *steps;
	size_t nsteps;
	size_t next;
	bool repeat;
	struct Script *next_script;
} Script;

typedef enum SigV4Result
{
	SIGV4_OK,
	SIGV4_MISSING,
	SIGV4_MALFORMED,
	SIGV4_UNKNOWN_KEY,
	SIGV4_EXPIRED,
	SIGV4_MISMATCH
} SigV4Result;

static json_t *config;
static bool recording = true;
static int receive_log_fd = -1;

/* ------------------------------------------------------------ utilities */

/* Reallocates or aborts: the double has no useful way to go on without memory. */
static void *xrealloc(void *p, size_t n)
{
	p = realloc(p, n);
	if (p == NULL)
	{
		perror("provider_double");
		abort();
	}
	return p;
}

/* Appends n bytes to b, keeping it NUL-terminated. */
static void buf_put(Buf *b, const char *s, size_t n)
{
	if (b->len + n + 1 > b->cap)
	{
		size_t cap = b->cap ? b->cap : 256;

		while (cap < b->len + n + 1)
			cap *= 2;
		b->data = xrealloc(b->data, cap);
		b->cap = cap;
	}
	memcpy(b->data + b->len, s, n);
	b->len += n;
	b->data[b->len] = '\0';
}

/* Appends a C string to b. */
static void buf_puts(Buf *b, const char *s)
{
	buf_put(b, s, strlen(s));
}

/* Appends printf-style formatted text to b. */
__attribute__((format(printf, 2, 3))) static void buf_printf(Buf *b, const char *fmt, ...)
{
	va_list ap;
	char small[256];
	int n;

	va_start(ap, fmt);
	n = vsnprintf(small, sizeof(small), fmt, ap);
	va_end(ap);
	if ((size_t) n < sizeof(small))
	{
		buf_put(b, small, (size_t) n);
		return;
	}
	{
		char *big = xrealloc(NULL, (size_t) n + 1);

		va_start(ap, fmt);
		vsnprintf(big, (size_t) n + 1, fmt, ap);
		va_end(ap);
		buf_put(b, big, (size_t) n);
		free(big);
	}
}

/* Returns b's text, or "" when nothing was appended yet. */
static const char *buf_str(const Buf *b)
{
	return b->data ? b->data : "";
}

/* Releases b's storage. */
static void buf_free(Buf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
}

/* Appends s to b with XML's five special characters escaped. */
static void buf_put_xml(Buf *b, const char *s)
{
	for (; *s; s++)
	{
		switch (*s)
		{
			case '<': buf_puts(b, "&lt;"); break;
			case '>': buf_puts(b, "&gt;"); break;
			case '&': buf_puts(b, "&amp;"); break;
			case '"': buf_puts(b, "&quot;"); break;
			case '\'': buf_puts(b, "&apos;"); break;
			default: buf_put(b, s, 1);
		}
	}
}

/* Writes n bytes of in as lower-case hex into out (2n+1 bytes). */
static void hex_encode(const unsigned char *in, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";

	for (size_t i = 0; i < n; i++)
	{
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 15];
	}
	out[2 * n] = '\0';
}

/* Computes the hex SHA-256 of data into out (65 bytes). */
static void sha256_hex(const void *data, size_t n, char out[65])
{
	unsigned char md[SHA256_DIGEST_LENGTH];

	SHA256(data, n, md);
	hex_encode(md, sizeof(md), out);
}

/* Returns the wall clock in milliseconds since the epoch. */
static int64_t wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Returns the wall clock in microseconds since the epoch. */
static int64_t wall_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Returns the monotonic clock in milliseconds. */
static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t) ts.tv_sec * 1000 + (uint64_t) ts.tv_nsec / 1000000;
}

/* Formats epoch milliseconds as ISO-8601 UTC with milliseconds. */
static void iso_time(int64_t ms, char *out, size_t n)
{
	time_t secs = (time_t) (ms / 1000);
	struct tm tm;
	char base[32];

	gmtime_r(&secs, &tm);
	strftime(base, sizeof(base), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out, n, "%s.%03dZ", base, (int) (ms % 1000));
}

/* Compares a presented secret with the expected one in constant time; false when either is missing. */
static bool secret_eq(const char *given, const char *expected)
{
	size_t n;

	if (given == NULL || expected == NULL)
		return false;
	n = strlen(expected);
	return strlen(given) == n && CRYPTO_memcmp(given, expected, n) == 0;
}

/* Tells whether s looks like a bare e-mail address (local@domain). */
static bool is_email(const char *s)
{
	const char *at = s ? strchr(s, '@') : NULL;

	return at != NULL && at != s && at[1] != '\0' && strchr(at + 1, '@') == NULL &&
		   strpbrk(s, " \t\r\n<>,;") == NULL;
}

/*
 * Tells whether s is a mailbox as SES takes it in FromEmailAddress: an
 * address, or "Display Name <address>" (a non-ASCII name as RFC 2047 words).
 */
static bool is_mailbox(const char *s)
{
	const char *lt = s ? strrchr(s, '<') : NULL;
	size_t len = s ? strlen(s) : 0;
	char addr[320];

	if (lt == NULL)
		return is_email(s);
	if (lt == s || s[len - 1] != '>' || (size_t) (s + len - 1 - lt - 1) >= sizeof(addr) ||
		strpbrk(s, "\r\n") != NULL)
		return false;
	for (const unsigned char *p = (const unsigned char *) s; p < (const unsigned char *) lt; p++)
		if (*p >= 0x80)
			return false;	/* a raw non-ASCII name: SES wants encoded words */
	memcpy(addr, lt + 1, s + len - 1 - lt - 1);
	addr[s + len - 1 - lt - 1] = '\0';
	return is_email(addr);
}

/* Tells whether s is an E.164 number without its '+': 7 to 15 digits, the first non-zero. */
static bool is_e164_digits(const char *s)
{
	size_t n = strspn(s, "0123456789");

	return s[0] >= '1' && s[0] <= '9' && s[n] == '\0' && n >= 7 && n <= 15;
}

/* Tells whether s is an E.164 number: '+' and 7 to 15 digits, the first non-zero. */
static bool is_e164(const char *s)
{
	return s != NULL && s[0] == '+' && is_e164_digits(s + 1);
}

/* Returns the configured string section.key, or NULL when absent. */
static const char *cred(const char *section, const char *key)
{
	return json_string_value(json_object_get(json_object_get(config, section), key));
}

/* ------------------------------------------------------------------ ids */

static atomic_uint_fast64_t id_counter;
static uint64_t id_seed;

/* Returns a pseudo-random 64-bit value that never repeats within this process. */
static uint64_t id_next(void)
{
	uint64_t z = id_seed + atomic_fetch_add(&id_counter, 1) * 0x9E3779B97F4A7C15ull;

	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

/* Writes n random characters drawn from alphabet into out, NUL-terminated. */
static void id_chars(char *out, size_t n, const char *alphabet)
{
	size_t k = strlen(alphabet);
	uint64_t r = 0;

	for (size_t i = 0; i < n; i++)
	{
		if (i % 8 == 0)
			r = id_next();
		out[i] = alphabet[(r & 0xff) % k];
		r >>= 8;
	}
	out[n] = '\0';
}

/* Writes a random UUID-shaped identifier (36 characters) into out. */
static void id_uuid(char out[37])
{
	char hex[33];

	id_chars(hex, 32, "0123456789abcdef");
	snprintf(out, 37, "%.8s-%.4s-%.4s-%.4s-%.12s", hex, hex + 8, hex + 12, hex + 16, hex + 20);
}

/* ------------------------------------------------------------- requests */

/* Returns request header name (case-insensitive), or NULL. */
static const char *header(const Request *rq, const char *name)
{
	return MHD_lookup_connection_value(rq->conn, MHD_HEADER_KIND, name);
}

/* Returns query argument name, or NULL. */
static const char *query_arg(const Request *rq, const char *name)
{
	return MHD_lookup_connection_value(rq->conn, MHD_GET_ARGUMENT_KIND, name);
}

/* Tells whether the request declares a JSON body. */
static bool has_json_type(const Request *rq)
{
	const char *ct = header(rq, MHD_HTTP_HEADER_CONTENT_TYPE);

	return ct != NULL && strncasecmp(ct, "application/json", 16) == 0;
}

/* Tells whether path segment i exists and equals s. */
static bool seg_is(const Request *rq, int i, const char *s)
{
	return i < rq->nseg && strcmp(rq->seg[i], s) == 0;
}

/* Returns the token of an "Authorization: Bearer <token>" header, or NULL. */
static const char *bearer_token(const Request *rq)
{
	const char *a = header(rq, MHD_HTTP_HEADER_AUTHORIZATION);

	if (a == NULL || strncasecmp(a, "Bearer ", 7) != 0)
		return NULL;
	for (a += 7; *a == ' ';)
		a++;
	return a;
}

/* Checks HTTP Basic credentials against user and password. */
static bool basic_auth_ok(const Request *rq, const char *user, const char *password)
{
	char *given_password = NULL;
	char *given_user = MHD_basic_auth_get_username_password(rq->conn, &given_password);
	bool ok = secret_eq(given_user, user) && secret_eq(given_password, password);

	MHD_free(given_user);
	MHD_free(given_password);
	return ok;
}

/* Parses the body as JSON once; NULL when it is not JSON. */
static json_t *body_json(Request *rq)
{
	if (!rq->json_tried)
	{
		rq->json_tried = true;
		rq->json = json_loadb(buf_str(&rq->body), rq->body.len, 0, NULL);
	}
	return rq->json;
}

/* Returns text as a JSON string, or a placeholder when it is not UTF-8. */
static json_t *json_text(const char *text, size_t n)
{
	json_t *s = json_stringn(text, n);

	return s ? s : json_string("<not utf-8>");
}

typedef struct FormField
{
	char *key;
	Buf value;
} FormField;

typedef struct FormParse
{
	FormField *fields;
	size_t n;
} FormParse;

/* Collects one chunk of a form field; a repeated field's values are joined with ','. */
static enum MHD_Result form_collect(void *cls, enum MHD_ValueKind kind, const char *key,
									const char *filename, const char *content_type,
									const char *transfer_encoding, const char *data, uint64_t off,
									size_t size)
{
	FormParse *fp = cls;
	FormField *f = NULL;

	(void) kind;
	(void) filename;
	(void) content_type;
	(void) transfer_encoding;
	for (size_t i = fp->n; i > 0 && f == NULL; i--)
		if (strcmp(fp->fields[i - 1].key, key) == 0)
			f = &fp->fields[i - 1];
	if (f == NULL)
	{
		fp->fields = xrealloc(fp->fields, (fp->n + 1) * sizeof(FormField));
		f = &fp->fields[fp->n++];
		f->key = strdup(key);
		memset(&f->value, 0, sizeof(f->value));
	}
	else if (off == 0)
		buf_put(&f->value, ",", 1);
	buf_put(&f->value, data, size);
	return MHD_YES;
}

/* Parses an urlencoded or multipart body into a JSON object of fields, once. */
static json_t *body_form(Request *rq)
{
	FormParse fp = {0};
	struct MHD_PostProcessor *pp;

	if (rq->form)
		return rq->form;
	rq->form = json_object();
	pp = MHD_create_post_processor(rq->conn, 16 * 1024, form_collect, &fp);
	if (pp == NULL)
		return rq->form;
	MHD_post_process(pp, buf_str(&rq->body), rq->body.len);
	MHD_destroy_post_processor(pp);
	for (size_t i = 0; i < fp.n; i++)
	{
		json_object_set_new(rq->form, fp.fields[i].key,
							json_text(buf_str(&fp.fields[i].value), fp.fields[i].value.len));
		free(fp.fields[i].key);
		buf_free(&fp.fields[i].value);
	}
	free(fp.fields);
	return rq->form;
}

/* Returns string field name of the body, read as JSON or as a form by its content type. */
static const char *body_field(Request *rq, const char *name)
{
	json_t *source = has_json_type(rq) ? body_json(rq) : body_form(rq);

	return json_string_value(json_object_get(source, name));
}

/* Returns string field name of form fields, or NULL. */
static const char *form_field(Request *rq, const char *name)
{
	return json_string_value(json_object_get(body_form(rq), name));
}

/* ------------------------------------------------------------ responses */

/* Prepares the answer: status, content type and a copy of the body. */
static void respond(Request *rq, int status, const char *ctype, const char *body, size_t len)
{
	rq->response = MHD_create_response_from_buffer(len, (void *) body, MHD_RESPMEM_MUST_COPY);
	rq->status = status;
	if (ctype)
		MHD_add_response_header(rq->response, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
}

/* Prepares a text answer. */
static void respond_text(Request *rq, int status, const char *ctype, const char *text)
{
	respond(rq, status, ctype, text, strlen(text));
}

/* Prepares a JSON answer and releases body. */
static void respond_json(Request *rq, int status, json_t *body)
{
	char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;

	json_decref(body);
	if (text == NULL)
	{
		text = strdup("{\"error\":\"the double could not encode its answer\"}");
		status = 500;
	}
	rq->response =
		MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
	rq->status = status;
	MHD_add_response_header(rq->response, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
}

/* Adds a header to the prepared answer. */
static void respond_header(Request *rq, const char *name, const char *value)
{
	MHD_add_response_header(rq->response, name, value);
}

/* Fills p with status, code and a formatted message; returns false so checks can return it. */
__attribute__((format(printf, 4, 5))) static bool problem(Problem *p, int status,
														   const char *code, const char *fmt,
														   ...)
{
	va_list ap;

	p->status = status;
	snprintf(p->code, sizeof(p->code), "%s", code ? code : "");
	va_start(ap, fmt);
	vsnprintf(p->message, sizeof(p->message), fmt, ap);
	va_end(ap);
	return false;
}

/* Fills p with status and code alone, for providers whose errors are just a code. */
static bool problem_coded(Problem *p, int status, const char *code)
{
	return problem(p, status, code, "%s", "");
}

/* Returns p's message, or the status's reason phrase when none was given. */
static const char *problem_message(const Problem *p)
{
	return p->message[0] ? p->message : MHD_get_reason_phrase_for((unsigned) p->status);
}

/* Returns p's code, or fallback when none was given. */
static const char *problem_code(const Problem *p, const char *fallback)
{
	return p->code[0] ? p->code : fallback;
}

/* Returns p's code as a number, or fallback when none was given. */
static long problem_number(const Problem *p, long fallback)
{
	return p->code[0] ? strtol(p->code, NULL, 10) : fallback;
}

/* ---------------------------------------------------------------- SigV4 */

typedef struct QueryPair
{
	char *key;
	char *value;
} QueryPair;

typedef struct QueryPairs
{
	QueryPair *items;
	size_t n;
} QueryPairs;

/* Appends s to b URI-encoded the SigV4 way: unreserved characters kept, '/' kept when asked. */
static void aws_uri_encode(Buf *b, const char *s, bool keep_slash)
{
	for (; *s; s++)
	{
		unsigned char c = (unsigned char) *s;

		if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
			c == '-' || c == '_' || c == '.' || c == '~' || (keep_slash && c == '/'))
			buf_put(b, s, 1);
		else
			buf_printf(b, "%%%02X", c);
	}
}

/* Collects one query argument, URI-encoded, for the canonical query string. */
static enum MHD_Result query_collect(void *cls, enum MHD_ValueKind kind, const char *key,
									 const char *value)
{
	QueryPairs *qp = cls;
	Buf k = {0}, v = {0};

	(void) kind;
	aws_uri_encode(&k, key, false);
	aws_uri_encode(&v, value ? value : "", false);
	qp->items = xrealloc(qp->items, (qp->n + 1) * sizeof(QueryPair));
	qp->items[qp->n].key = k.data ? k.data : strdup("");
	qp->items[qp->n].value = v.data ? v.data : strdup("");
	qp->n++;
	return MHD_YES;
}

/* Orders query pairs by key, then value, as SigV4 requires. */
static int query_pair_cmp(const void *a, const void *b)
{
	const QueryPair *x = a, *y = b;
	int c = strcmp(x->key, y->key);

	return c ? c : strcmp(x->value, y->value);
}

/* Copies the value of "name=" from an Authorization header's parameter list into out. */
static bool auth_param(const char *auth, const char *name, char *out, size_t outsz)
{
	const char *at = strstr(auth, name);
	size_t n;

	if (at == NULL)
		return false;
	at += strlen(name);
	n = strcspn(at, ", ");
	if (n == 0 || n >= outsz)
		return false;
	memcpy(out, at, n);
	out[n] = '\0';
	return true;
}

/* Replaces 32-byte key with HMAC-SHA256(key, msg). */
static void hmac_step(unsigned char key[32], const char *msg)
{
	unsigned char out[EVP_MAX_MD_SIZE];
	unsigned int outlen = 0;

	HMAC(EVP_sha256(), key, 32, (const unsigned char *) msg, strlen(msg), out, &outlen);
	memcpy(key, out, 32);
}

/* Signs string_to_sign with the SigV4 key derived from secret, date, region and service. */
static void sigv4_sign(const char *secret, const char *date, const char *region,
					   const char *service, const char *string_to_sign, char out[65])
{
	unsigned char key[32];
	unsigned char sig[EVP_MAX_MD_SIZE];
	unsigned int keylen = 0, siglen = 0;
	Buf k0 = {0};

	buf_printf(&k0, "AWS4%s", secret);
	HMAC(EVP_sha256(), k0.data, (int) k0.len, (const unsigned char *) date, strlen(date), key,
		 &keylen);
	buf_free(&k0);
	hmac_step(key, region);
	hmac_step(key, service);
	hmac_step(key, "aws4_request");
	HMAC(EVP_sha256(), key, 32, (const unsigned char *) string_to_sign, strlen(string_to_sign),
		 sig, &siglen);
	hex_encode(sig, siglen, out);
}

/* Appends the canonical header lines for the ';'-separated signed headers; false if one is absent. */
static bool sigv4_canonical_headers(const Request *rq, const char *signed_headers, Buf *out)
{
	char names[512];
	char *save = NULL;

	snprintf(names, sizeof(names), "%s", signed_headers);
	for (char *name = strtok_r(names, ";", &save); name; name = strtok_r(NULL, ";", &save))
	{
		const char *v = header(rq, name);
		bool space = false;

		if (v == NULL)
			return false;
		buf_printf(out, "%s:", name);
		while (*v == ' ' || *v == '\t')
			v++;
		for (; *v; v++)
		{
			if (*v == ' ' || *v == '\t')
				space = true;
			else
			{
				if (space)
					buf_put(out, " ", 1);
				space = false;
				buf_put(out, v, 1);
			}
		}
		buf_put(out, "\n", 1);
	}
	return true;
}

/* Builds the SigV4 canonical request of rq; false when a signed header is absent. */
static bool sigv4_canonical_request(const Request *rq, const char *signed_headers, Buf *out)
{
	QueryPairs qp = {0};
	char payload_hash[65];

	buf_printf(out, "%s\n", rq->method);
	aws_uri_encode(out, rq->url, true);
	buf_put(out, "\n", 1);
	MHD_get_connection_values(rq->conn, MHD_GET_ARGUMENT_KIND, query_collect, &qp);
	qsort(qp.items, qp.n, sizeof(QueryPair), query_pair_cmp);
	for (size_t i = 0; i < qp.n; i++)
	{
		buf_printf(out, "%s%s=%s", i ? "&" : "", qp.items[i].key, qp.items[i].value);
		free(qp.items[i].key);
		free(qp.items[i].value);
	}
	free(qp.items);
	buf_put(out, "\n", 1);
	if (!sigv4_canonical_headers(rq, signed_headers, out))
		return false;
	sha256_hex(buf_str(&rq->body), rq->body.len, payload_hash);
	buf_printf(out, "\n%s\n%s", signed_headers, payload_hash);
	return true;
}

/* Verifies the request's AWS Signature Version 4 for service against the "aws" credentials. */
static SigV4Result sigv4_verify(const Request *rq, const char *service)
{
	const char *auth = header(rq, MHD_HTTP_HEADER_AUTHORIZATION);
	const char *amz_date = header(rq, "X-Amz-Date");
	const char *secret = cred("aws", "secret_access_key");
	const char *region = cred("aws", "region");
	char credential[256], signed_headers[512], signature[128];
	char *scope_part[5];
	char *save = NULL;
	char scope[256], cr_hash[65], expected[65];
	struct tm tm = {0};
	Buf creq = {0}, sts = {0};
	bool ok;

	if (auth == NULL)
		return SIGV4_MISSING;
	if (strncmp(auth, "AWS4-HMAC-SHA256 ", 17) != 0 ||
		!auth_param(auth, "Credential=", credential, sizeof(credential)) ||
		!auth_param(auth, "SignedHeaders=", signed_headers, sizeof(signed_headers)) ||
		!auth_param(auth, "Signature=", signature, sizeof(signature)) || amz_date == NULL ||
		sscanf(amz_date, "%4d%2d%2dT%2d%2d%2dZ", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
			   &tm.tm_hour, &tm.tm_min, &tm.tm_sec) != 6)
		return SIGV4_MALFORMED;
	snprintf(scope, sizeof(scope), "%s", credential);
	for (int i = 0; i < 5; i++)
		if ((scope_part[i] = strtok_r(i ? NULL : scope, "/", &save)) == NULL)
			return SIGV4_MALFORMED;
	if (!secret_eq(scope_part[0], cred("aws", "access_key_id")) || secret == NULL)
		return SIGV4_UNKNOWN_KEY;
	tm.tm_year -= 1900;
	tm.tm_mon -= 1;
	if (labs((long) (time(NULL) - timegm(&tm))) > SIGV4_MAX_SKEW_S)
		return SIGV4_EXPIRED;
	if (strncmp(scope_part[1], amz_date, 8) != 0 || strlen(scope_part[1]) != 8 ||
		strcmp(scope_part[3], service) != 0 || strcmp(scope_part[4], "aws4_request") != 0 ||
		(region != NULL && strcmp(scope_part[2], region) != 0) ||
		!sigv4_canonical_request(rq, signed_headers, &creq))
	{
		buf_free(&creq);
		return SIGV4_MISMATCH;
	}
	sha256_hex(creq.data, creq.len, cr_hash);
	buf_printf(&sts, "AWS4-HMAC-SHA256\n%s\n%s/%s/%s/aws4_request\n%s", amz_date, scope_part[1],
			   scope_part[2], service, cr_hash);
	sigv4_sign(secret, scope_part[1], scope_part[2], service, sts.data, expected);
	ok = secret_eq(signature, expected);
	buf_free(&creq);
	buf_free(&sts);
	return ok ? SIGV4_OK : SIGV4_MISMATCH;
}

/* Describes a failed SigV4 check in the vocabulary of a JSON (SES) or query (SNS) API. */
static bool sigv4_problem(Problem *p, SigV4Result r, bool query_api)
{
	static const struct
	{
		int status;
		const char *json_code;
		const char *query_code;
		const char *message;
	} table[] = {
		[SIGV4_MISSING] = {403, "MissingAuthenticationTokenException",
						   "MissingAuthenticationToken", "Missing Authentication Token"},
		[SIGV4_MALFORMED] = {400, "IncompleteSignatureException", "IncompleteSignature",
							 "Authorization header requires 'Credential', 'Signature' and "
							 "'SignedHeaders' parameters, and an X-Amz-Date header."},
		[SIGV4_UNKNOWN_KEY] = {403, "UnrecognizedClientException", "InvalidClientTokenId",
							   "The security token included in the request is invalid."},
		[SIGV4_EXPIRED] = {403, "InvalidSignatureException", "SignatureDoesNotMatch",
						   "Signature expired: the X-Amz-Date is more than 15 minutes away from "
						   "the current time."},
		[SIGV4_MISMATCH] = {403, "SignatureDoesNotMatchException", "SignatureDoesNotMatch",
							"The request signature we calculated does not match the signature "
							"you provided. Check your AWS Secret Access Key and signing method. "
							"Consult the service documentation for details."},
	};

	return problem(p, table[r].status, query_api ? table[r].query_code : table[r].json_code, "%s",
				   table[r].message);
}

/* ------------------------------------------------------------- SendGrid */

/* Routes POST /v3/mail/send. */
static bool sendgrid_match(const Request *rq)
{
	return strcmp(rq->url, "/v3/mail/send") == 0;
}

/* Checks the Bearer API key and the v3 mail body. */
static bool sendgrid_check(Request *rq, Problem *p)
{
	json_t *m, *ps, *p_item, *to, *content, *c;
	size_t i, j;
	bool subject_everywhere = true;
	const char *template_id;

	if (!secret_eq(bearer_token(rq), cred("sendgrid", "api_key")))
		return problem(p, 401, NULL,
					   "The provided authorization grant is invalid, expired, or revoked");
	m = body_json(rq);
	if (!json_is_object(m))
		return problem(p, 400, NULL, "Bad Request");
	ps = json_object_get(m, "personalizations");
	if (!json_is_array(ps) || json_array_size(ps) == 0)
		return problem(p, 400, "personalizations",
					   "The personalizations field is required and must have at least 1 "
					   "personalization.");
	json_array_foreach(ps, i, p_item)
	{
		char field[96];			/* named only when it is wrong */

		to = json_object_get(p_item, "to");
		if (!json_is_array(to) || json_array_size(to) == 0)
		{
			snprintf(field, sizeof(field), "personalizations.%zu.to", i);
			return problem(p, 400, field,
						   "The to array is required for all personalization objects, and must "
						   "have at least one email object with a valid email address.");
		}
		json_array_foreach(to, j, c)
		{
			if (!is_email(json_string_value(json_object_get(c, "email"))))
			{
				snprintf(field, sizeof(field), "personalizations.%zu.to.%zu.email", i, j);
				return problem(p, 400, field, "Does not contain a valid address.");
			}
		}
		if (!json_is_string(json_object_get(p_item, "subject")))
			subject_everywhere = false;
	}
	if (!is_email(json_string_value(json_object_get(json_object_get(m, "from"), "email"))))
		return problem(p, 400, "from.email",
					   "The from object must be provided for every email send. It is an object "
					   "that requires an email parameter, but may also contain a name parameter.");
	template_id = json_string_value(json_object_get(m, "template_id"));
	if (template_id != NULL)
		return true;
	if (!subject_everywhere && json_string_length(json_object_get(m, "subject")) == 0)
		return problem(p, 400, "subject",
					   "The subject is required. You can get around this requirement if you use a "
					   "template with a subject defined or if every personalization has a subject "
					   "defined.");
	content = json_object_get(m, "content");
	if (!json_is_array(content) || json_array_size(content) == 0)
		return problem(p, 400, "content",
					   "Unless a valid template_id is provided, the content parameter is required. "
					   "There must be at least one defined content block. We typically suggest "
					   "both text/plain and text/html blocks are included, but only one block is "
					   "required.");
	json_array_foreach(content, i, c)
	{
		char field[64];

		if (json_string_length(json_object_get(c, "type")) == 0 ||
			json_string_length(json_object_get(c, "value")) == 0)
		{
			snprintf(field, sizeof(field), "content.%zu", i);
			return problem(p, 400, field,
						   "The content value must be a string at least one character in length.");
		}
	}
	return true;
}

/* Answers 202 with an empty body and X-Message-Id. */
static void sendgrid_accept(Request *rq)
{
	id_chars(rq->message_id, 22,
			 "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_");
	respond_text(rq, 202, NULL, "");
	respond_header(rq, "X-Message-Id", rq->message_id);
}

/* Answers {"errors":[{"message","field","help"}]}; the code names the field. */
static void sendgrid_fail(Request *rq, const Problem *p)
{
	json_t *err = json_pack("{s:s, s:s?, s:n}", "message", problem_message(p), "field",
							p->code[0] ? p->code : NULL, "help");

	respond_json(rq, p->status, json_pack("{s:[o]}", "errors", err));
}

/* -------------------------------------------------------------- Mailgun */

/* Routes POST /v3/<domain>/messages. */
static bool mailgun_match(const Request *rq)
{
	return rq->nseg == 3 && seg_is(rq, 0, "v3") && seg_is(rq, 2, "messages");
}

/* Checks Basic api:<key>, the domain and the form fields. */
static bool mailgun_check(Request *rq, Problem *p)
{
	const char *to;

	if (!basic_auth_ok(rq, "api", cred("mailgun", "api_key")))
		return problem(p, 401, NULL, "Forbidden");
	if (!secret_eq(rq->seg[1], cred("mailgun", "domain")))
		return problem(p, 404, NULL, "Domain not found: %s", rq->seg[1]);
	if (form_field(rq, "from") == NULL)
		return problem(p, 400, NULL, "'from' parameter is missing");
	to = form_field(rq, "to");
	if (to == NULL)
		return problem(p, 400, NULL, "'to' parameter is missing");
	if (strchr(to, '@') == NULL)
		return problem(p, 400, NULL, "to parameter is not a valid address. please check documentation");
	if (form_field(rq, "text") == NULL && form_field(rq, "html") == NULL &&
		form_field(rq, "template") == NULL)
		return problem(p, 400, NULL,
					   "Need at least one of 'text', 'html' or 'template' parameters specified");
	return true;
}

/* Answers 200 {"id":"<...@domain>","message":"Queued. Thank you."}. */
static void mailgun_accept(Request *rq)
{
	char stamp[32], hex[17];
	time_t now = time(NULL);
	struct tm tm;

	gmtime_r(&now, &tm);
	strftime(stamp, sizeof(stamp), "%Y%m%d%H%M%S", &tm);
	id_chars(hex, 16, "0123456789ABCDEF");
	snprintf(rq->message_id, sizeof(rq->message_id), "<%s.%s@%.64s>", stamp, hex, rq->seg[1]);
	respond_json(rq, 200, json_pack("{s:s, s:s}", "id", rq->message_id, "message",
									"Queued. Thank you."));
}

/* Answers 401 with the plain text "Forbidden", otherwise {"message": ...}. */
static void mailgun_fail(Request *rq, const Problem *p)
{
	if (p->status == 401)
		respond_text(rq, 401, "text/plain; charset=utf-8", "Forbidden");
	else
		respond_json(rq, p->status, json_pack("{s:s}", "message", problem_message(p)));
}

/* ------------------------------------------------------------------ SES */

/* Routes POST /v2/email/outbound-emails. */
static bool ses_match(const Request *rq)
{
	return strcmp(rq->url, "/v2/email/outbound-emails") == 0;
}

/* Checks the SigV4 signature (service ses) and the SendEmail body. */
static bool ses_check(Request *rq, Problem *p)
{
	SigV4Result sig = sigv4_verify(rq, "ses");
	json_t *m, *dest, *simple, *raw, *body;
	size_t recipients = 0;
	const char *lists[] = {"ToAddresses", "CcAddresses", "BccAddresses"};

	if (sig != SIGV4_OK)
		return sigv4_problem(p, sig, false);
	m = body_json(rq);
	if (!json_is_object(m))
		return problem(p, 400, "BadRequestException", "Could not parse request body into json");
	if (!is_mailbox(json_string_value(json_object_get(m, "FromEmailAddress"))))
		return problem(p, 400, "BadRequestException",
					   "Missing required parameter: FromEmailAddress must be an email address");
	dest = json_object_get(m, "Destination");
	for (size_t i = 0; i < sizeof(lists) / sizeof(lists[0]); i++)
	{
		json_t *list = json_object_get(dest, lists[i]), *a;
		size_t j;

		json_array_foreach(list, j, a)
		{
			if (!is_email(json_string_value(a)))
				return problem(p, 400, "BadRequestException", "Invalid address in Destination.%s",
							   lists[i]);
			recipients++;
		}
	}
	if (recipients == 0)
		return problem(p, 400, "BadRequestException",
					   "Missing required parameter: Destination must have at least one recipient");
	simple = json_object_get(json_object_get(m, "Content"), "Simple");
	raw = json_object_get(json_object_get(m, "Content"), "Raw");
	if (json_is_string(json_object_get(raw, "Data")))
		return true;
	if (!json_is_string(json_object_get(json_object_get(simple, "Subject"), "Data")))
		return problem(p, 400, "BadRequestException",
					   "Missing required parameter: Content.Simple.Subject.Data");
	body = json_object_get(simple, "Body");
	if (!json_is_string(json_object_get(json_object_get(body, "Text"), "Data")) &&
		!json_is_string(json_object_get(json_object_get(body, "Html"), "Data")))
		return problem(p, 400, "BadRequestException",
					   "Missing required parameter: Content.Simple.Body needs Text or Html Data");
	return true;
}

/* Adds the x-amzn-RequestId header every AWS answer carries. */
static void aws_request_id_header(Request *rq)
{
	char id[37];

	id_uuid(id);
	respond_header(rq, "x-amzn-RequestId", id);
}

/* Answers 200 {"MessageId": ...}. */
static void ses_accept(Request *rq)
{
	char hex[17], uuid[37];

	id_chars(hex, 16, "0123456789abcdef");
	id_uuid(uuid);
	snprintf(rq->message_id, sizeof(rq->message_id), "%s-%s-000000", hex, uuid);
	respond_json(rq, 200, json_pack("{s:s}", "MessageId", rq->message_id));
	aws_request_id_header(rq);
}

/* Answers the REST-JSON error shape: {"message"} with the type in x-amzn-ErrorType. */
static void ses_fail(Request *rq, const Problem *p)
{
	const char *code = problem_code(p, p->status == 429   ? "TooManyRequestsException"
									   : p->status >= 500 ? "InternalFailure"
									   : p->status == 404 ? "NotFoundException"
									   : p->status == 403 ? "AccessDeniedException"
														  : "BadRequestException");

	respond_json(rq, p->status, json_pack("{s:s}", "message", problem_message(p)));
	respond_header(rq, "x-amzn-ErrorType", code);
	aws_request_id_header(rq);
}

/* --------------------------------------------------------------- Twilio */

/* Routes POST /2010-04-01/Accounts/<sid>/Messages.json. */
static bool twilio_match(const Request *rq)
{
	return rq->nseg == 4 && seg_is(rq, 0, "2010-04-01") && seg_is(rq, 1, "Accounts") &&
		   seg_is(rq, 3, "Messages.json");
}

/* Tells whether s is a valid Twilio sender: E.164, short code or alphanumeric sender ID. */
static bool twilio_sender_ok(const char *s)
{
	size_t n = strlen(s);
	size_t digits = strspn(s, "0123456789");
	bool has_letter = false;

	if (strncmp(s, "whatsapp:", 9) == 0)
		return is_e164(s + 9);
	if (is_e164(s) || (digits == n && (n == 5 || n == 6)))
		return true;
	for (const char *c = s; *c; c++)
	{
		if ((*c >= 'A' && *c <= 'Z') || (*c >= 'a' && *c <= 'z'))
			has_letter = true;
		else if (!(*c >= '0' && *c <= '9') && *c != ' ')
			return false;
	}
	return has_letter && n <= 11;
}

/* Checks Basic sid:token, the account in the path and the form fields. */
static bool twilio_check(Request *rq, Problem *p)
{
	const char *to, *from, *body;

	if (!basic_auth_ok(rq, cred("twilio", "account_sid"), cred("twilio", "auth_token")))
		return problem(p, 401, "20003", "Authenticate");
	if (!secret_eq(rq->seg[2], cred("twilio", "account_sid")))
		return problem(p, 404, "20404", "The requested resource %s was not found", rq->url);
	to = form_field(rq, "To");
	from = form_field(rq, "From");
	body = form_field(rq, "Body");
	if (to == NULL)
		return problem(p, 400, "21604", "A 'To' phone number is required.");
	if (!is_e164(strncmp(to, "whatsapp:", 9) == 0 ? to + 9 : to))
		return problem(p, 400, "21211", "Invalid 'To' Phone Number: %.64s", to);
	if (from == NULL && form_field(rq, "MessagingServiceSid") == NULL)
		return problem(p, 400, "21603", "A 'From' phone number is required.");
	if (from != NULL && !twilio_sender_ok(from))
		return problem(p, 400, "21212",
					   "The 'From' number %.64s is not a valid phone number, shortcode, or "
					   "alphanumeric sender ID.",
					   from);
	if ((body == NULL || body[0] == '\0') && form_field(rq, "MediaUrl") == NULL)
		return problem(p, 400, "21602", "Message body is required.");
	if (body != NULL && strlen(body) > 1600)
		return problem(p, 400, "21617",
					   "The concatenated message body exceeds the 1600 character limit.");
	return true;
}

/* Answers 201 with a queued Message resource. */
static void twilio_accept(Request *rq)
{
	char date[64], uri[256], media[256];
	time_t now = time(NULL);
	struct tm tm;
	const char *sid = rq->seg[2];

	gmtime_r(&now, &tm);
	strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S +0000", &tm);
	if (json_is_string(json_object_get(rq->step.spec, "message_id")))
		snprintf(rq->message_id, sizeof(rq->message_id), "%s",
				 json_string_value(json_object_get(rq->step.spec, "message_id")));
	else
	{
		rq->message_id[0] = 'S';
		rq->message_id[1] = 'M';
		id_chars(rq->message_id + 2, 32, "0123456789abcdef");
	}
	snprintf(uri, sizeof(uri), "/2010-04-01/Accounts/%.64s/Messages/%s.json", sid, rq->message_id);
	snprintf(media, sizeof(media), "/2010-04-01/Accounts/%.64s/Messages/%s/Media.json", sid,
			 rq->message_id);
	respond_json(
		rq, 201,
		json_pack("{s:s, s:s, s:s?, s:s, s:s, s:n, s:s, s:s, s:n, s:n, s:s?, s:s?, s:s, s:s, "
				  "s:n, s:s, s:s, s:s, s:s?, s:{s:s}}",
				  "account_sid", sid, "api_version", "2010-04-01", "body",
				  form_field(rq, "Body"), "date_created", date, "date_updated", date, "date_sent",
				  "direction", "outbound-api", "sid", rq->message_id, "error_code",
				  "error_message", "from", form_field(rq, "From"), "messaging_service_sid",
				  form_field(rq, "MessagingServiceSid"), "num_media", "0", "num_segments", "1",
				  "price", "price_unit", "USD", "status", "queued", "uri", uri, "to",
				  form_field(rq, "To"), "subresource_uris", "media", media));
}

/* Answers {"code","message","more_info","status"}. */
static void twilio_fail(Request *rq, const Problem *p)
{
	long code = problem_number(p, p->status == 401   ? 20003
								  : p->status == 404 ? 20404
								  : p->status == 429 ? 20429
								  : p->status >= 500 ? 20500
													 : 21211);
	char more_info[96];

	snprintf(more_info, sizeof(more_info), "https://www.twilio.com/docs/errors/%ld", code);
	respond_json(rq, p->status,
				 json_pack("{s:I, s:s, s:s, s:i}", "code", (json_int_t) code, "message",
						   problem_message(p), "more_info", more_info, "status", p->status));
}

/* ------------------------------------------------------------------ SNS */

/* Routes POST / (the query API endpoint). */
static bool sns_match(const Request *rq)
{
	return strcmp(rq->url, "/") == 0;
}

/* Checks the SigV4 signature (service sns) and the Publish form. */
static bool sns_check(Request *rq, Problem *p)
{
	SigV4Result sig = sigv4_verify(rq, "sns");
	const char *action, *version, *phone;

	if (sig != SIGV4_OK)
		return sigv4_problem(p, sig, true);
	action = form_field(rq, "Action");
	version = form_field(rq, "Version");
	phone = form_field(rq, "PhoneNumber");
	if (action == NULL || strcmp(action, "Publish") != 0)
		return problem(p, 400, "InvalidAction",
					   "The action %.64s is not valid for this web service.",
					   action ? action : "(none)");
	if (version == NULL || strcmp(version, "2010-03-31") != 0)
		return problem(p, 400, "InvalidParameterValue", "Version must be 2010-03-31");
	if (form_field(rq, "Message") == NULL)
		return problem(p, 400, "ValidationError",
					   "1 validation error detected: Value null at 'message' failed to satisfy "
					   "constraint: Member must not be null");
	if (phone == NULL && form_field(rq, "TopicArn") == NULL && form_field(rq, "TargetArn") == NULL)
		return problem(p, 400, "InvalidParameter",
					   "Invalid parameter: TopicArn or TargetArn Reason: no value for required "
					   "parameter");
	if (phone != NULL && !is_e164(phone))
		return problem(p, 400, "InvalidParameter",
					   "Invalid parameter: PhoneNumber Reason: %.64s is not valid to publish to",
					   phone);
	return true;
}

/* Answers the PublishResponse XML with a MessageId. */
static void sns_accept(Request *rq)
{
	char request_id[37];
	Buf xml = {0};

	id_uuid(rq->message_id);
	id_uuid(request_id);
	buf_printf(&xml,
			   "<PublishResponse xmlns=\"http://sns.amazonaws.com/doc/2010-03-31/\">\n"
			   "  <PublishResult>\n    <MessageId>%s</MessageId>\n  </PublishResult>\n"
			   "  <ResponseMetadata>\n    <RequestId>%s</RequestId>\n  </ResponseMetadata>\n"
			   "</PublishResponse>\n",
			   rq->message_id, request_id);
	respond(rq, 200, "text/xml", xml.data, xml.len);
	respond_header(rq, "x-amzn-RequestId", request_id);
	buf_free(&xml);
}

/* Answers the query API's ErrorResponse XML. */
static void sns_fail(Request *rq, const Problem *p)
{
	char request_id[37];
	Buf xml = {0};

	id_uuid(request_id);
	buf_printf(&xml,
			   "<ErrorResponse xmlns=\"http://sns.amazonaws.com/doc/2010-03-31/\">\n"
			   "  <Error>\n    <Type>%s</Type>\n    <Code>",
			   p->status >= 500 ? "Receiver" : "Sender");
	buf_put_xml(&xml, problem_code(p, p->status == 429   ? "Throttling"
									  : p->status == 403 ? "AuthorizationError"
									  : p->status == 404 ? "NotFound"
									  : p->status == 503 ? "ServiceUnavailable"
									  : p->status >= 500 ? "InternalError"
														 : "InvalidParameter"));
	buf_puts(&xml, "</Code>\n    <Message>");
	buf_put_xml(&xml, problem_message(p));
	buf_printf(&xml, "</Message>\n  </Error>\n  <RequestId>%s</RequestId>\n</ErrorResponse>\n",
			   request_id);
	respond(rq, p->status, "text/xml", xml.data, xml.len);
	respond_header(rq, "x-amzn-RequestId", request_id);
	buf_free(&xml);
}

/* --------------------------------------------------------------- Vonage */

/* Routes POST /sms/json. */
static bool vonage_match(const Request *rq)
{
	return strcmp(rq->url, "/sms/json") == 0;
}

/* Checks api_key/api_secret and from, to, text (JSON or form); failures keep HTTP 200. */
static bool vonage_check(Request *rq, Problem *p)
{
	const char *key = body_field(rq, "api_key");
	const char *secret = body_field(rq, "api_secret");
	const char *to = body_field(rq, "to");
	const char *fields[] = {"from", "to", "text"};

	if (key == NULL || secret == NULL)
		return problem(p, 200, "2", "Missing %s", key == NULL ? "api_key" : "api_secret");
	if (!secret_eq(key, cred("vonage", "api_key")) ||
		!secret_eq(secret, cred("vonage", "api_secret")))
		return problem(p, 200, "4", "Bad Credentials");
	for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
		if (body_field(rq, fields[i]) == NULL)
			return problem(p, 200, "2", "Missing %s param", fields[i]);
	if (!is_e164_digits(to[0] == '+' ? to + 1 : to))
		return problem(p, 200, "3", "Invalid to param");
	return true;
}

/* Returns Vonage's error-text for a per-message status code. */
static const char *vonage_error_text(const char *status)
{
	static const char *texts[] = {
		[1] = "Throttled",
		[2] = "Missing Parameters",
		[3] = "Invalid Parameters",
		[4] = "Invalid Credentials",
		[5] = "Internal Error",
		[6] = "Invalid Message",
		[7] = "Number Barred",
		[8] = "Partner Account Barred",
		[9] = "Partner Quota Violation",
		[15] = "Invalid Sender Address",
		[29] = "Non-Whitelisted Destination",
	};
	long n = strtol(status, NULL, 10);

	return n > 0 && n < (long) (sizeof(texts) / sizeof(texts[0])) && texts[n] ? texts[n] : "Error";
}

/* Answers 200 with one message of status "0". */
static void vonage_accept(Request *rq)
{
	const char *to = body_field(rq, "to");

	id_chars(rq->message_id, 18, "0123456789ABCDEF");
	respond_json(rq, 200,
				 json_pack("{s:s, s:[{s:s, s:s, s:s, s:s, s:s, s:s}]}", "message-count", "1",
						   "messages", "to", to[0] == '+' ? to + 1 : to, "message-id",
						   rq->message_id, "status", "0", "remaining-balance", "10.00000000",
						   "message-price", "0.03330000", "network", "12345"));
}

/* Answers per-message status with error-text (HTTP 200), or a problem JSON for HTTP errors. */
static void vonage_fail(Request *rq, const Problem *p)
{
	const char *status = problem_code(p, p->status == 429 ? "1" : "5");

	if (p->status < 400)
		respond_json(rq, p->status,
					 json_pack("{s:s, s:[{s:s, s:s}]}", "message-count", "1", "messages", "status",
							   status, "error-text",
							   p->message[0] ? p->message : vonage_error_text(status)));
	else
		respond_json(rq, p->status,
					 json_pack("{s:s, s:s, s:s}", "type",
							   "https://developer.vonage.com/api-errors", "title",
							   MHD_get_reason_phrase_for((unsigned) p->status), "detail",
							   problem_message(p)));
}

/* ---------------------------------------------------------- Slack (API) */

/* Routes POST /api/chat.postMessage. */
static bool slack_match(const Request *rq)
{
	return strcmp(rq->url, "/api/chat.postMessage") == 0;
}

/* Tells whether a Slack message body has something to show: text, blocks or attachments. */
static bool slack_has_content(Request *rq)
{
	json_t *j;

	if (!has_json_type(rq))
		return form_field(rq, "text") || form_field(rq, "blocks") || form_field(rq, "attachments");
	j = body_json(rq);
	return json_string_length(json_object_get(j, "text")) > 0 ||
		   json_array_size(json_object_get(j, "blocks")) > 0 ||
		   json_array_size(json_object_get(j, "attachments")) > 0;
}

/* Checks the bot token (Bearer, or the form's token) and channel and text; failures keep HTTP 200. */
static bool slack_check(Request *rq, Problem *p)
{
	const char *token = bearer_token(rq);

	if (token == NULL && !has_json_type(rq))
		token = form_field(rq, "token");
	if (token == NULL || token[0] == '\0')
		return problem_coded(p, 200, "not_authed");
	if (!secret_eq(token, cred("slack", "bot_token")))
		return problem_coded(p, 200, "invalid_auth");
	if (has_json_type(rq) && !json_is_object(body_json(rq)))
		return problem_coded(p, 200, "invalid_json");
	if (body_field(rq, "channel") == NULL || body_field(rq, "channel")[0] == '\0')
		return problem_coded(p, 200, "channel_not_found");
	if (!slack_has_content(rq))
		return problem_coded(p, 200, "no_text");
	return true;
}

/* Answers {"ok":true,"channel","ts","message"}. */
static void slack_accept(Request *rq)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	snprintf(rq->message_id, sizeof(rq->message_id), "%lld.%06ld", (long long) ts.tv_sec,
			 ts.tv_nsec / 1000);
	respond_json(rq, 200,
				 json_pack("{s:b, s:s, s:s, s:{s:s, s:s?, s:s, s:s}}", "ok", 1, "channel",
						   body_field(rq, "channel"), "ts", rq->message_id, "message", "type",
						   "message", "text", body_field(rq, "text"), "ts", rq->message_id,
						   "bot_id", "B0DOUBLE"));
}

/* Answers {"ok":false,"error":code}, HTTP 200 unless a scripted status says otherwise. */
static void slack_fail(Request *rq, const Problem *p)
{
	respond_json(rq, p->status,
				 json_pack("{s:b, s:s}", "ok", 0, "error",
						   problem_code(p, p->status == 429   ? "ratelimited"
										   : p->status >= 500 ? "internal_error"
															  : "fatal_error")));
}

/* ------------------------------------------------------ Slack (webhook) */

/* Routes POST /services/<T>/<B>/<secret>. */
static bool slack_webhook_match(const Request *rq)
{
	return rq->nseg == 4 && seg_is(rq, 0, "services");
}

/* Checks the webhook path against the configured "T/B/secret" and the JSON payload. */
static bool slack_webhook_check(Request *rq, Problem *p)
{
	const char *want = cred("slack", "webhook");
	char given[512];
	size_t tb;
	json_t *j;

	snprintf(given, sizeof(given), "%s/%s/%s", rq->seg[1], rq->seg[2], rq->seg[3]);
	tb = strlen(rq->seg[1]) + 1 + strlen(rq->seg[2]) + 1;
	if (want == NULL || strncmp(given, want, tb) != 0)
		return problem_coded(p, 404, "no_service");
	if (!secret_eq(given, want))
		return problem_coded(p, 403, "invalid_token");
	j = body_json(rq);
	if (!json_is_object(j))
		return problem_coded(p, 400, "invalid_payload");
	if (json_string_length(json_object_get(j, "text")) == 0 &&
		json_array_size(json_object_get(j, "blocks")) == 0 &&
		json_array_size(json_object_get(j, "attachments")) == 0)
		return problem_coded(p, 400, "no_text");
	return true;
}

/* Answers 200 with the plain text "ok". */
static void slack_webhook_accept(Request *rq)
{
	respond_text(rq, 200, "text/html", "ok");
}

/* Answers the error code as plain text, as Slack webhooks do. */
static void slack_webhook_fail(Request *rq, const Problem *p)
{
	respond_text(rq, p->status, "text/html",
				 problem_code(p, p->status == 429   ? "rate_limited"
								 : p->status >= 500 ? "internal_error"
								 : p->status == 404 ? "no_service"
								 : p->status == 403 ? "invalid_token"
													: "invalid_payload"));
}

/* -------------------------------------------------------------- Discord */

/* Finds the id and token segments of /api[/v<N>]/webhooks/<id>/<token>; false if not that shape. */
static bool discord_ids(const Request *rq, const char **id, const char **token)
{
	int base = rq->nseg == 5 && rq->seg[1][0] == 'v' ? 2 : 1;

	if (rq->nseg != base + 3 || !seg_is(rq, 0, "api") || !seg_is(rq, base, "webhooks"))
		return false;
	*id = rq->seg[base + 1];
	*token = rq->seg[base + 2];
	return true;
}

/* Routes POST /api[/v<N>]/webhooks/<id>/<token>. */
static bool discord_match(const Request *rq)
{
	const char *id, *token;

	return discord_ids(rq, &id, &token);
}

/* Checks the webhook id and token and the message JSON (content or embeds). */
static bool discord_check(Request *rq, Problem *p)
{
	const char *id, *token;
	json_t *j;

	discord_ids(rq, &id, &token);
	if (!secret_eq(id, cred("discord", "webhook_id")))
		return problem(p, 404, "10015", "Unknown Webhook");
	if (!secret_eq(token, cred("discord", "webhook_token")))
		return problem(p, 401, "50027", "Invalid Webhook Token");
	j = body_json(rq);
	if (!json_is_object(j))
		return problem(p, 400, "50109", "The request body contains invalid JSON.");
	if (json_string_length(json_object_get(j, "content")) == 0 &&
		json_array_size(json_object_get(j, "embeds")) == 0)
		return problem(p, 400, "50006", "Cannot send an empty message");
	if (json_string_length(json_object_get(j, "content")) > 2000)
		return problem(p, 400, "50035", "Invalid Form Body");
	return true;
}

/* Answers 204, or 200 with the created message when ?wait=true. */
static void discord_accept(Request *rq)
{
	const char *wait = query_arg(rq, "wait");
	const char *content = json_string_value(json_object_get(body_json(rq), "content"));
	const char *id, *token;
	char stamp[40];
	int64_t now = wall_ms();

	discord_ids(rq, &id, &token);
	snprintf(rq->message_id, sizeof(rq->message_id), "%llu",
			 (unsigned long long) (((uint64_t) (now - 1420070400000LL) << 22) |
								   (id_next() & 0x3FFFFF)));
	if (wait == NULL || (strcmp(wait, "true") != 0 && strcmp(wait, "1") != 0))
	{
		respond_text(rq, 204, NULL, "");
		return;
	}
	iso_time(now, stamp, sizeof(stamp));
	respond_json(rq, 200,
				 json_pack("{s:s, s:i, s:s, s:s, s:s, s:s, s:{s:s, s:s, s:b}, s:O?}", "id",
						   rq->message_id, "type", 0, "content", content ? content : "", "channel_id", "100000000000000001", "webhook_id", id, "timestamp", stamp,
						   "author", "id", id, "username", "notiflow", "bot", 1, "embeds",
						   json_object_get(body_json(rq), "embeds")));
}

/* Answers {"message","code"}; 429 adds retry_after and global as Discord does. */
static void discord_fail(Request *rq, const Problem *p)
{
	if (p->status == 429)
		respond_json(rq, 429,
					 json_pack("{s:s, s:f, s:b, s:I}", "message",
							   p->message[0] ? p->message : "You are being rate limited.",
							   "retry_after",
							   rq->step.retry_after >= 0 ? (double) rq->step.retry_after : 1.0,
							   "global", 0, "code", (json_int_t) problem_number(p, 0)));
	else
		respond_json(rq, p->status,
					 json_pack("{s:s, s:I}", "message", problem_message(p), "code",
							   (json_int_t) problem_number(p, p->status == 404 ? 10015 : 0)));
}

/* ---------------------------------------------------- Teams (connector) */

/* Routes POST /webhookb2/... (Office 365 connector URLs). */
static bool teams_match(const Request *rq)
{
	return rq->nseg >= 2 && seg_is(rq, 0, "webhookb2");
}

/* Tells whether j is a message whose attachments are all Adaptive Cards. */
static bool teams_adaptive_message_ok(json_t *j)
{
	json_t *atts = json_object_get(j, "attachments"), *a;
	size_t i;

	if (json_array_size(atts) == 0)
		return false;
	json_array_foreach(atts, i, a)
	{
		const char *ct = json_string_value(json_object_get(a, "contentType"));

		if (ct == NULL || strcmp(ct, "application/vnd.microsoft.card.adaptive") != 0 ||
			!json_is_object(json_object_get(a, "content")))
			return false;
	}
	return true;
}

/* Checks the connector path and a MessageCard or Adaptive Card message. */
static bool teams_check(Request *rq, Problem *p)
{
	json_t *j;
	const char *type;

	if (!secret_eq(rq->url, cred("teams", "connector_path")))
		return problem(p, 404, NULL, "Webhook not found");
	j = body_json(rq);
	if (!json_is_object(j))
		return problem(p, 400, NULL, "Bad payload received by generic incoming webhook.");
	type = json_string_value(json_object_get(j, "type"));
	if (type != NULL && strcmp(type, "message") == 0 && !teams_adaptive_message_ok(j))
		return problem(p, 400, NULL, "Bad payload received by generic incoming webhook.");
	if (type != NULL && strcmp(type, "message") == 0)
		return true;
	if (json_string_length(json_object_get(j, "text")) == 0 &&
		json_string_length(json_object_get(j, "summary")) == 0)
		return problem(p, 400, NULL, "Summary or Text is required.");
	return true;
}

/* Answers 200 with the plain text "1", as the legacy connector does. */
static void teams_accept(Request *rq)
{
	respond_text(rq, 200, "text/plain; charset=utf-8", "1");
}

/* Answers the error as plain text. */
static void teams_fail(Request *rq, const Problem *p)
{
	respond_text(rq, p->status, "text/plain; charset=utf-8", problem_message(p));
}

/* ----------------------------------------------------- Teams (Workflows) */

/* Returns the index of the "workflows" segment of a Workflows trigger URL, or -1. */
static int workflow_base(const Request *rq)
{
	int base = seg_is(rq, 0, "powerautomate") && seg_is(rq, 1, "automations") &&
					   seg_is(rq, 2, "direct")
				   ? 3
				   : 0;

	if (rq->nseg == base + 6 && seg_is(rq, base, "workflows") &&
		seg_is(rq, base + 2, "triggers") && seg_is(rq, base + 3, "manual") &&
		seg_is(rq, base + 4, "paths") && seg_is(rq, base + 5, "invoke"))
		return base;
	return -1;
}

/* Routes POST [/powerautomate/automations/direct]/workflows/<id>/triggers/manual/paths/invoke. */
static bool teams_workflow_match(const Request *rq)
{
	return workflow_base(rq) >= 0;
}

/* Checks the workflow id, the sig query argument and an Adaptive Card message. */
static bool teams_workflow_check(Request *rq, Problem *p)
{
	const char *id = rq->seg[workflow_base(rq) + 1];
	const char *sig = query_arg(rq, "sig");

	if (!secret_eq(id, cred("teams", "workflow_id")))
		return problem(p, 404, "WorkflowNotFound", "The workflow '%.64s' could not be found.", id);
	if (sig == NULL)
		return problem(p, 401, "DirectApiAuthorizationRequired",
					   "The request must be authenticated only by Shared Access scheme.");
	if (!secret_eq(sig, cred("teams", "workflow_sig")))
		return problem(p, 401, "DirectApiInvalidAuthorizationSignature",
					   "The provided authentication token is not valid.");
	if (!json_is_object(body_json(rq)))
		return problem(p, 400, "InvalidRequestContent",
					   "The input body for trigger 'manual' of type 'Request' must be of type JSON.");
	if (!teams_adaptive_message_ok(body_json(rq)))
		return problem(p, 400, "TriggerInputSchemaMismatch",
					   "The input body for trigger 'manual' of type 'Request' did not match its "
					   "schema definition.");
	return true;
}

/* Answers 202 with an empty body. */
static void teams_workflow_accept(Request *rq)
{
	respond_text(rq, 202, NULL, "");
}

/* Answers {"error":{"code","message"}}. */
static void teams_workflow_fail(Request *rq, const Problem *p)
{
	respond_json(rq, p->status,
				 json_pack("{s:{s:s, s:s}}", "error", "code",
						   problem_code(p, p->status == 429   ? "WorkflowRequestsThrottled"
										   : p->status >= 500 ? "ServiceUnavailable"
															  : "BadRequest"),
						   "message", problem_message(p)));
}

/* ------------------------------------------------------ generic webhook */

/* Routes POST /hooks/<anything>. */
static bool webhook_match(const Request *rq)
{
	return rq->nseg >= 2 && seg_is(rq, 0, "hooks");
}

/* Checks X-Notiflow-Signature (t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>) and JSON. */
static bool webhook_check(Request *rq, Problem *p)
{
	const char *sig = header(rq, "X-Notiflow-Signature");
	const char *secret = cred("webhook", "secret");
	json_t *tol = json_object_get(json_object_get(config, "webhook"), "tolerance_s");
	long tolerance = json_is_integer(tol) ? (long) json_integer_value(tol)
										  : WEBHOOK_DEFAULT_TOLERANCE_S;
	char parts[1024], expected[65];
	char *save = NULL, *t = NULL;
	bool matched = false, any_v1 = false;
	unsigned char mac[EVP_MAX_MD_SIZE];
	unsigned int maclen = 0;
	Buf signed_text = {0};

	if (sig == NULL)
		return problem(p, 401, "missing_signature", "X-Notiflow-Signature header is required");
	snprintf(parts, sizeof(parts), "%s", sig);
	for (char *part = strtok_r(parts, ",", &save); part; part = strtok_r(NULL, ",", &save))
	{
		while (*part == ' ')
			part++;
		if (strncmp(part, "t=", 2) == 0)
			t = part + 2;
	}
	if (t == NULL || t[0] == '\0' || t[strspn(t, "0123456789")] != '\0')
		return problem(p, 401, "malformed_signature", "expected t=<unix>,v1=<hex>");
	if (labs((long) time(NULL) - strtol(t, NULL, 10)) > tolerance)
		return problem(p, 401, "timestamp_out_of_tolerance",
					   "signature timestamp is more than %ld s away from now", tolerance);
	buf_printf(&signed_text, "%s.", t);
	buf_put(&signed_text, buf_str(&rq->body), rq->body.len);
	HMAC(EVP_sha256(), secret ? secret : "", secret ? (int) strlen(secret) : 0,
		 (const unsigned char *) signed_text.data, signed_text.len, mac, &maclen);
	buf_free(&signed_text);
	hex_encode(mac, maclen, expected);
	snprintf(parts, sizeof(parts), "%s", sig);
	for (char *part = strtok_r(parts, ",", &save); part; part = strtok_r(NULL, ",", &save))
	{
		while (*part == ' ')
			part++;
		if (strncmp(part, "v1=", 3) == 0)
		{
			any_v1 = true;
			matched = matched || (secret != NULL && secret_eq(part + 3, expected));
		}
	}
	if (!any_v1)
		return problem(p, 401, "malformed_signature", "expected t=<unix>,v1=<hex>");
	if (!matched)
		return problem(p, 401, "signature_mismatch", "no v1 signature matches the body");
	if (body_json(rq) == NULL)
		return problem(p, 400, "invalid_json", "the body is not JSON");
	return true;
}

/* Answers 200 {"received":true}. */
static void webhook_accept(Request *rq)
{
	respond_json(rq, 200, json_pack("{s:b}", "received", 1));
}

/* Answers {"error":code,"message":message}. */
static void webhook_fail(Request *rq, const Problem *p)
{
	char fallback[32];

	snprintf(fallback, sizeof(fallback), "http_%d", p->status);
	respond_json(rq, p->status,
				 json_pack("{s:s, s:s}", "error", problem_code(p, fallback), "message",
						   problem_message(p)));
}

/* ------------------------------------------------------- provider table */

static const Provider providers[] = {
	{"sendgrid", sendgrid_match, sendgrid_check, sendgrid_accept, sendgrid_fail, 400},
	{"mailgun", mailgun_match, mailgun_check, mailgun_accept, mailgun_fail, 400},
	{"ses", ses_match, ses_check, ses_accept, ses_fail, 400},
	{"twilio", twilio_match, twilio_check, twilio_accept, twilio_fail, 400},
	{"sns", sns_match, sns_check, sns_accept, sns_fail, 400},
	{"vonage", vonage_match, vonage_check, vonage_accept, vonage_fail, 200},
	{"slack", slack_match, slack_check, slack_accept, slack_fail, 200},
	{"slack_webhook", slack_webhook_match, slack_webhook_check, slack_webhook_accept,
	 slack_webhook_fail, 400},
	{"discord", discord_match, discord_check, discord_accept, discord_fail, 400},
	{"teams", teams_match, teams_check, teams_accept, teams_fail, 400},
	{"teams_workflow", teams_workflow_match, teams_workflow_check, teams_workflow_accept,
	 teams_workflow_fail, 400},
	{"webhook", webhook_match, webhook_check, webhook_accept, webhook_fail, 400},
};

#define N_PROVIDERS (sizeof(providers) / sizeof(providers[0]))

/* Returns the provider row serving rq's path, or NULL. */
static const Provider *provider_route(const Request *rq)
{
	for (size_t i = 0; i < N_PROVIDERS; i++)
		if (providers[i].match(rq))
			return &providers[i];
	return NULL;
}

/* Returns the provider row called name, or NULL. */
static const Provider *provider_by_name(const char *name)
{
	for (size_t i = 0; i < N_PROVIDERS; i++)
		if (strcmp(providers[i].name, name) == 0)
			return &providers[i];
	return NULL;
}

/* ----------------------------------------------------------------- stats */

static Counters stats[N_PROVIDERS + 1];

/* Returns the counters of rq's provider; the last slot counts unrouted requests. */
static Counters *stats_for(const Request *rq)
{
	return &stats[rq->provider ? (size_t) (rq->provider - providers) : N_PROVIDERS];
}

/* Counts one finished request by its verdict. */
static void stats_count(const Request *rq)
{
	Counters *c = stats_for(rq);

	atomic_fetch_add(&c->requests, 1);
	if (strcmp(rq->verdict, "accepted") == 0)
		atomic_fetch_add(&c->accepted, 1);
	else if (strcmp(rq->verdict, "scripted") == 0)
		atomic_fetch_add(&c->scripted, 1);
	else if (strcmp(rq->verdict, "dropped") == 0)
		atomic_fetch_add(&c->dropped, 1);
	else
		atomic_fetch_add(&c->rejected, 1);
}

/* Returns one counter set as a JSON object. */
static json_t *stats_json(Counters *c)
{
	return json_pack("{s:I, s:I, s:I, s:I, s:I}", "requests",
					 (json_int_t) atomic_load(&c->requests), "accepted",
					 (json_int_t) atomic_load(&c->accepted), "rejected",
					 (json_int_t) atomic_load(&c->rejected), "scripted",
					 (json_int_t) atomic_load(&c->scripted), "dropped",
					 (json_int_t) atomic_load(&c->dropped));
}

/* Zeroes every counter. */
static void stats_reset(void)
{
	for (size_t i = 0; i <= N_PROVIDERS; i++)
	{
		atomic_store(&stats[i].requests, 0);
		atomic_store(&stats[i].accepted, 0);
		atomic_store(&stats[i].rejected, 0);
		atomic_store(&stats[i].scripted, 0);
		atomic_store(&stats[i].dropped, 0);
	}
}

/* ------------------------------------------------------------ recording */

static pthread_mutex_t ring_lock = PTHREAD_MUTEX_INITIALIZER;
static json_t **ring;
static size_t ring_cap = 10000;
static size_t ring_len;
static size_t ring_head;
static json_int_t ring_seq;

/* Adds one header to a JSON object; a repeated header's values are joined with ", ". */
static enum MHD_Result header_collect(void *cls, enum MHD_ValueKind kind, const char *key,
									  const char *value)
{
	json_t *obj = cls;
	const char *old = json_string_value(json_object_get(obj, key));

	(void) kind;
	if (old != NULL)
	{
		Buf joined = {0};

		buf_printf(&joined, "%s, %s", old, value ? value : "");
		json_object_set_new(obj, key, json_text(joined.data, joined.len));
		buf_free(&joined);
	}
	else
		json_object_set_new(obj, key, json_text(value ? value : "", value ? strlen(value) : 0));
	return MHD_YES;
}

/* Adds one query argument to a JSON object. */
static enum MHD_Result query_arg_collect(void *cls, enum MHD_ValueKind kind, const char *key,
										 const char *value)
{
	(void) kind;
	json_object_set_new(cls, key, json_text(value ? value : "", value ? strlen(value) : 0));
	return MHD_YES;
}

/* Describes a finished request as a JSON record. */
static json_t *record_build(Request *rq)
{
	json_t *headers = json_object(), *query = json_object(), *e, *body;
	char received_at[40];

	MHD_get_connection_values(rq->conn, MHD_HEADER_KIND, header_collect, headers);
	MHD_get_connection_values(rq->conn, MHD_GET_ARGUMENT_KIND, query_arg_collect, query);
	iso_time(rq->received_ms, received_at, sizeof(received_at));
	e = json_pack("{s:s, s:s, s:s, s:o, s:o, s:i, s:s, s:s, s:I}", "provider",
				  rq->provider ? rq->provider->name : "unknown", "method", rq->method, "path",
				  rq->url, "query", query, "headers", headers, "status", rq->status, "verdict",
				  rq->verdict, "received_at", received_at, "received_ms",
				  (json_int_t) rq->received_ms);
	body = json_stringn(buf_str(&rq->body), rq->body.len);
	if (body != NULL)
		json_object_set_new(e, "body", body);
	else
	{
		char *b64 = xrealloc(NULL, 4 * ((rq->body.len + 2) / 3) + 1);

		EVP_EncodeBlock((unsigned char *) b64, (const unsigned char *) rq->body.data,
						(int) rq->body.len);
		json_object_set_new(e, "body_base64", json_string(b64));
		free(b64);
	}
	if (rq->form)
		json_object_set(e, "form", rq->form);
	if (rq->message_id[0])
		json_object_set_new(e, "message_id", json_string(rq->message_id));
	if (rq->delayed)
		json_object_set_new(e, "delay_ms", json_integer(rq->step.delay_ms));
	return e;
}

/*
 * Appends one line to the receive log (--receive-log), when there is one:
 * "<received_us> <provider> <verdict> <status> <delivery>", tab-separated.
 * received_us is the wall clock (µs since the epoch) when the request's
 * headers arrived; delivery is notiflow's delivery id, from the
 * X-Notiflow-Delivery header (webhook adapter) or the JSON body's
 * custom_args.notiflow_delivery_id (SendGrid adapter), else "-".
 */
static void receive_log(Request *rq)
{
	const char *delivery = header(rq, "X-Notiflow-Delivery");
	char line[256];
	int n;

	if (receive_log_fd < 0)
		return;
	if (delivery == NULL && rq->json != NULL)
		delivery = json_string_value(
			json_object_get(json_object_get(rq->json, "custom_args"), "notiflow_delivery_id"));
	n = snprintf(line, sizeof(line), "%lld\t%s\t%s\t%d\t%.64s\n", (long long) rq->received_us,
				 rq->provider ? rq->provider->name : "unknown", rq->verdict, rq->status,
				 delivery ? delivery : "-");
	if (n > 0 && write(receive_log_fd, line, (size_t) n) != n)
		fprintf(stderr, "provider_double: cannot write the receive log: %m\n");
}

/* Appends rq's record to the ring, evicting the oldest when full. */
static void record_add(Request *rq)
{
	json_t *e, *evicted = NULL;

	if (!recording)
		return;
	e = record_build(rq);
	pthread_mutex_lock(&ring_lock);
	json_object_set_new(e, "seq", json_integer(++ring_seq));
	if (ring_len == ring_cap)
	{
		evicted = ring[ring_head];
		ring[ring_head] = e;
		ring_head = (ring_head + 1) % ring_cap;
	}
	else
		ring[(ring_head + ring_len++) % ring_cap] = e;
	pthread_mutex_unlock(&ring_lock);
	json_decref(evicted);
}

/* Returns the recorded requests, oldest first, optionally only those of one provider. */
static json_t *record_list(const char *provider)
{
	json_t *list = json_array();

	pthread_mutex_lock(&ring_lock);
	for (size_t i = 0; i < ring_len; i++)
	{
		json_t *e = ring[(ring_head + i) % ring_cap];

		if (provider == NULL ||
			strcmp(json_string_value(json_object_get(e, "provider")), provider) == 0)
			json_array_append(list, e);
	}
	pthread_mutex_unlock(&ring_lock);
	return list;
}

/* Forgets every record. */
static void record_reset(void)
{
	pthread_mutex_lock(&ring_lock);
	for (size_t i = 0; i < ring_len; i++)
		json_decref(ring[(ring_head + i) % ring_cap]);
	ring_len = ring_head = 0;
	ring_seq = 0;
	pthread_mutex_unlock(&ring_lock);
}

/* --------------------------------------------------------------- scripts */

static pthread_mutex_t script_lock = PTHREAD_MUTEX_INITIALIZER;
static Script *scripts;
static atomic_int script_count;

/* Releases a step's reference to its spec. */
static void step_release(ScriptStep *s)
{
	json_decref(s->spec);
	s->spec = NULL;
}

/* Parses one scripted response object into step; false with err filled when it is invalid. */
static bool step_parse(json_t *spec, size_t index, ScriptStep *step, char *err, size_t errsz)
{
	const char *key;
	json_t *v;

	*step = (ScriptStep){.spec = NULL, .status = 0, .retry_after = -1, .delay_ms = 0, .drop = false};
	if (!json_is_object(spec))
	{
		snprintf(err, errsz, "responses[%zu] must be an object", index);
		return false;
	}
	json_object_foreach(spec, key, v)
	{
		bool ok;

		if (strcmp(key, "status") == 0)
			ok = json_is_integer(v) && json_integer_value(v) >= 100 &&
				 json_integer_value(v) <= 599 && ((step->status = (int) json_integer_value(v)), true);
		else if (strcmp(key, "retry_after") == 0)
			ok = json_is_integer(v) && json_integer_value(v) >= 0 &&
				 json_integer_value(v) <= 86400 &&
				 ((step->retry_after = (int) json_integer_value(v)), true);
		else if (strcmp(key, "delay_ms") == 0)
			ok = json_is_integer(v) && json_integer_value(v) >= 0 &&
				 json_integer_value(v) <= 600000 &&
				 ((step->delay_ms = (int) json_integer_value(v)), true);
		else if (strcmp(key, "drop") == 0)
			ok = json_is_boolean(v) && ((step->drop = json_is_true(v)), true);
		else if (strcmp(key, "message_id") == 0)
			ok = json_is_string(v) && json_string_length(v) >= 1 && json_string_length(v) <= 64 &&
				 strspn(json_string_value(v), "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789") ==
					 json_string_length(v);
		else if (strcmp(key, "content_type") == 0)
			ok = json_is_string(v);
		else if (strcmp(key, "error") == 0)
			ok = json_is_string(v) || json_is_integer(v);
		else if (strcmp(key, "headers") == 0)
		{
			const char *hk;
			json_t *hv;

			ok = json_is_object(v);
			json_object_foreach(v, hk, hv) ok = ok && json_is_string(hv);
		}
		else if (strcmp(key, "body_base64") == 0)
			ok = json_is_string(v);
		else
			ok = strcmp(key, "body") == 0;
		if (!ok)
		{
			snprintf(err, errsz, "responses[%zu].%s is unknown or has a wrong type or range", index,
					 key);
			return false;
		}
	}
	if (step->status > 0 && step->status < 400 && !json_object_get(spec, "body") &&
		!json_object_get(spec, "body_base64") && !json_object_get(spec, "error"))
	{
		snprintf(err, errsz,
				 "responses[%zu]: a status below 400 needs a \"body\", \"body_base64\" or an \"error\"; leave "
				 "\"status\" out to have the request handled normally",
				 index);
		return false;
	}
	step->spec = json_incref(spec);
	return true;
}

/* Frees a script and its steps. */
static void script_free(Script *s)
{
	for (size_t i = 0; i < s->nsteps; i++)
		step_release(&s->steps[i]);
	free(s->steps);
	free(s->match);
	free(s);
}

/* Parses a POST /_double/script body into a new script; NULL with err filled when invalid. */
static Script *script_parse(json_t *j, char *err, size_t errsz)
{
	json_t *responses = json_object_get(j, "responses"), *v;
	const char *match = json_string_value(json_object_get(j, "match"));
	const char *provider = json_string_value(json_object_get(j, "provider"));
	const char *key;
	Script *s;
	size_t i;

	if (!json_is_object(j))
	{
		snprintf(err, errsz, "the body must be a JSON object");
		return NULL;
	}
	json_object_foreach(j, key, v)
	{
		if (strcmp(key, "match") != 0 && strcmp(key, "provider") != 0 &&
			strcmp(key, "responses") != 0 && strcmp(key, "repeat") != 0)
		{
			snprintf(err, errsz, "unknown key \"%s\"", key);
			return NULL;
		}
	}
	if ((match == NULL || match[0] != '/') && provider == NULL)
	{
		snprintf(err, errsz, "give \"match\" (a path prefix starting with /) or \"provider\"");
		return NULL;
	}
	if (provider != NULL && provider_by_name(provider) == NULL)
	{
		snprintf(err, errsz, "unknown provider \"%s\"", provider);
		return NULL;
	}
	if (!json_is_array(responses) || json_array_size(responses) == 0)
	{
		snprintf(err, errsz, "\"responses\" must be a non-empty array");
		return NULL;
	}
	s = calloc(1, sizeof(Script));
	s->match = match ? strdup(match) : NULL;
	s->provider = provider ? provider_by_name(provider) : NULL;
	s->repeat = json_is_true(json_object_get(j, "repeat"));
	s->steps = calloc(json_array_size(responses), sizeof(ScriptStep));
	json_array_foreach(responses, i, v)
	{
		if (!step_parse(v, i, &s->steps[i], err, errsz))
		{
			script_free(s);
			return NULL;
		}
		s->nsteps++;
	}
	return s;
}

/* Appends a script after the ones already loaded. */
static void script_add(Script *s)
{
	Script **tail;

	pthread_mutex_lock(&script_lock);
	for (tail = &scripts; *tail; tail = &(*tail)->next_script)
		;
	*tail = s;
	atomic_fetch_add(&script_count, 1);
	pthread_mutex_unlock(&script_lock);
}

/* Takes the next scripted response for rq from the first matching script that has one left. */
static void script_take(Request *rq)
{
	if (atomic_load(&script_count) == 0)
		return;
	pthread_mutex_lock(&script_lock);
	for (Script *s = scripts; s; s = s->next_script)
	{
		if ((s->match && strncmp(rq->url, s->match, strlen(s->match)) != 0) ||
			(s->provider && s->provider != rq->provider) || s->next >= s->nsteps)
			continue;
		rq->step = s->steps[s->next];
		json_incref(rq->step.spec);
		s->next = s->repeat ? (s->next + 1) % s->nsteps : s->next + 1;
		break;
	}
	pthread_mutex_unlock(&script_lock);
}

/* Unloads every script. */
static void script_reset(void)
{
	Script *s;

	pthread_mutex_lock(&script_lock);
	s = scripts;
	scripts = NULL;
	atomic_store(&script_count, 0);
	pthread_mutex_unlock(&script_lock);
	while (s)
	{
		Script *next = s->next_script;

		script_free(s);
		s = next;
	}
}

/* Tells whether rq's scripted step answers by itself instead of normal handling. */
static bool step_answers(const ScriptStep *s)
{
	return s->status > 0 || json_object_get(s->spec, "body") || json_object_get(s->spec, "body_base64") ||
		   json_object_get(s->spec, "error");
}

/* Answers with the scripted body, or with the provider's error shape for the scripted status. */
static void script_answer(Request *rq)
{
	json_t *spec = rq->step.spec;
	json_t *body = json_object_get(spec, "body");
	json_t *error = json_object_get(spec, "error");
	const char *ctype = json_string_value(json_object_get(spec, "content_type"));
	const char *raw = json_string_value(json_object_get(spec, "body_base64"));

	if (raw != NULL)
	{
		/* bytes that need not be text (an answer in another encoding, binary) */
		size_t len = strlen(raw);
		unsigned char *bytes = malloc(len / 4 * 3 + 3);
		int n = bytes ? EVP_DecodeBlock(bytes, (const unsigned char *) raw, (int) len) : -1;

		if (n < 0)
			respond_text(rq, 500, "text/plain", "the double could not decode body_base64");
		else
		{
			/* EVP_DecodeBlock counts the padding's bytes too */
			while (len > 0 && raw[len - 1] == '=' && n > 0)
				len--, n--;
			respond(rq, rq->step.status ? rq->step.status : 200, ctype ? ctype : "application/octet-stream",
					(const char *) bytes, (size_t) n);
		}
		free(bytes);
	}
	else if (body != NULL && json_is_string(body))
		respond_text(rq, rq->step.status ? rq->step.status : 200, ctype ? ctype : "text/plain",
					 json_string_value(body));
	else if (body != NULL)
	{
		char *text = json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY);

		respond_text(rq, rq->step.status ? rq->step.status : 200,
					 ctype ? ctype : "application/json", text);
		free(text);
	}
	else
	{
		Problem p = {.status = rq->step.status ? rq->step.status : rq->provider->soft_status};

		if (json_is_string(error))
			snprintf(p.code, sizeof(p.code), "%s", json_string_value(error));
		else if (json_is_integer(error))
			snprintf(p.code, sizeof(p.code), "%" JSON_INTEGER_FORMAT, json_integer_value(error));
		rq->provider->fail(rq, &p);
	}
}

/* Adds the scripted Retry-After and extra headers to the prepared answer. */
static void script_headers(Request *rq)
{
	json_t *headers = json_object_get(rq->step.spec, "headers"), *v;
	const char *k;

	if (rq->step.retry_after >= 0)
	{
		char secs[16];

		snprintf(secs, sizeof(secs), "%d", rq->step.retry_after);
		respond_header(rq, MHD_HTTP_HEADER_RETRY_AFTER, secs);
	}
	json_object_foreach(headers, k, v) respond_header(rq, k, json_string_value(v));
}

/* --------------------------------------------------------- late answers */

static pthread_mutex_t delay_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t delay_cond;
static Request *delay_head;
static bool delay_stopping;
static atomic_int delayed_now;

/* Queues rq (its connection already suspended) to be resumed after its scripted delay. */
static void delay_schedule(Request *rq)
{
	Request **at;

	rq->due_ms = mono_ms() + (uint64_t) rq->step.delay_ms;
	atomic_fetch_add(&delayed_now, 1);
	pthread_mutex_lock(&delay_lock);
	for (at = &delay_head; *at && (*at)->due_ms <= rq->due_ms; at = &(*at)->delay_next)
		;
	rq->delay_next = *at;
	*at = rq;
	pthread_cond_signal(&delay_cond);
	pthread_mutex_unlock(&delay_lock);
}

/* Resumes suspended connections whose delay has passed, and all of them when stopping. */
static void *delay_run(void *arg)
{
	(void) arg;
	pthread_mutex_lock(&delay_lock);
	for (;;)
	{
		if (delay_head && (delay_stopping || delay_head->due_ms <= mono_ms()))
		{
			Request *rq = delay_head;

			delay_head = rq->delay_next;
			pthread_mutex_unlock(&delay_lock);
			atomic_fetch_sub(&delayed_now, 1);
			MHD_resume_connection(rq->conn);
			pthread_mutex_lock(&delay_lock);
		}
		else if (delay_stopping)
			break;
		else if (delay_head)
		{
			struct timespec at = {.tv_sec = (time_t) (delay_head->due_ms / 1000),
								  .tv_nsec = (long) (delay_head->due_ms % 1000) * 1000000};

			pthread_cond_timedwait(&delay_cond, &delay_lock, &at);
		}
		else
			pthread_cond_wait(&delay_cond, &delay_lock);
	}
	pthread_mutex_unlock(&delay_lock);
	return NULL;
}

/* Asks the delay thread to resume every waiting connection and exit. */
static void delay_stop(pthread_t thread)
{
	pthread_mutex_lock(&delay_lock);
	delay_stopping = true;
	pthread_cond_signal(&delay_cond);
	pthread_mutex_unlock(&delay_lock);
	pthread_join(thread, NULL);
}

/* ----------------------------------------------------------- control API */

/* Answers a control API error {"error": message}. */
static void control_error(Request *rq, int status, const char *message)
{
	respond_json(rq, status, json_pack("{s:s}", "error", message));
}

/* Serves GET /_double/requests, POST /_double/reset, POST /_double/script, GET /_double/stats. */
static void control_handle(Request *rq)
{
	bool get = strcmp(rq->method, "GET") == 0, post = strcmp(rq->method, "POST") == 0;

	if (get && strcmp(rq->url, "/_double/requests") == 0)
		respond_json(rq, 200, record_list(query_arg(rq, "provider")));
	else if (post && strcmp(rq->url, "/_double/reset") == 0)
	{
		script_reset();
		record_reset();
		stats_reset();
		respond_json(rq, 200, json_pack("{s:b}", "reset", 1));
	}
	else if (post && strcmp(rq->url, "/_double/script") == 0)
	{
		char err[256];
		Script *s = body_json(rq) ? script_parse(body_json(rq), err, sizeof(err)) : NULL;

		if (body_json(rq) == NULL)
			control_error(rq, 400, "the body is not JSON");
		else if (s == NULL)
			control_error(rq, 400, err);
		else
		{
			script_add(s);
			respond_json(rq, 200, json_pack("{s:i}", "scripts", atomic_load(&script_count)));
		}
	}
	else if (get && strcmp(rq->url, "/_double/stats") == 0)
	{
		json_t *per = json_object();
		json_int_t total = 0;

		for (size_t i = 0; i < N_PROVIDERS; i++)
		{
			json_object_set_new(per, providers[i].name, stats_json(&stats[i]));
			total += (json_int_t) atomic_load(&stats[i].requests);
		}
		total += (json_int_t) atomic_load(&stats[N_PROVIDERS].requests);
		respond_json(rq, 200,
					 json_pack("{s:I, s:i, s:o, s:o}", "total", total, "delayed_now",
							   atomic_load(&delayed_now), "providers", per, "unknown",
							   stats_json(&stats[N_PROVIDERS])));
	}
	else
		control_error(rq, 404, "unknown control endpoint");
}

/* ----------------------------------------------------------- dispatching */

/* Creates the state of a new request: splits its path, routes it and takes a scripted step. */
static Request *request_new(struct MHD_Connection *conn, const char *url, const char *method)
{
	Request *rq = calloc(1, sizeof(Request));
	char *save = NULL;

	rq->conn = conn;
	rq->url = url;
	rq->method = method;
	rq->received_us = wall_us();
	rq->received_ms = rq->received_us / 1000;
	rq->step.retry_after = -1;
	rq->path_buf = strdup(url);
	for (char *s = strtok_r(rq->path_buf, "/", &save); s && rq->nseg < MAX_SEGMENTS;
		 s = strtok_r(NULL, "/", &save))
		rq->seg[rq->nseg++] = s;
	rq->control = strncmp(url, "/_double/", 9) == 0;
	if (!rq->control)
	{
		rq->provider = provider_route(rq);
		if (rq->provider && strcmp(method, "POST") == 0)
			script_take(rq);
	}
	return rq;
}

/* Answers a provider request: scripted answer, or the provider's own check and answer. */
static void provider_handle(Request *rq)
{
	Problem p = {0};

	if (strcmp(rq->method, "POST") != 0)
	{
		respond_json(rq, 405, json_pack("{s:s}", "error", "method_not_allowed"));
		respond_header(rq, MHD_HTTP_HEADER_ALLOW, "POST");
		rq->verdict = "rejected";
	}
	else if (step_answers(&rq->step))
	{
		script_answer(rq);
		rq->verdict = "scripted";
	}
	else if (!rq->provider->check(rq, &p))
	{
		rq->provider->fail(rq, &p);
		rq->verdict = "rejected";
	}
	else
	{
		rq->provider->accept(rq);
		rq->verdict = "accepted";
	}
}

/* Finishes a fully received request: drops it or answers, records and counts it. */
static enum MHD_Result request_finish(Request *rq)
{
	enum MHD_Result ret;

	if (rq->step.drop)
	{
		rq->verdict = "dropped";
		record_add(rq);
		receive_log(rq);
		stats_count(rq);
		return MHD_NO;
	}
	if (rq->control)
	{
		if (rq->too_large)
			control_error(rq, 413, "payload too large");
		else
			control_handle(rq);
	}
	else
	{
		if (rq->too_large)
		{
			respond_json(rq, 413, json_pack("{s:s}", "error", "payload_too_large"));
			rq->verdict = "rejected";
		}
		else if (rq->provider == NULL)
		{
			char message[512];

			snprintf(message, sizeof(message), "no provider double serves %s %.400s", rq->method,
					 rq->url);
			respond_json(rq, 404, json_pack("{s:s, s:s}", "error", "not_found", "message", message));
			rq->verdict = "unrouted";
		}
		else
			provider_handle(rq);
		script_headers(rq);
		record_add(rq);
		receive_log(rq);
		stats_count(rq);
	}
	ret = MHD_queue_response(rq->conn, (unsigned) rq->status, rq->response);
	MHD_destroy_response(rq->response);
	rq->response = NULL;
	return ret;
}

/* libmicrohttpd's access handler: collects the body, delays when scripted, then finishes. */
static enum MHD_Result request_handle(void *cls, struct MHD_Connection *conn, const char *url,
									  const char *method, const char *version,
									  const char *upload_data, size_t *upload_data_size,
									  void **req_cls)
{
	Request *rq = *req_cls;

	(void) cls;
	(void) version;
	if (rq == NULL)
	{
		*req_cls = request_new(conn, url, method);
		return MHD_YES;
	}
	if (*upload_data_size > 0)
	{
		if (rq->body.len + *upload_data_size > MAX_BODY)
			rq->too_large = true;
		else
			buf_put(&rq->body, upload_data, *upload_data_size);
		*upload_data_size = 0;
		return MHD_YES;
	}
	if (rq->step.delay_ms > 0 && !rq->delayed)
	{
		rq->delayed = true;
		MHD_suspend_connection(conn);
		delay_schedule(rq);
		return MHD_YES;
	}
	return request_finish(rq);
}

/* Frees a request's state when libmicrohttpd is done with it. */
static void request_done(void *cls, struct MHD_Connection *conn, void **req_cls,
						 enum MHD_RequestTerminationCode toe)
{
	Request *rq = *req_cls;

	(void) cls;
	(void) conn;
	(void) toe;
	if (rq == NULL)
		return;
	if (rq->response)
		MHD_destroy_response(rq->response);
	step_release(&rq->step);
	json_decref(rq->json);
	json_decref(rq->form);
	buf_free(&rq->body);
	free(rq->path_buf);
	free(rq);
	*req_cls = NULL;
}

/* ------------------------------------------------------------------ main */

typedef struct Options
{
	unsigned port;
	const char *config;
	const char *cert;
	const char *key;
	const char *receive_log;
	unsigned threads;
} Options;

/* Prints how to call the program and exits with status. */
static void usage(int status)
{
	fprintf(status ? stderr : stdout,
			"usage: provider_double --config FILE [--port N] [--threads N] [--no-record]\n"
			"                       [--ring N] [--cert FILE --key FILE] [--receive-log FILE]\n"
			"  --port N      port on 127.0.0.1 (0, the default, picks a free one)\n"
			"  --config FILE JSON file with the expected credentials (see README.md)\n"
			"  --threads N   listener threads (default: online CPUs)\n"
			"  --no-record   keep no request records (counters still count)\n"
			"  --ring N      keep the last N requests (default 10000)\n"
			"  --cert, --key PEM certificate and key: serve HTTPS\n"
			"  --receive-log FILE  append one line per provider request: receive time (µs),\n"
			"                provider, verdict, status, notiflow delivery id (latency benchmarks)\n");
	exit(status);
}

/* Parses a non-negative integer option value or exits with usage. */
static unsigned parse_count(const char *arg, unsigned max)
{
	char *end;
	unsigned long v = strtoul(arg, &end, 10);

	if (*arg == '\0' || *end != '\0' || v > max)
		usage(2);
	return (unsigned) v;
}

/* Parses the command line. */
static Options parse_options(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"port", required_argument, NULL, 'p'},	   {"config", required_argument, NULL, 'c'},
		{"cert", required_argument, NULL, 'C'},	   {"key", required_argument, NULL, 'K'},
		{"threads", required_argument, NULL, 't'}, {"no-record", no_argument, NULL, 'n'},
		{"ring", required_argument, NULL, 'r'},	   {"help", no_argument, NULL, 'h'},
		{"receive-log", required_argument, NULL, 'L'},
		{NULL, 0, NULL, 0},
	};
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	Options o = {.threads = cpus > 0 ? (unsigned) cpus : 1};
	int c;

	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1)
	{
		switch (c)
		{
			case 'p': o.port = parse_count(optarg, 65535); break;
			case 'c': o.config = optarg; break;
			case 'C': o.cert = optarg; break;
			case 'K': o.key = optarg; break;
			case 't': o.threads = parse_count(optarg, 256); break;
			case 'n': recording = false; break;
			case 'r': ring_cap = parse_count(optarg, 10000000); break;
			case 'L': o.receive_log = optarg; break;
			case 'h': usage(0); break;
			default: usage(2);
		}
	}
	if (optind != argc || o.config == NULL || o.threads == 0 || ring_cap == 0 ||
		(o.cert == NULL) != (o.key == NULL))
		usage(2);
	return o;
}

/* Reads a whole file into a NUL-terminated buffer, or exits with a message. */
static char *read_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	Buf b = {0};
	char chunk[4096];
	size_t n;

	if (f == NULL)
	{
		fprintf(stderr, "provider_double: cannot open %s: %m\n", path);
		exit(1);
	}
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
		buf_put(&b, chunk, n);
	fclose(f);
	return b.data ? b.data : strdup("");
}

/* Raises the descriptor limit to its hard maximum; returns how many connections fit in it. */
static unsigned connection_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return 1000;
	if (rl.rlim_cur < rl.rlim_max)
	{
		rl.rlim_cur = rl.rlim_max;
		(void) setrlimit(RLIMIT_NOFILE, &rl);
		(void) getrlimit(RLIMIT_NOFILE, &rl);
	}
	if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > 65536)
		return 65536 - 64;
	return rl.rlim_cur > 128 ? (unsigned) rl.rlim_cur - 64 : 64;
}

/* Starts the daemon on 127.0.0.1, prints the listening line and serves until SIGINT/SIGTERM. */
int main(int argc, char **argv)
{
	Options o = parse_options(argc, argv);
	json_error_t jerr;
	struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t) o.port)};
	struct MHD_OptionItem opts[10];
	unsigned flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG |
					 MHD_USE_TURBO;
	int nopts = 0, sig;
	char *cert = NULL, *key = NULL;
	struct MHD_Daemon *daemon;
	pthread_condattr_t cattr;
	pthread_t delay_thread;
	sigset_t sigs;

	config = json_load_file(o.config, 0, &jerr);
	if (!json_is_object(config))
	{
		fprintf(stderr, "provider_double: %s:%d: %s\n", o.config, jerr.line,
				config ? "the configuration must be a JSON object" : jerr.text);
		return 1;
	}
	if (o.cert)
	{
		if (!MHD_is_feature_supported(MHD_FEATURE_TLS))
		{
			fprintf(stderr, "provider_double: this libmicrohttpd has no TLS support\n");
			return 1;
		}
		cert = read_file(o.cert);
		key = read_file(o.key);
		flags |= MHD_USE_TLS;
		opts[nopts++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_CERT, 0, cert};
		opts[nopts++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_KEY, 0, key};
	}
	if (o.receive_log)
	{
		receive_log_fd = open(o.receive_log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
		if (receive_log_fd < 0)
		{
			fprintf(stderr, "provider_double: cannot open %s: %m\n", o.receive_log);
			return 1;
		}
	}
	id_seed = (uint64_t) wall_ms() ^ ((uint64_t) getpid() << 32);
	ring = calloc(ring_cap, sizeof(json_t *));
	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	opts[nopts++] = (struct MHD_OptionItem){MHD_OPTION_SOCK_ADDR, 0, &addr};
	opts[nopts++] = (struct MHD_OptionItem){MHD_OPTION_THREAD_POOL_SIZE, o.threads, NULL};
	opts[nopts++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_TIMEOUT, 120, NULL};
	/*
	 * libmicrohttpd zeroes a connection's whole memory pool after every
	 * request: with its 32 KiB default that memset and memmove were a third
	 * of the double's CPU under the dispatch benchmark.  Request headers fit
	 * in 8 KiB (bodies are copied out of the pool as they arrive).
	 */
	opts[nopts++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_MEMORY_LIMIT, 8192, NULL};
	/*
	 * libmicrohttpd admits FD_SETSIZE - 4 connections by default (shared by
	 * the pool's threads); the ones over it wait in the listen queue, their
	 * requests unanswered.  Two dispatchers at http_concurrency 512 keep
	 * 1,024 connections open: as many as the descriptors allow.
	 */
	opts[nopts++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_LIMIT, connection_limit(), NULL};
	opts[nopts++] = (struct MHD_OptionItem){MHD_OPTION_END, 0, NULL};

	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	pthread_condattr_init(&cattr);
	pthread_condattr_setclock(&cattr, CLOCK_MONOTONIC);
	pthread_cond_init(&delay_cond, &cattr);
	pthread_create(&delay_thread, NULL, delay_run, NULL);

	daemon = MHD_start_daemon(flags, 0, NULL, NULL, request_handle, NULL,
							  MHD_OPTION_NOTIFY_COMPLETED, request_done, NULL, MHD_OPTION_ARRAY,
							  opts, MHD_OPTION_END);
	if (daemon == NULL)
	{
		fprintf(stderr, "provider_double: cannot listen on 127.0.0.1:%u\n", o.port);
		return 1;
	}
	printf("listening on 127.0.0.1:%u\n",
		   (unsigned) MHD_get_daemon_info(daemon, MHD_DAEMON_INFO_BIND_PORT)->port);
	fflush(stdout);

	sigwait(&sigs, &sig);
	delay_stop(delay_thread);
	MHD_stop_daemon(daemon);
	script_reset();
	record_reset();
	free(ring);
	free(cert);
	free(key);
	json_decref(config);
	if (receive_log_fd >= 0)
		close(receive_log_fd);
	return 0;
}
