/*
 * smtp.c — the SMTP adapter.
 *
 * Unlike the HTTP adapters it builds no body: it fills the envelope and the
 * message parts of the request (url smtp:// or smtps://, STARTTLS, AUTH
 * credentials, MAIL FROM, RCPT TO, the From header, subject, text and html),
 * and the HTTP layer assembles the MIME message with curl_mime and sends it.
 * Classification reads the last SMTP reply code (ProviderResponse.status)
 * and the CURLcode: 2xx sent, 4xx retry, 550/551/553 to RCPT TO (with an
 * enhanced status code of class 5.1, when the reply has one) an invalid
 * recipient, other 5xx permanent, refused AUTH permanent, connection
 * failures retry.
 */
#include "postgres.h"

#include <curl/curl.h>

#include "utils/jsonb.h"

#include "jsonb_util.h"
#include "provider.h"


/* Returns config starttls (default false); raises an error when it is not a boolean. */
static bool
smtp_starttls(const DeliveryJob *job)
{
	JsonbValue *v = jsonb_get(job->config, "starttls");

	if (v == NULL)
		return false;
	if (v->type != jbvBool)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid provider config value"),
				 errdetail("config.starttls: expected true or false")));
	return v->val.boolean;
}

/* Returns an optional config string, or NULL when it is absent or empty. */
static char *
smtp_config_optional(const DeliveryJob *job, const char *key)
{
	char	   *v = provider_config_string(job, key);

	return (v != NULL && v[0] != '\0') ? v : NULL;
}

/* Fills the envelope and the message parts. */
static void
smtp_build(const DeliveryJob *job, ProviderRequest *req)
{
	char	   *url = provider_config_required(job, "url");
	EmailParts	m;

	if (pg_strncasecmp(url, "smtp://", 7) != 0 && pg_strncasecmp(url, "smtps://", 8) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid provider config value"),
				 errdetail("config.url: expected smtp://host:port or smtps://host:port")));
	provider_email_read(job, &m);

	req->smtp = true;
	req->url = url;
	req->smtp_starttls = smtp_starttls(job);
	req->username = smtp_config_optional(job, "username");
	req->password = smtp_config_optional(job, "password");
	req->smtp_from = m.from_address;
	req->smtp_from_header = email_from_header(&m);
	req->smtp_to = m.to;
	req->smtp_subject = m.subject;
	req->smtp_text = m.text;
	req->smtp_html = m.html;
}

/*
 * Tells whether a failed reply answered RCPT TO.  libcurl names the failed
 * command in its message ("RCPT failed: 550"; also "MAIL failed: 553",
 * "DATA failed: 554", "Remote access denied: 550" for EHLO/HELO, "Command
 * failed: 502") and reports a refusal of the message itself, after the data,
 * as CURLE_WEIRD_SERVER_REPLY.  Only RCPT TO is about the recipient: a relay
 * that refuses the HELO name, the sender or the message would otherwise
 * mark every address it is given invalid.
 */
static bool
smtp_reply_to_rcpt(const ProviderResponse *resp)
{
	return resp->curl_code != CURLE_WEIRD_SERVER_REPLY && resp->curl_error != NULL &&
		strncmp(resp->curl_error, "RCPT failed", 11) == 0;
}

/*
 * Whether a reply's text says it is about the sender ("Sender address
 * rejected"), outside the addresses it quotes in <...> (a recipient
 * "<sender-ops@example.com>" says nothing about the sender).
 */
static bool
names_sender(const char *text)
{
	StringInfoData plain;
	int			depth = 0;

	initStringInfo(&plain);
	for (const char *p = text; *p; p++)
	{
		if (*p == '<')
			depth++;
		else if (*p == '>' && depth > 0)
			depth--;
		else if (depth == 0)
			appendStringInfoChar(&plain, pg_ascii_tolower((unsigned char) *p));
	}
	return strstr(plain.data, "sender") != NULL;
}

/* What a refusal of RCPT TO says about the address (smtp_refusal). */
typedef enum SmtpRefusal
{
	REFUSAL_ADDRESS,			/* the mailbox or domain is bad: mark it */
	REFUSAL_UNSURE,				/* no enhanced status code: could be either */
	REFUSAL_PROVIDER			/* the sender, the relay, the client: not the address */
} SmtpRefusal;

