/*
 * sendgrid.c — the SendGrid v3 Mail Send adapter.
 *
 * POSTs {base_url | https://api.sendgrid.com}/v3/mail/send with
 * "Authorization: Bearer <api_key>" and a JSON body built with the jsonb API:
 * one personalization to the recipient, from {email, name}, subject, content
 * blocks text/plain then text/html, and custom_args {notiflow_delivery_id}
 * so that SendGrid's event webhooks can be matched to the delivery.
 * SendGrid answers 202 with the message id in the X-Message-Id header;
 * errors are {"errors": [{"message", "field", "help"}]}.
 */
#include "postgres.h"

#include <time.h>

#include "utils/fmgrprotos.h"
#include "utils/jsonb.h"
#include "utils/jsonpath.h"

#include "jsonb_util.h"
#include "provider.h"


/* Returns the content block {"type": type, "value": value}. */
static Jsonb *
sendgrid_content_block(const char *type, const char *value)
{
	return jsonb_make_object(2, (const char *[]) {"type", "value"},
							 (Jsonb *[]) {jsonb_make_string(type), jsonb_make_string(value)});
}

/* Builds the Mail Send request. */
static void
sendgrid_build(const DeliveryJob *job, ProviderRequest *req)
{
	char	   *api_key = provider_config_required(job, "api_key");
	EmailParts	m;
	Jsonb	   *recipient;
	Jsonb	   *personalization;
	Jsonb	   *from;
	Jsonb	   *blocks[2];
	int			nblocks = 0;
	Jsonb	   *delivery_id;
	Jsonb	   *body;

	provider_email_read(job, &m);

	recipient = jsonb_make_object(1, (const char *[]) {"email"}, (Jsonb *[]) {jsonb_make_string(m.to)});
	personalization = jsonb_make_object(1, (const char *[]) {"to"},
										(Jsonb *[]) {jsonb_make_array(1, &recipient)});
	from = jsonb_make_object_present(2, (const char *[]) {"email", "name"},
									 (Jsonb *[]) {jsonb_make_string(m.from_address),
									 m.from_name ? jsonb_make_string(m.from_name) : NULL});
	if (m.text != NULL)
		blocks[nblocks++] = sendgrid_content_block("text/plain", m.text);
	if (m.html != NULL)
		blocks[nblocks++] = sendgrid_content_block("text/html", m.html);
	delivery_id = jsonb_make_string(psprintf(INT64_FORMAT, job->delivery_id));
	body = jsonb_make_object(5,
							 (const char *[]) {"personalizations", "from", "subject", "content", "custom_args"},
							 (Jsonb *[]) {jsonb_make_array(1, &personalization), from, jsonb_make_string(m.subject),
							 jsonb_make_array(nblocks, blocks),
							 jsonb_make_object(1, (const char *[]) {"notiflow_delivery_id"}, &delivery_id)});

	req->url = provider_url(job, "https://api.sendgrid.com", "/v3/mail/send");
	provider_add_header(req, "Authorization", psprintf("Bearer %s", api_key));
	provider_add_header(req, "Content-Type", "application/json");
	appendStringInfoString(&req->body, JsonbToCString(NULL, &body->root, VARSIZE(body)));
}

/* Tells whether a 400 answer names the recipient's address as the bad field. */
static bool
sendgrid_recipient_refused(const ProviderResponse *resp)
{
	Jsonb	   *answer = provider_response_json(resp);
	JsonPath   *path;

	if (answer == NULL)
		return false;
	path = DatumGetJsonPathP(DirectFunctionCall1(jsonpath_in, CStringGetDatum(
		"$.errors[*].field ? (@ like_regex \"^personalizations\\\\.[0-9]+\\\\.to\\\\.[0-9]+\\\\.email$\")")));
	return jsonpath_first(answer, path) != NULL;
}

/*
 * Returns the wait until X-RateLimit-Reset (Unix seconds), which SendGrid
 * sends with its 429 answers: at least 1 s, at most 1 h; 0 when absent.
 */
static int
sendgrid_rate_limit_reset_ms(const ProviderResponse *resp)
{
	char	   *v = provider_response_header(resp, "x-ratelimit-reset");
	char	   *end;
	long		reset;
	long		wait_s;

	if (v == NULL)
		return 0;
	reset = strtol(v, &end, 10);
	if (end == v)
		return 0;
	wait_s = reset - (long) time(NULL);
	return (int) Min(Max(wait_s, 1), 3600) * 1000;
}

/* Sent: the X-Message-Id; 429 waits for the rate limit reset; a refused address is the recipient's fault. */
static void
sendgrid_classify(const DeliveryJob *job, const ProviderRequest *req,
				const ProviderResponse *resp, ProviderResult *res)
{
	provider_classify_http(resp, res);
	if (res->outcome == OUTCOME_SENT)
		res->message_id = provider_response_header(resp, "x-message-id");
	else if (resp->status == 429 && res->retry_after_ms == 0)
		res->retry_after_ms = sendgrid_rate_limit_reset_ms(resp);
	else if (resp->curl_code == 0 && resp->status == 400 && sendgrid_recipient_refused(resp))
		res->outcome = OUTCOME_INVALID_RECIPIENT;
}

const ProviderAdapter provider_sendgrid = {"sendgrid", "email", sendgrid_build, sendgrid_classify};
