/*
 * webhook.c — the generic webhook provider: POSTs the rendered JSON body to a
 * URL with an HMAC-SHA256 signature header
 *   X-Notiflow-Signature: t=<unix seconds>,v1=<hex HMAC(secret, "<t>.<body>")>
 * The URL is the node's rendered "url" (the delivery's recipient) or the
 * provider's configured "url".
 */
#include "postgres.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <time.h>

#include "utils/jsonb.h"

#include "jsonb_util.h"
#include "provider.h"

/* Builds the signed POST. */
static void
webhook_build(const DeliveryJob *job, ProviderRequest *req)
{
	char	   *secret = provider_config_string(job, "secret");
	Jsonb	   *body = jsonb_get_jsonb(job->content, "body");
	unsigned char mac[EVP_MAX_MD_SIZE];
	unsigned int mac_len = 0;
	StringInfoData signed_text;
	StringInfoData sig;
	long		now = (long) time(NULL);

	req->url = provider_recipient_url(job, req, "url");
	if (body == NULL)
		body = jsonb_make_empty_object();
	appendStringInfoString(&req->body, JsonbToCString(NULL, &body->root, VARSIZE(body)));

	initStringInfo(&signed_text);
	appendStringInfo(&signed_text, "%ld.%s", now, req->body.data);
	HMAC(EVP_sha256(), secret ? secret : "", secret ? (int) strlen(secret) : 0,
		 (const unsigned char *) signed_text.data, signed_text.len, mac, &mac_len);
	initStringInfo(&sig);
	appendStringInfo(&sig, "t=%ld,v1=", now);
	for (unsigned int i = 0; i < mac_len; i++)
		appendStringInfo(&sig, "%02x", mac[i]);

	provider_add_header(req, "Content-Type", "application/json");
	provider_add_header(req, "X-Notiflow-Signature", sig.data);
	provider_add_header(req, "X-Notiflow-Delivery", psprintf(INT64_FORMAT, job->delivery_id));
}

/* Any 2xx is sent; the common rules otherwise. */
static void
webhook_classify(const DeliveryJob *job, const ProviderRequest *req,
				const ProviderResponse *resp, ProviderResult *res)
{
	provider_classify_http(resp, res);
}

const ProviderAdapter provider_webhook = {"webhook", "webhook", webhook_build, webhook_classify};
