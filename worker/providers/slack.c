/*
 * slack.c — the Slack chat provider, in one of two modes:
 *   incoming webhook: POST {"text"} to config webhook_url (a full URL, base_url
 *     not applied), or to the subscriber's address when that is itself a
 *     webhook URL; Slack answers 200 "ok" or a plain-text error code.
 *   Web API: POST {"channel", "text"} to
 *     {base_url or https://slack.com}/api/chat.postMessage with
 *     "Authorization: Bearer <token>", where the channel is the subscriber's
 *     address (a channel or user id) or config channel; Slack answers
 *     {"ok": true, "ts"} or {"ok": false, "error"}, mostly with HTTP 200.
 * A subscriber address selects the Web API (or is the webhook); without one
 * config webhook_url wins over token + channel.  The text is the content's
 * slack_text when the engine rendered one (values with "&", "<", ">"
 * escaped for Slack), else its text.
 */
#include "postgres.h"

#include "jsonb_util.h"
#include "provider.h"

/* Builds a webhook POST or a chat.postMessage call. */
static void
slack_build(const DeliveryJob *job, ProviderRequest *req)
{
	const char *recipient = job->recipient && job->recipient[0] ? job->recipient : NULL;
	char	   *webhook_url = provider_config_string(job, "webhook_url");
	const char *keys[] = {"text", "channel"};
	char	   *slack_text = jsonb_get_string(job->content, "slack_text");
	Jsonb	   *values[] = {jsonb_make_string(slack_text ? slack_text : provider_content_string(job, "text")), NULL};
	Jsonb	   *body;

	if (recipient != NULL && provider_is_http_url(recipient))
	{
		req->url = pstrdup(recipient);
		req->url_from_data = true;
	}
	else if (recipient == NULL && webhook_url != NULL && webhook_url[0] != '\0')
		req->url = webhook_url;

	if (req->url != NULL)
	{
		provider_add_header(req, "Content-Type", "application/json");
		body = jsonb_make_object(1, keys, values);
	}
	else
	{
		char	   *token = provider_config_string(job, "token");
		char	   *channel = recipient ? pstrdup(recipient) : provider_config_required(job, "channel");

		if (token == NULL || token[0] == '\0')
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("slack provider has no token to post to channel \"%s\"", channel),
					 errdetail("config.token: required to post to a subscriber's channel"),
					 errhint("Set config.token, or leave the subscriber's slack address empty to use config.webhook_url.")));
		req->url = provider_url(job, "https://slack.com", "/api/chat.postMessage");
		provider_add_header(req, "Content-Type", "application/json; charset=utf-8");
		provider_add_header(req, "Authorization", psprintf("Bearer %s", token));
		values[1] = jsonb_make_string(channel);
		body = jsonb_make_object(2, keys, values);
	}
	appendStringInfoString(&req->body, JsonbToCString(NULL, &body->root, VARSIZE(body)));
}

/*
 * Returns Slack's error code: "error" of a JSON {"ok": false} answer
 * ("unknown_error" when it has none), or the plain-text body of a failed
 * webhook call; NULL when there is none.  Sets *ok for a JSON {"ok": true}.
 */
static char *
slack_error_code(const ProviderResponse *resp, Jsonb *json, bool *ok)
{
	JsonbValue *v = jsonb_get(json, "ok");
	char	   *text;
	size_t		len;

	*ok = v != NULL && v->type == jbvBool && v->val.boolean;
	if (v != NULL)
	{
		char	   *code;

		if (*ok)
			return NULL;
		/* "ok" false (or not a boolean) without an error code is still no success */
		code = jsonb_get_string(json, "error");
		return code != NULL ? code : pstrdup("unknown_error");
	}
	if (resp->status >= 200 && resp->status < 300)
		return NULL;
	text = provider_response_excerpt(resp, 64);
	len = strlen(text);
	while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == '\r' || text[len - 1] == ' '))
		text[--len] = '\0';
	return len > 0 && strspn(text, "abcdefghijklmnopqrstuvwxyz_") == len ? text : NULL;
}

/*
 * Sent with the message ts (Web API) or on "ok" (webhook).  Slack's error
 * codes refine the HTTP status, which is 200 for most Web API errors:
 * rate limits and Slack-side failures are retried, an archived channel or a
 * disabled webhook is the recipient's fault, a channel or user the token
 * cannot see or post to falls back without marking the address (Slack
 * answers channel_not_found for a private channel the bot is not in too),
 * anything else (invalid_auth, not_authed, ...) is permanent.
 */
static void
slack_classify(const DeliveryJob *job, const ProviderRequest *req,
				const ProviderResponse *resp, ProviderResult *res)
{
	/* not fatal_error: Slack says part of the operation may have succeeded (a retry may post twice) */
	static const char *const retry_codes[] = {"ratelimited", "rate_limited", "internal_error",
	"service_unavailable", "request_timeout"};
	/* the channel or user is gone: mark the address */
	static const char *const recipient_codes[] = {"is_archived", "channel_is_archived", "no_service"};

	/*
	 * the token cannot see or post to it: Slack says channel_not_found also
	 * for a private channel the bot was not invited to, or a token of another
	 * workspace; the next provider may, and the address is kept
	 */
	static const char *const unseen_codes[] = {"channel_not_found", "user_not_found", "not_in_channel"};
	Jsonb	   *json;
	char	   *code;
	bool		ok;

	provider_classify_http(resp, res);
	if (resp->curl_code != 0)
		return;
	json = provider_response_json(resp);
	code = slack_error_code(resp, json, &ok);
	if (ok && res->outcome == OUTCOME_SENT)
		res->message_id = jsonb_get_string(json, "ts");
	if (code == NULL)
		return;
	res->error = psprintf("slack error %s (HTTP %ld)", code, resp->status);
	for (int i = 0; i < (int) lengthof(retry_codes); i++)
		if (strcmp(code, retry_codes[i]) == 0)
		{
			res->outcome = OUTCOME_RETRY;
			return;
		}
	for (int i = 0; i < (int) lengthof(recipient_codes); i++)
		if (strcmp(code, recipient_codes[i]) == 0)
		{
			res->outcome = OUTCOME_INVALID_RECIPIENT;
			return;
		}
	for (int i = 0; i < (int) lengthof(unseen_codes); i++)
		if (strcmp(code, unseen_codes[i]) == 0)
		{
			res->outcome = OUTCOME_PERMANENT;
			res->recipient_fault = true;
			return;
		}
	if (res->outcome == OUTCOME_SENT)
		res->outcome = OUTCOME_PERMANENT;
}

const ProviderAdapter provider_slack = {"slack", "chat", slack_build, slack_classify};
