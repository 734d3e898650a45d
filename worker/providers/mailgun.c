/*
 * mailgun.c — the Mailgun Messages API adapter.
 *
 * POSTs {base_url | https://api.mailgun.net}/v3/<domain>/messages with basic
 * auth api:<api_key> and an application/x-www-form-urlencoded body: from (as
 * configured, display name included), to, subject, text, html and the user
 * variable v:notiflow_delivery_id, which Mailgun echoes in its event webhooks.
 * Mailgun answers 200 {"id": "<...@domain>", "message": "Queued. Thank you."};
 * errors are {"message"} (401: the text "Forbidden").
 */
#include "postgres.h"

#include "utils/jsonb.h"

#include "jsonb_util.h"
#include "provider.h"


/* Returns the sending domain; raises an error unless it is a plain host name (it goes into the path). */
static char *
mailgun_domain(const DeliveryJob *job)
{
	char	   *domain = provider_config_required(job, "domain");

	if (strspn(domain, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-") != strlen(domain))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid mailgun domain \"%s\"", domain),
				 errdetail("config.domain: expected a domain name such as mg.example.com")));
	return domain;
}

/* Builds the Messages request. */
static void
mailgun_build(const DeliveryJob *job, ProviderRequest *req)
{
	char	   *api_key = provider_config_required(job, "api_key");
	char	   *domain = mailgun_domain(job);
	EmailParts	m;

	provider_email_read(job, &m);

	req->url = provider_url(job, "https://api.mailgun.net", psprintf("/v3/%s/messages", domain));
	req->username = pstrdup("api");
	req->password = api_key;
	provider_add_header(req, "Content-Type", "application/x-www-form-urlencoded");
	provider_form_add(&req->body, "from", m.from);
	provider_form_add(&req->body, "to", m.to);
	provider_form_add(&req->body, "subject", m.subject);
	if (m.text != NULL)
		provider_form_add(&req->body, "text", m.text);
	if (m.html != NULL)
		provider_form_add(&req->body, "html", m.html);
	provider_form_add(&req->body, "v:notiflow_delivery_id", psprintf(INT64_FORMAT, job->delivery_id));
}

/* Returns the id of an accepted message without its angle brackets, as Mailgun's events show it. */
static char *
mailgun_message_id(const ProviderResponse *resp)
{
	char	   *id = jsonb_get_string(provider_response_json(resp), "id");
	size_t		len;

	if (id == NULL)
		return NULL;
	len = strlen(id);
	if (len >= 2 && id[0] == '<' && id[len - 1] == '>')
		return pnstrdup(id + 1, len - 2);
	return id;
}

/* Tells whether a 400 answer says the to address is not valid. */
static bool
mailgun_recipient_refused(const ProviderResponse *resp)
{
	char	   *message = jsonb_get_string(provider_response_json(resp), "message");

	if (message == NULL || strstr(message, "not a valid address") == NULL)
		return false;
	return strncmp(message, "to ", 3) == 0 || strncmp(message, "'to' ", 5) == 0;
}

/* Sent: the id from the body; a refused to address is the recipient's fault. */
static void
mailgun_classify(const DeliveryJob *job, const ProviderRequest *req,
				const ProviderResponse *resp, ProviderResult *res)
{
	provider_classify_http(resp, res);
	if (res->outcome == OUTCOME_SENT)
		res->message_id = mailgun_message_id(resp);
	else if (resp->curl_code == 0 && resp->status == 400 && mailgun_recipient_refused(resp))
		res->outcome = OUTCOME_INVALID_RECIPIENT;
}

const ProviderAdapter provider_mailgun = {"mailgun", "email", mailgun_build, mailgun_classify};
