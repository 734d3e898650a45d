/*
 * vonage.c — the Vonage (Nexmo) SMS provider: POSTs a form with the
 * credentials in it,
 *   {base_url or https://rest.nexmo.com}/sms/json
 *   api_key, api_secret, from, to (E.164 digits without "+"), text
 * and type=unicode when the text is not plain ASCII.  Vonage answers HTTP 200
 * even for most failures; each message part carries its own "status" ("0"
 * sent, "1" throttled, ...) and "error-text".
 */
#include "postgres.h"

#include "utils/formatting.h"

#include "jsonb_util.h"
#include "provider.h"

/* Writes the form: credentials in the body, as the SMS API wants them. */
static void
vonage_form(StringInfo out, const DeliveryJob *job, const char *secret, const char *text, bool ascii)
{
	provider_form_add(out, "api_key", provider_config_required(job, "api_key"));
	provider_form_add(out, "api_secret", secret);
	provider_form_add(out, "from", provider_config_required(job, "from"));
	provider_form_add(out, "to", job->recipient + (job->recipient[0] == '+' ? 1 : 0));
	provider_form_add(out, "text", text);
	if (!ascii)
		provider_form_add(out, "type", "unicode");
}

/* Builds the /sms/json POST; logs and dead letters keep a copy without the secret. */
static void
vonage_build(const DeliveryJob *job, ProviderRequest *req)
{
	char	   *text = provider_content_string(job, "text");
	bool		ascii = true;
	StringInfoData logged;

	if (job->recipient == NULL || job->recipient[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("sms delivery has no phone number"),
				 errdetail("recipient: vonage needs an E.164 phone number")));
	for (const unsigned char *p = (const unsigned char *) text; *p; p++)
		if (*p >= 0x80)
			ascii = false;

	req->url = provider_url(job, "https://rest.nexmo.com", "/sms/json");
	provider_add_header(req, "Content-Type", "application/x-www-form-urlencoded");
	vonage_form(&req->body, job, provider_config_required(job, "api_secret"), text, ascii);
	initStringInfo(&logged);
	vonage_form(&logged, job, "********", text, ascii);
	req->log_body = logged.data;
}

/*
 * Tells whether a Vonage error-text of status 3 (invalid parameters) is about
 * the "to" parameter, not another one (a bad "from" is the configuration's).
 */
static bool
error_is_about_number(const char *text)
{
	static const char *const words[] = {"to param", "to address", "invalid to", "to number"};
	char	   *lower = asc_tolower(text, strlen(text));

	for (int i = 0; i < (int) lengthof(words); i++)
		if (strstr(lower, words[i]) != NULL)
			return true;
	return false;
}

/* Sets the outcome of a message part whose status is not "0". */
static void
vonage_classify_status(ProviderResult *res, const char *status, const char *text)
{
	if (text == NULL)
		text = "(no error-text)";
	res->error = psprintf("vonage status %s: %s", status, text);
	if (strcmp(status, "1") == 0 || strcmp(status, "5") == 0)
		res->outcome = OUTCOME_RETRY;
	/* barred (opted out, or blacklisted): no other provider either, as Twilio's STOP */
	else if (strcmp(status, "7") == 0)
		res->outcome = OUTCOME_REJECTED;
	else if (strcmp(status, "33") == 0 || (strcmp(status, "3") == 0 && error_is_about_number(text)))
		res->outcome = OUTCOME_INVALID_RECIPIENT;
	else
	{
		/* unroutable (6) can be the account's routes as much as the number: fall back, keep it */
		res->outcome = OUTCOME_PERMANENT;
		res->recipient_fault = strcmp(status, "6") == 0;
	}
}

/*
 * Classifies an HTTP 200 by its message parts (a long text goes as several):
 * sent (with the first part's message-id) when every status is "0", else by
 * the first failed part:
 *   1 throttled, 5 internal error: retry
 *   3 invalid parameters: the recipient's fault when the error-text is about
 *     the "to" parameter, else permanent
 *   6 invalid message (unroutable): permanent, falling back without marking
 *     the number (the account's routes can cause it too)
 *   7 number barred: rejected (opted out or blacklisted: no fallback)
 *   33 number de-activated: the recipient's fault
 *   anything else (2 missing parameters, 4 invalid credentials, ...): permanent
 * When some parts were accepted and others not, the delivery counts as sent,
 * with the failure in its error: sending again would repeat the accepted
 * parts to the recipient.
 */
static void
vonage_classify(const DeliveryJob *job, const ProviderRequest *req,
				const ProviderResponse *resp, ProviderResult *res)
{
	Jsonb	   *messages;
	int			n;

	provider_classify_http(resp, res);
	if (res->outcome != OUTCOME_SENT)
		return;
	messages = jsonb_get_jsonb(provider_response_json(resp), "messages");
	if (messages == NULL || !JB_ROOT_IS_ARRAY(messages) || (n = JB_ROOT_COUNT(messages)) == 0)
	{
		res->outcome = OUTCOME_PERMANENT;
		res->error = psprintf("vonage: unexpected answer: %s", provider_response_excerpt(resp, 200));
		return;
	}
	{
		Jsonb	   *accepted = NULL;	/* the first part accepted */
		Jsonb	   *failed = NULL;	/* the first part refused, and its status */
		const char *failed_code = NULL;
		int			n_failed = 0;

		for (int i = 0; i < n; i++)
		{
			Jsonb	   *part = JsonbValueToJsonb(getIthJsonbValueFromContainer(&messages->root, i));
			Jsonb	   *status = jsonb_get_jsonb(part, "status");
			const char *code = status ? jsonb_scalar_text(status) : "(none)";

			if (strcmp(code, "0") == 0)
			{
				if (accepted == NULL)
					accepted = part;
			}
			else if (n_failed++ == 0)
			{
				failed = part;
				failed_code = code;
			}
		}
		if (failed == NULL)
			res->message_id = jsonb_get_string(accepted, "message-id");
		else if (accepted == NULL)
			vonage_classify_status(res, failed_code, jsonb_get_string(failed, "error-text"));
		else
		{
			char	   *text = jsonb_get_string(failed, "error-text");

			res->message_id = jsonb_get_string(accepted, "message-id");
			res->error = psprintf("vonage: %d of %d parts not accepted (status %s: %s); not sent again, "
								  "which would repeat the parts accepted",
								  n_failed, n, failed_code, text ? text : "(no error-text)");
		}
	}
}

const ProviderAdapter provider_vonage = {"vonage", "sms", vonage_build, vonage_classify};