/*
 * Tells whether a refusal of RCPT TO is the address's fault.  Servers refuse
 * more than bad mailboxes at RCPT TO: Postfix holds its client, sender and
 * relay refusals until then ("550 5.1.0 <from>: Sender address rejected"),
 * Exchange and Sendmail refuse relaying there ("550 5.7.1"), Exim says "550
 * relay not permitted" without an enhanced code, so the reply code alone
 * would mark good addresses invalid because of the provider's own
 * configuration.  The enhanced status code (RFC 3463) tells: 5.1.1 bad
 * mailbox, 5.1.2 bad domain, 5.1.3 bad syntax, 5.1.6 moved and 5.1.10 null
 * MX are about the address (unless the text names the sender); 5.1.0, 5.1.7
 * and 5.1.8 are about the sender's, and any other class is not the address's
 * either.  A reply without one is unsure.
 */
static SmtpRefusal
smtp_refusal(const ProviderResponse *resp)
{
	const char *text = resp->smtp_reply;
	char	   *end;
	long		detail;

	if (text == NULL || strlen(text) < 4 || atol(text) != resp->status)
		return REFUSAL_UNSURE;
	text += 4;					/* "550 " */
	if (text[0] != '5' || text[1] != '.' || !isdigit((unsigned char) text[2]) || text[3] != '.' ||
		!isdigit((unsigned char) text[4]))
		return REFUSAL_UNSURE;	/* no enhanced status code */
	if (text[2] != '1')
		return REFUSAL_PROVIDER;
	detail = strtol(text + 4, &end, 10);
	if (*end != ' ' && *end != '\0')
		return REFUSAL_UNSURE;
	if ((detail == 1 || detail == 2 || detail == 3 || detail == 6 || detail == 10) &&
		!names_sender(text))
		return REFUSAL_ADDRESS;
	return REFUSAL_PROVIDER;
}

/*
 * Classifies by SMTP reply code first, then by CURLcode: connection failures
 * (CURLE_COULDNT_CONNECT, CURLE_OPERATION_TIMEDOUT, CURLE_SEND_ERROR,
 * CURLE_RECV_ERROR, CURLE_GOT_NOTHING, ...) are retried as the common rules
 * say; refused credentials and TLS that cannot be set up are permanent.
 */
static void
smtp_classify(const DeliveryJob *job, const ProviderRequest *req,
				const ProviderResponse *resp, ProviderResult *res)
{
	long		code = resp->status;

	provider_classify_http(resp, res);
	if (resp->curl_code == CURLE_LOGIN_DENIED)
	{
		/* "454 4.7.0 Temporary authentication failure" passes; "535" does not */
		res->outcome = code >= 400 && code < 500 ? OUTCOME_RETRY : OUTCOME_PERMANENT;
		res->error = psprintf("SMTP authentication refused (reply %ld)", code);
	}
	else if (code >= 400 && code < 600)
	{
		res->error = psprintf("SMTP reply %ld: %s", code,
							  resp->smtp_reply && atol(resp->smtp_reply) == code ? resp->smtp_reply
							  : resp->curl_error ? resp->curl_error : "(no text)");
		if (code < 500)
			res->outcome = OUTCOME_RETRY;
		else if ((code == 550 || code == 551 || code == 553) && smtp_reply_to_rcpt(resp))
		{
			SmtpRefusal refusal = smtp_refusal(resp);

			if (refusal == REFUSAL_ADDRESS)
				res->outcome = OUTCOME_INVALID_RECIPIENT;
			else
			{
				/* unsure: the next provider may take it, the address is kept */
				res->outcome = OUTCOME_PERMANENT;
				res->recipient_fault = refusal == REFUSAL_UNSURE;
			}
		}
		else
			res->outcome = OUTCOME_PERMANENT;
	}
	else if (resp->curl_code == CURLE_PEER_FAILED_VERIFICATION || resp->curl_code == CURLE_USE_SSL_FAILED)
		res->outcome = OUTCOME_PERMANENT;
}

const ProviderAdapter provider_smtp = {"smtp", "email", smtp_build, smtp_classify};
