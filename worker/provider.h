/*
 * provider.h — the one adapter interface every provider implements.
 *
 * The dispatcher claims deliveries in a transaction, and while that
 * transaction is still open asks each delivery's adapter to build its request
 * (build: PostgreSQL functions such as the jsonb API may be used).  Then it
 * commits, performs every request through libcurl with no transaction open,
 * and in a second transaction asks the adapter to classify each response
 * (classify).  Adapters never touch curl handles and never run on a libcurl
 * thread; they only fill and read the plain structures below.
 *
 * Adding a provider is one file in worker/providers/ and one row in the
 * registry (provider_registry.c) and in the provider_kinds table.
 */
#ifndef NOTIFLOW_PROVIDER_H
#define NOTIFLOW_PROVIDER_H

#include "postgres.h"
#include "lib/stringinfo.h"
#include "nodes/pg_list.h"
#include "utils/jsonb.h"

/* One claimed delivery, as an adapter sees it. */
typedef struct DeliveryJob
{
	int64		delivery_id;
	int64		execution_id;
	int			attempt;		/* 1 for the first attempt with this provider */
	const char *channel;
	const char *provider;		/* provider name */
	const char *kind;			/* provider kind (adapter) */
	Jsonb	   *config;			/* provider config (with secrets) */
	const char *recipient;		/* address; NULL: the provider's configured destination */
	Jsonb	   *content;		/* rendered fields: subject/text/html, text, title/body/data, body */
} DeliveryJob;

/* What to send.  Strings are palloc'd in the batch's memory context. */
typedef struct ProviderRequest
{
	char	   *url;			/* full URL (base_url already applied) */
	const char *method;			/* NULL: POST */
	List	   *headers;		/* "Name: value" strings (checked for CR/LF) */
	StringInfoData body;		/* request body (initialised empty) */
	char	   *username;		/* basic auth (or AWS access key id with aws_sigv4) */
	char	   *password;
	char	   *aws_sigv4;		/* e.g. "aws:amz:eu-west-1:ses": sign with SigV4 */
	bool		url_from_data;	/* URL came from data: refuse private addresses */
	int			purpose;		/* the adapter's own tag, seen again by classify
								 * (e.g. "this is the token request"); 0 by default.
								 * Not 0: a preliminary request to another service
								 * than the provider's API (an access token): the
								 * dispatcher keeps no excerpt of its answer, and it
								 * takes none of the provider's rate_per_second */
	char	   *log_body;		/* what logs and dead letters keep of the body when
								 * it holds a secret; NULL: the body itself */
	int			defer_ms;		/* set by build instead of a request when the delivery
								 * must wait (for a token another request is fetching):
								 * nothing is sent, the delivery is due again in
								 * defer_ms, no attempt counted */

	/* SMTP (url is smtp:// or smtps://): envelope and message parts */
	bool		smtp;
	bool		smtp_starttls;
	char	   *smtp_from;		/* envelope sender address */
	char	   *smtp_to;		/* envelope recipient address */
	char	   *smtp_from_header;	/* From: header value */
	char	   *smtp_subject;
	char	   *smtp_text;
	char	   *smtp_html;
} ProviderRequest;

/* What came back (filled by the HTTP layer). */
typedef struct ProviderResponse
{
	long		status;			/* HTTP status or SMTP reply code; 0 when none */
	int			curl_code;		/* CURLcode; 0 = OK */
	const char *curl_error;		/* curl's message when curl_code != 0 */
	StringInfoData body;
	List	   *headers;		/* "name: value" strings, as received */
	const char *smtp_reply;		/* SMTP: the server's last refusal ("550 5.1.1 ..."); or NULL */
	double		latency_ms;
} ProviderResponse;

/* How an attempt ended. */
typedef enum ProviderOutcome
{
	OUTCOME_SENT,				/* accepted by the provider */
	OUTCOME_RETRY,				/* try again later (429, 5xx, timeouts, throttling) */
	OUTCOME_PERMANENT,			/* this provider will not take it: fall back */
	OUTCOME_INVALID_RECIPIENT,	/* the address is bad: mark it, give up */
	OUTCOME_AGAIN,				/* the adapter did preliminary work (e.g. fetched an
								 * access token): send again now, no attempt counted */
	OUTCOME_REJECTED			/* the recipient opted out: fail, no fallback (another
								 * provider must not reach them either), no dead
								 * letter, not the provider's failure, address kept */
} ProviderOutcome;

typedef struct ProviderResult
{
	ProviderOutcome outcome;
	char	   *message_id;		/* provider message id when sent */
	char	   *error;			/* short description when not sent (when sent, of what failed in part) */
	int			retry_after_ms; /* from Retry-After or the provider's throttle hint; 0 none */
	bool		recipient_fault;	/* a permanent answer about the recipient that the
									 * provider's configuration can cause too: falls
									 * back, but does not count against the provider */
} ProviderResult;

