/*
 * teams.c — the Microsoft Teams chat provider: POSTs to a channel's webhook
 * (config webhook_url, or the subscriber's address when that is a webhook
 * URL).  A Workflows (Power Automate) URL gets a message with one Adaptive
 * Card holding the text and answers 202; a legacy Office 365 connector URL
 * gets a MessageCard and answers 200 "1".  Connectors report a failed
 * delivery, throttling included, in a 2xx body ("... returned HTTP error 429")
 * rather than with its status.
 */
#include "postgres.h"

#include "utils/formatting.h"

#include "jsonb_util.h"
#include "provider.h"

/* Returns the array [elem] for an object elem. */
static Jsonb *
array_of_one(Jsonb *elem)
{
	JsonbParseState *state = NULL;
	JsonbValue	v;

	pushJsonbValue(&state, WJB_BEGIN_ARRAY, NULL);
	v.type = jbvBinary;
	v.val.binary.data = &elem->root;
	v.val.binary.len = VARSIZE(elem) - VARHDRSZ;
	pushJsonbValue(&state, WJB_ELEM, &v);
	return JsonbValueToJsonb(pushJsonbValue(&state, WJB_END_ARRAY, NULL));
}

/* Returns {"type": "message", "attachments": [an Adaptive Card with one TextBlock]}. */
static Jsonb *
adaptive_card_message(Jsonb *text)
{
	const char *block_keys[] = {"type", "text", "wrap"};
	Jsonb	   *block_values[] = {jsonb_make_string("TextBlock"), text, jsonb_make_bool(true)};
	const char *card_keys[] = {"type", "version", "body"};
	Jsonb	   *card_values[] = {jsonb_make_string("AdaptiveCard"), jsonb_make_string("1.4"),
	array_of_one(jsonb_make_object(3, block_keys, block_values))};
	const char *attachment_keys[] = {"contentType", "content"};
	Jsonb	   *attachment_values[] = {jsonb_make_string("application/vnd.microsoft.card.adaptive"),
	jsonb_make_object(3, card_keys, card_values)};
	const char *message_keys[] = {"type", "attachments"};
	Jsonb	   *message_values[] = {jsonb_make_string("message"),
	array_of_one(jsonb_make_object(2, attachment_keys, attachment_values))};

	return jsonb_make_object(2, message_keys, message_values);
}

/* Builds the webhook POST in the shape the URL's kind expects. */
static void
teams_build(const DeliveryJob *job, ProviderRequest *req)
{
	Jsonb	   *text = jsonb_make_string(provider_content_string(job, "text"));
	Jsonb	   *body;
	char	   *lower;

	req->url = provider_recipient_url(job, req, "webhook_url");

	lower = asc_tolower(req->url, strlen(req->url));
	if (strstr(lower, "/workflows/") != NULL || strstr(lower, "logic.azure.com") != NULL ||
		strstr(lower, "powerautomate") != NULL)
		body = adaptive_card_message(text);
	else
	{
		const char *keys[] = {"@type", "@context", "text"};
		Jsonb	   *values[] = {jsonb_make_string("MessageCard"),
		jsonb_make_string("https://schema.org/extensions"), text};

		body = jsonb_make_object(3, keys, values);
	}
	provider_add_header(req, "Content-Type", "application/json");
	appendStringInfoString(&req->body, JsonbToCString(NULL, &body->root, VARSIZE(body)));
}

/*
 * Sent on 200/202, unless a connector's 2xx body reports a failed delivery
 * ("... endpoint returned HTTP error 429 ..."): retried for 429 and 5xx,
 * permanent otherwise.  A webhook that is gone (404, 410) is the recipient's
 * fault.  Workflows errors {"error": {"code", "message"}} name the cause.
 */
static void
teams_classify(const DeliveryJob *job, const ProviderRequest *req,
				const ProviderResponse *resp, ProviderResult *res)
{
	Jsonb	   *error;
	char	   *code;

	provider_classify_http(resp, res);
	if (resp->curl_code != 0)
		return;
	if (res->outcome == OUTCOME_SENT)
	{
		const char *failed = resp->body.data ? strstr(resp->body.data, "returned HTTP error ") : NULL;

		if (failed != NULL)
		{
			failed += strlen("returned HTTP error ");
			res->outcome = strncmp(failed, "429", 3) == 0 || failed[0] == '5' ? OUTCOME_RETRY : OUTCOME_PERMANENT;
			res->error = psprintf("teams: %s", provider_response_excerpt(resp, 200));
		}
		return;
	}
	error = jsonb_get_jsonb(provider_response_json(resp), "error");
	code = jsonb_get_string(error, "code");
	if (code != NULL)
	{
		char	   *message = jsonb_get_string(error, "message");

		res->error = psprintf("teams error %s: %s (HTTP %ld)", code,
							  message ? message : "(no message)", resp->status);
	}
	if (resp->status == 404 || resp->status == 410)
		res->outcome = OUTCOME_INVALID_RECIPIENT;
}

const ProviderAdapter provider_teams = {"teams", "chat", teams_build, teams_classify};
