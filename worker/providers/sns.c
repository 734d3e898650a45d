/*
 * sns.c — the Amazon SNS SMS provider: a Publish call of the query API,
 *   POST {base_url or https://sns.<region>.amazonaws.com}/
 *   Action=Publish&Version=2010-03-31&PhoneNumber=...&Message=...
 * marked as a Transactional SMS and signed with SigV4 by libcurl (service
 * sns).  SNS answers XML: <PublishResponse> with <MessageId>, or
 * <ErrorResponse> with <Code> and <Message>; one element is found by plain
 * string search, so no XML library is needed.
 */
#include "postgres.h"

#include "provider.h"

/* Builds the signed Publish request. */
static void
sns_build(const DeliveryJob *job, ProviderRequest *req)
{
	char	   *region = provider_config_required(job, "region");

	if (job->recipient == NULL || job->recipient[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("sms delivery has no phone number"),
				 errdetail("recipient: sns needs an E.164 phone number")));
	if (strspn(region, "abcdefghijklmnopqrstuvwxyz0123456789-") != strlen(region))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid aws region \"%s\"", region),
				 errdetail("config.region: expected a region name like us-east-1")));

	req->url = provider_url(job, psprintf("https://sns.%s.amazonaws.com", region), "/");
	req->aws_sigv4 = psprintf("aws:amz:%s:sns", region);
	req->username = provider_config_required(job, "access_key_id");
	req->password = provider_config_required(job, "secret_access_key");
	provider_add_header(req, "Content-Type", "application/x-www-form-urlencoded");
	provider_form_add(&req->body, "Action", "Publish");
	provider_form_add(&req->body, "Version", "2010-03-31");
	provider_form_add(&req->body, "PhoneNumber", job->recipient);
	provider_form_add(&req->body, "Message", provider_content_string(job, "text"));
	provider_form_add(&req->body, "MessageAttributes.entry.1.Name", "AWS.SNS.SMS.SMSType");
	provider_form_add(&req->body, "MessageAttributes.entry.1.Value.DataType", "String");
	provider_form_add(&req->body, "MessageAttributes.entry.1.Value.StringValue", "Transactional");
}

/* Returns the text of the first <name>...</name> in the body, or NULL. */
static char *
xml_element(const ProviderResponse *resp, const char *name)
{
	char	   *open = psprintf("<%s>", name);
	char	   *close = psprintf("</%s>", name);
	const char *start;
	const char *end;

	if (resp->body.data == NULL || (start = strstr(resp->body.data, open)) == NULL)
		return NULL;
	start += strlen(open);
	if ((end = strstr(start, close)) == NULL)
		return NULL;
	return provider_text(start, end - start);
}

/*
 * Sent with the MessageId; the error Code refines the HTTP status: throttling
 * (HTTP 400 or 429) is retried, and an InvalidParameter naming PhoneNumber is
 * permanent without counting against the provider (below).
 */
static void
sns_classify(const DeliveryJob *job, const ProviderRequest *req,
				const ProviderResponse *resp, ProviderResult *res)
{
	char	   *code;
	char	   *message;

	provider_classify_http(resp, res);
	if (resp->curl_code != 0)
		return;
	if (res->outcome == OUTCOME_SENT)
	{
		res->message_id = xml_element(resp, "MessageId");
		return;
	}
	code = xml_element(resp, "Code");
	if (code == NULL)
		return;
	message = xml_element(resp, "Message");
	res->error = psprintf("sns error %s: %s", code, message ? message : "(no message)");
	if (strcmp(code, "Throttling") == 0 || strcmp(code, "ThrottledException") == 0)
		res->outcome = OUTCOME_RETRY;
	/*
	 * InvalidParameter naming PhoneNumber is also the answer of a region that
	 * does not send SMS: not an invalid number, but a permanent failure that
	 * falls back, and that a bad number does not count against the provider.
	 */
	else if (strcmp(code, "InvalidParameter") == 0 && message != NULL &&
			 strstr(message, "PhoneNumber") != NULL)
		res->recipient_fault = true;
}

const ProviderAdapter provider_sns = {"sns", "sms", sns_build, sns_classify};