typedef struct ProviderAdapter
{
	const char *kind;
	const char *channel;
	/* Fills req for job; raises an error (ereport) for a job it cannot send. */
	void		(*build) (const DeliveryJob *job, ProviderRequest *req);
	/* Classifies a completed attempt (req is what build filled). */
	void		(*classify) (const DeliveryJob *job, const ProviderRequest *req,
							 const ProviderResponse *resp, ProviderResult *res);
} ProviderAdapter;

/* Returns the adapter of a kind, or NULL. */
extern const ProviderAdapter *provider_adapter(const char *kind);

/* --- helpers shared by adapters (provider_common.c) --- */

/* Returns a string config value, or NULL. */
extern char *provider_config_string(const DeliveryJob *job, const char *key);

/* Returns a content field as a string ("" when absent). */
extern char *provider_content_string(const DeliveryJob *job, const char *key);

/* Returns config base_url (without trailing slash) or def, then appends path. */
extern char *provider_url(const DeliveryJob *job, const char *default_base, const char *path);

/* True when s is an http(s) URL without blanks or line breaks. */
extern bool provider_is_http_url(const char *s);

/* Adds a header; errors out when name or value contains CR or LF. */
extern void provider_add_header(ProviderRequest *req, const char *name, const char *value);

/* Appends key=value to an application/x-www-form-urlencoded body. */
extern void provider_form_add(StringInfo body, const char *key, const char *value);

/* Returns the value of a response header (case-insensitive name), or NULL. */
extern char *provider_response_header(const ProviderResponse *resp, const char *name);
extern const char *provider_request_header(const ProviderRequest *req, const char *name);

/* Returns the token of the request's "Authorization: Bearer <token>" header, or NULL. */
extern const char *provider_request_bearer(const ProviderRequest *req);

/* Parses the response body as jsonb; NULL when it is not JSON. */
extern Jsonb *provider_response_json(const ProviderResponse *resp);

/*
 * The common classification: curl errors and 408/429/5xx retryable (honouring
 * Retry-After), other 4xx permanent, 2xx sent.  Adapters call it, then refine.
 */
extern void provider_classify_http(const ProviderResponse *resp, ProviderResult *res);

/*
 * provider_classify_http, then parses the body; when sent, reads the message
 * id from id_key.  Returns the body (NULL after a transport error or when it
 * is not JSON).
 */
extern Jsonb *provider_classify_json(const ProviderResponse *resp, ProviderResult *res,
									 const char *id_key);

/*
 * Returns the first len bytes of the body as text, for errors and attempt
 * logs (through provider_text).
 */
extern char *provider_response_excerpt(const ProviderResponse *resp, int len);

/*
 * Copies len bytes a server sent (a body, a header value) as text in the
 * database's encoding: a byte that does not start a valid character (a
 * Latin-1 body in a UTF-8 database, binary, a NUL) becomes '?', so that what
 * is stored can be read, dumped and restored.
 */
extern char *provider_text(const char *s, int len);

/*
 * The URL of a delivery whose address may be one (a webhook node's url, a
 * subscriber's chat webhook): the recipient when there is one, which must be
 * http(s) (else an error naming it) and is marked as coming from data
 * (url_from_data: checked for private addresses), else config_key of the
 * provider's config.
 */
extern char *provider_recipient_url(const DeliveryJob *job, ProviderRequest *req, const char *config_key);

/*
 * True for a line of an SMTP server's refusal as curl passes it among the
 * headers: "NNN text" or "NNN-text" with a 4xx or 5xx code.
 */
extern bool provider_smtp_refusal_line(const char *line);

/* An email delivery's parts, checked. */
typedef struct EmailParts
{
	char	   *to;				/* recipient address */
	char	   *from;			/* config from: "Name <address>" or an address */
	char	   *from_name;		/* display name of from, or NULL */
	char	   *from_address;	/* address of from */
	char	   *subject;		/* "" when absent */
	char	   *text;			/* NULL when absent or empty */
	char	   *html;			/* NULL when absent or empty */
} EmailParts;

/* Returns a config string that must be set; raises an error naming the key otherwise. */
extern char *provider_config_required(const DeliveryJob *job, const char *key);

/* Reads and checks an email delivery's parts (provider_email.c). */
extern void provider_email_read(const DeliveryJob *job, EmailParts *m);

/*
 * A header's text as it may go in a message (RFC 2047, RFC 5322 2.1.1): as
 * it is when printable ASCII of at most 76 characters; else as UTF-8
 * encoded words of at most 75 characters, one per folded line when fold,
 * else separated by spaces (for a value that does not go in a header line
 * of ours, such as SES's FromEmailAddress).
 */
extern char *email_header_text(const char *text, bool fold);

/*
 * The From of a message: the display name quoted, or as encoded words (not
 * folded), and the address.
 */
extern char *email_from_header(const EmailParts *m);

#endif							/* NOTIFLOW_PROVIDER_H */
