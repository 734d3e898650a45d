/*
 * sendgrid.c — the SendGrid v3 Mail Send adapter.
 *
 * POSTs {base_url | https://api.sendgrid.com}/v3/mail/send with
 * "Authorization: Bearer <api_key>" and a JSON body (written with escape_json):
 * one personalization to the recipient, from {email, name}, subject, content
 * blocks text/plain then text/html, and custom_args {notiflow_delivery_id}
 * so that SendGrid's event webhooks can be matched to the delivery.
 * SendGrid answers 202 with the message id in the X-Message-Id header;
 * errors are {"errors": [{"message", "field", "help"}]}.
 */
#include "postgres.h"

#include <time.h>

#include "utils/fmgrprotos.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/jsonpath.h"

#include "jsonb_util.h"
#include "provider.h"


/* Appends ,{"type": type, "value": value} (without the comma when first). */
static void
sendgrid_content_block(StringInfo body, bool first, const char *type, const char *value)
{
	appendStringInfoString(body, first ? "{\"type\":" : ",{\"type\":");
	escape_json(body, type);
	appendStringInfoString(body, ",\"value\":");
	escape_json(body, value);
	appendStringInfoChar(body, '}');
}

/*
 * Builds the Mail Send request.  The body is written as JSON text directly,
 * every value through escape_json: it is the request the dispatcher builds
 * most, and going through jsonb and JsonbToCString took about 5% of a
 * dispatcher's CPU per delivery.
 */
static void
sendgrid_build(const DeliveryJob *job, ProviderRequest *req)
{
	char	   *api_key = provider_config_required(job, "api_key");
	EmailParts	m;
	StringInfo	body = &req->body;

	provider_email_read(job, &m);
	/* SendGrid answers 400 "The subject is required": the next provider may take it */
	if (m.subject == NULL || m.subject[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("sendgrid needs a subject"),
				 errdetail("content.subject: empty")));

	appendStringInfoString(body, "{\"personalizations\":[{\"to\":[{\"email\":");
	escape_json(body, m.to);
	appendStringInfoString(body, "}]}],\"from\":{\"email\":");
	escape_json(body, m.from_address);
	if (m.from_name != NULL)
	{
		appendStringInfoString(body, ",\"name\":");
		escape_json(body, m.from_name);
	}
	appendStringInfoString(body, "},\"subject\":");
	escape_json(body, m.subject);
	appendStringInfoString(body, ",\"content\":[");
	if (m.text != NULL)
		sendgrid_content_block(body, true, "text/plain", m.text);
	if (m.html != NULL)
		sendgrid_content_block(body, m.text == NULL, "text/html", m.html);
	appendStringInfo(body, "],\"custom_args\":{\"notiflow_delivery_id\":\"" INT64_FORMAT "\"}}",
					 job->delivery_id);

	req->url = provider_url(job, "https://api.sendgrid.com", "/v3/mail/send");
	provider_add_header(req, "Authorization", psprintf("Bearer %s", api_key));
	provider_add_header(req, "Content-Type", "application/json");
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
