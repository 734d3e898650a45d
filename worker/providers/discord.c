/*
 * discord.c — the Discord chat provider: POSTs {"content": text} to a channel
 * webhook (config webhook_url, or the subscriber's address when that is a
 * webhook URL) with ?wait=true, so that Discord answers 200 with the created
 * message and its id (204 without a body when wait is ignored).  Mentions in
 * the text are not resolved (allowed_mentions.parse = []), so rendered data
 * cannot ping @everyone.  Errors are {"message", "code"}; 429 adds
 * "retry_after" in seconds (fractional).
 */
#include "postgres.h"

#include <math.h>

#include "jsonb_util.h"
#include "provider.h"

/* Builds the webhook POST. */
static void
discord_build(const DeliveryJob *job, ProviderRequest *req)
{
	const char *keys[] = {"content", "allowed_mentions"};
	const char *mention_keys[] = {"parse"};
	Jsonb	   *no_mentions = jsonb_make_string_array(NIL);
	Jsonb	   *values[2];
	Jsonb	   *body;
	char	   *url;

	url = provider_recipient_url(job, req, "webhook_url");
	req->url = psprintf("%s%cwait=true", url, strchr(url, '?') ? '&' : '?');

	values[0] = jsonb_make_string(provider_content_string(job, "text"));
	values[1] = jsonb_make_object(1, mention_keys, &no_mentions);
	body = jsonb_make_object(2, keys, values);
	provider_add_header(req, "Content-Type", "application/json");
	appendStringInfoString(&req->body, JsonbToCString(NULL, &body->root, VARSIZE(body)));
}

/*
 * Sent with the message id (200) or without one (204).  A 429 is retried
 * after the body's retry_after (more precise than the Retry-After header,
 * which is the fallback); an unknown webhook (404, code 10015) is the
 * recipient's fault.
 */
static void
discord_classify(const DeliveryJob *job, const ProviderRequest *req,
				const ProviderResponse *resp, ProviderResult *res)
{
	Jsonb	   *json;
	Jsonb	   *code;
	Jsonb	   *retry_after;
	char	   *message;

	json = provider_classify_json(resp, res, "id");
	if (resp->curl_code != 0 || res->outcome == OUTCOME_SENT)
		return;
	code = jsonb_get_jsonb(json, "code");
	message = jsonb_get_string(json, "message");
	if (message != NULL && code != NULL)
		res->error = psprintf("discord error %s: %s (HTTP %ld)", jsonb_scalar_text(code), message,
							  resp->status);
	else if (message != NULL)
		res->error = psprintf("discord: %s (HTTP %ld)", message, resp->status);
	retry_after = jsonb_get_jsonb(json, "retry_after");
	if (resp->status == 429 && retry_after != NULL)
	{
		double		seconds = strtod(jsonb_scalar_text(retry_after), NULL);

		if (seconds > 0)
			res->retry_after_ms = (int) Min(ceil(seconds * 1000.0), 24.0 * 3600 * 1000);
	}
	if (resp->status == 404 || (code != NULL && strcmp(jsonb_scalar_text(code), "10015") == 0))
		res->outcome = OUTCOME_INVALID_RECIPIENT;
}

const ProviderAdapter provider_discord = {"discord", "chat", discord_build, discord_classify};
