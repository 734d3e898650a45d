/*
 * twilio.c — the Twilio SMS provider: POSTs a form (To, From, Body) to
 *   {base_url or https://api.twilio.com}/2010-04-01/Accounts/<sid>/Messages.json
 * with HTTP basic auth <account_sid>:<auth_token>.  A config "from" that is a
 * Messaging Service SID (MG...) is sent as MessagingServiceSid instead.
 * Twilio answers 201 with a Message resource ("sid": "SM...") or an error
 * {"code", "message", "more_info", "status"} whose code refines the outcome.
 */
#include "postgres.h"

#include "jsonb_util.h"
#include "provider.h"

/* How long a From number whose queue is full (error 21611) is left to drain. */
#define TWILIO_QUEUE_FULL_WAIT_MS 60000

/* Builds the Messages.json POST. */
static void
twilio_build(const DeliveryJob *job, ProviderRequest *req)
{
	char	   *sid = provider_config_required(job, "account_sid");
	char	   *from = provider_config_required(job, "from");

	if (job->recipient == NULL || job->recipient[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("sms delivery has no phone number"),
				 errdetail("recipient: twilio needs an E.164 phone number")));
	if (strspn(sid, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789") != strlen(sid))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid twilio account sid"),
				 errdetail("config.account_sid: expected letters and digits (AC...)")));

	req->url = provider_url(job, "https://api.twilio.com",
							psprintf("/2010-04-01/Accounts/%s/Messages.json", sid));
	req->username = sid;
	req->password = provider_config_required(job, "auth_token");
	provider_add_header(req, "Content-Type", "application/x-www-form-urlencoded");
	provider_form_add(&req->body, "To", job->recipient);
	if (strncmp(from, "MG", 2) == 0 && strlen(from) == 34)
		provider_form_add(&req->body, "MessagingServiceSid", from);
	else
		provider_form_add(&req->body, "From", from);
	provider_form_add(&req->body, "Body", provider_content_string(job, "text"));
}

/*
 * Sent with the message sid; Twilio error codes refine the HTTP status:
 * a bad, non-mobile or unsubscribed To is the recipient's fault, 20429 is
 * throttling, and 20003 (authentication) is permanent.
 */
static void
twilio_classify(const DeliveryJob *job, const ProviderRequest *req,
				const ProviderResponse *resp, ProviderResult *res)
{
	Jsonb	   *json;
	Jsonb	   *code_json;
	char	   *code;
	char	   *message;

	json = provider_classify_json(resp, res, "sid");
	if (resp->curl_code != 0 || res->outcome == OUTCOME_SENT)
		return;
	code_json = jsonb_get_jsonb(json, "code");
	if (code_json == NULL)
		return;
	code = jsonb_scalar_text(code_json);
	message = jsonb_get_string(json, "message");
	res->error = psprintf("twilio error %s: %s", code, message ? message : "(no message)");
	if (strcmp(code, "21211") == 0 || strcmp(code, "21614") == 0)
		res->outcome = OUTCOME_INVALID_RECIPIENT;
	/* the recipient replied STOP: no other provider either, and START undoes it */
	else if (strcmp(code, "21610") == 0)
		res->outcome = OUTCOME_REJECTED;
	else if (strcmp(code, "20429") == 0)
		res->outcome = OUTCOME_RETRY;
	/* the From number's queue is full (HTTP 400): a throughput limit, not a refusal */
	else if (strcmp(code, "21611") == 0)
	{
		res->outcome = OUTCOME_RETRY;
		res->retry_after_ms = Max(res->retry_after_ms, TWILIO_QUEUE_FULL_WAIT_MS);
	}
	else if (strcmp(code, "20003") == 0)
		res->outcome = OUTCOME_PERMANENT;
}

const ProviderAdapter provider_twilio = {"twilio", "sms", twilio_build, twilio_classify};
