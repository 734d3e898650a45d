/*
 * ses.c — the Amazon SES v2 SendEmail adapter.
 *
 * POSTs {base_url | https://email.<region>.amazonaws.com}/v2/email/outbound-emails
 * with a JSON body built with the jsonb API (a Simple message, UTF-8, and the
 * tag notiflow_delivery_id for SES event destinations).  The request is signed
 * by libcurl (SigV4, "aws:amz:<region>:ses") with the access key id and secret
 * as user name and password.  SES answers 200 {"MessageId"}; errors are
 * {"message"} with the error type in the x-amzn-ErrorType header.
 */
#include "postgres.h"

#include "utils/fmgrprotos.h"
#include "utils/jsonb.h"

#include "jsonb_util.h"
#include "provider.h"


/* Returns the region; raises an error unless it looks like one (it goes into the host and the signing scope). */
static char *
ses_region(const DeliveryJob *job)
{
	char	   *region = provider_config_required(job, "region");

	if (strspn(region, "abcdefghijklmnopqrstuvwxyz0123456789-") != strlen(region))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid AWS region \"%s\"", region),
				 errdetail("config.region: expected a region such as eu-west-1")));
	return region;
}

/* Returns the SES content {"Data": data, "Charset": "UTF-8"}. */
static Jsonb *
ses_content(const char *data)
{
	return jsonb_make_object(2, (const char *[]) {"Data", "Charset"},
							 (Jsonb *[]) {jsonb_make_string(data), jsonb_make_string("UTF-8")});
}

/* Builds the SendEmail request. */
static void
ses_build(const DeliveryJob *job, ProviderRequest *req)
{
	char	   *access_key_id = provider_config_required(job, "access_key_id");
	char	   *secret = provider_config_required(job, "secret_access_key");
	char	   *region = ses_region(job);
	EmailParts	m;
	Jsonb	   *mail_body = NULL;
	Jsonb	   *simple;
	Jsonb	   *destination;
	Jsonb	   *tag;
	Jsonb	   *tags;
	Jsonb	   *body;

	provider_email_read(job, &m);

	if (m.text != NULL)
		mail_body = jsonb_with_key(mail_body, "Text", ses_content(m.text));
	if (m.html != NULL)
		mail_body = jsonb_with_key(mail_body, "Html", ses_content(m.html));
	simple = jsonb_make_object(2, (const char *[]) {"Subject", "Body"},
							   (Jsonb *[]) {ses_content(m.subject), mail_body});
	destination = jsonb_with_key(NULL, "ToAddresses", jsonb_make_string_array(list_make1(m.to)));
	tag = jsonb_make_object(2, (const char *[]) {"Name", "Value"},
							(Jsonb *[]) {jsonb_make_string("notiflow_delivery_id"),
							jsonb_make_string(psprintf(INT64_FORMAT, job->delivery_id))});
	tags = DatumGetJsonbP(DirectFunctionCall2(jsonb_concat,
											  JsonbPGetDatum(jsonb_make_string_array(NIL)),
											  JsonbPGetDatum(tag)));
	body = jsonb_make_object(4,
							 (const char *[]) {"FromEmailAddress", "Destination", "Content", "EmailTags"},
							 (Jsonb *[]) {jsonb_make_string(email_from_header(&m)), destination,
							 jsonb_with_key(NULL, "Simple", simple), tags});

	req->url = provider_url(job, psprintf("https://email.%s.amazonaws.com", region),
							"/v2/email/outbound-emails");
	req->aws_sigv4 = psprintf("aws:amz:%s:ses", region);
	req->username = access_key_id;
	req->password = secret;
	provider_add_header(req, "Content-Type", "application/json");
	appendStringInfoString(&req->body, JsonbToCString(NULL, &body->root, VARSIZE(body)));
}

/* Returns the error type of an answer: x-amzn-ErrorType up to any ':', or NULL. */
static char *
ses_error_type(const ProviderResponse *resp)
{
	char	   *type = provider_response_header(resp, "x-amzn-errortype");

	if (type != NULL)
		type[strcspn(type, ":")] = '\0';
	return type;
}

/*
 * Sent: the MessageId.  Throttling is retried; an illegal destination address
 * is the recipient's fault; other errors follow the common rules (4xx,
 * MessageRejected and MailFromDomainNotVerifiedException among them, are
 * permanent).
 */
static void
ses_classify(const DeliveryJob *job, const ProviderRequest *req,
				const ProviderResponse *resp, ProviderResult *res)
{
	char	   *type;
	char	   *message;

	provider_classify_http(resp, res);
	if (res->outcome == OUTCOME_SENT)
	{
		res->message_id = jsonb_get_string(provider_response_json(resp), "MessageId");
		return;
	}
	type = ses_error_type(resp);
	if (resp->curl_code != 0 || type == NULL)
		return;
	message = jsonb_get_string(provider_response_json(resp), "message");
	res->error = psprintf("%s: %s", type, message ? message : provider_response_excerpt(resp, 200));
	if (strcmp(type, "TooManyRequestsException") == 0 || strcmp(type, "ThrottlingException") == 0 ||
		strcmp(type, "Throttling") == 0)
		res->outcome = OUTCOME_RETRY;
	/* a refusal that names the destination; "Illegal address" may be the sender's */
	else if (strcmp(type, "BadRequestException") == 0 && message != NULL &&
			 strstr(message, "Destination") != NULL)
		res->outcome = OUTCOME_INVALID_RECIPIENT;
	else if (strcmp(type, "BadRequestException") == 0 && message != NULL &&
			 strstr(message, "Illegal address") != NULL)
		res->recipient_fault = true;	/* permanent: falls back, not the provider's failure */
}

const ProviderAdapter provider_ses = {"ses", "email", ses_build, ses_classify};
