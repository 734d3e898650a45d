/*
 * webpush.c — the Web Push adapter (RFC 8030 delivery, RFC 8291 message
 * encryption, RFC 8292 VAPID).
 *
 * The recipient is the browser's subscription {"endpoint", "keys": {"p256dh",
 * "auth"}} as JSON text.  The payload {"title", "body", "data"} is encrypted
 * for it (aes128gcm, push_crypto.c) and POSTed to the endpoint — a URL that
 * comes from data, so private addresses are refused — with Content-Encoding:
 * aes128gcm, TTL (config ttl, default 86400), Urgency and Topic when
 * configured, and "Authorization: vapid t=<JWT>, k=<vapid_public_key>".  The
 * VAPID JWT {aud: the endpoint's origin, exp: now + 12 h, sub: subject} is
 * signed ES256 with vapid_private_key and reused by this process for an hour
 * per origin.  The body is binary; logs keep only its size.
 *
 * Push services answer 201 Created with a Location header (the message); 404
 * or 410 mean the subscription is gone; 413 the payload is too large; 429
 * asks to slow down.
 */
#include "postgres.h"

#include <time.h>

#include "utils/fmgrprotos.h"
#include "utils/jsonb.h"

#include "jsonb_util.h"
#include "provider.h"
#include "push_crypto.h"
#include "safe_input.h"

#define WEBPUSH_MAX_BODY 4096		/* the body size every push service accepts (RFC 8030) */
#define WEBPUSH_JWT_LIFETIME_S (12 * 3600)
#define WEBPUSH_JWT_REUSE_S 3600

static void webpush_bad_subscription(const char *field, const char *expected) pg_attribute_noreturn();

/* Raises the error of a recipient that is not a usable subscription. */
static void
webpush_bad_subscription(const char *field, const char *expected)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("web push recipient is not a subscription"),
			 errdetail("%s: expected %s", field, expected),
			 errhint("Store the browser's PushSubscription as {\"endpoint\": \"https://...\", \"keys\": {\"p256dh\": \"...\", \"auth\": \"...\"}}.")));
}

/*
 * Returns the origin of an http(s) URL (RFC 6454): lower-case scheme and
 * host, and the port unless it is the scheme's default.
 */
static char *
webpush_origin(const char *url)
{
	const char *rest = strstr(url, "://") + 3;
	size_t		authority_len = strcspn(rest, "/?#");
	char	   *scheme = pnstrdup(url, rest - 3 - url);
	char	   *authority = pnstrdup(rest, authority_len);
	char	   *at = strrchr(authority, '@');
	char	   *host = at ? at + 1 : authority;
	char	   *port = strrchr(host, ':');

	if (port != NULL && strchr(port, ']') == NULL &&
		((pg_strcasecmp(scheme, "https") == 0 && strcmp(port, ":443") == 0) ||
		 (pg_strcasecmp(scheme, "http") == 0 && strcmp(port, ":80") == 0)))
		*port = '\0';
	for (char *p = scheme; *p; p++)
		*p = pg_tolower((unsigned char) *p);
	for (char *p = host; *p; p++)
		*p = pg_tolower((unsigned char) *p);
	return psprintf("%s://%s", scheme, host);
}

/* Returns the VAPID JWT for an origin: cached, or signed now and cached. */
static char *
webpush_vapid_jwt(const DeliveryJob *job, const char *origin)
{
	char	   *public_key = provider_config_required(job, "vapid_public_key");
	/* the private key's digest and the subject too: a changed config is used at once */
	char	   *key = psprintf("webpush\n%s\n%s\n%s\n%s\n%s", job->provider ? job->provider : "", public_key,
							   push_secret_digest(provider_config_required(job, "vapid_private_key")),
							   provider_config_required(job, "subject"), origin);
	char	   *jwt = push_token_get(key, WEBPUSH_JWT_LIFETIME_S - WEBPUSH_JWT_REUSE_S);
	int64		now = (int64) time(NULL);
	const char *keys[] = {"aud", "exp", "sub"};
	Jsonb	   *values[3];

	if (jwt != NULL)
		return jwt;
	values[0] = jsonb_make_string(origin);
	values[1] = jsonb_make_int(now + WEBPUSH_JWT_LIFETIME_S);
	values[2] = jsonb_make_string(provider_config_required(job, "subject"));
	jwt = push_jwt_sign("ES256", provider_config_required(job, "vapid_private_key"), "config.vapid_private_key",
						NULL,
						jsonb_make_object(3, keys, values));
	push_token_put(key, jwt, now + WEBPUSH_JWT_LIFETIME_S);
	return jwt;
}

/* Encrypts the payload for the subscription and builds the POST to its endpoint. */
static void
webpush_build(const DeliveryJob *job, ProviderRequest *req)
{
	char	   *public_key = provider_config_required(job, "vapid_public_key");
	JsonbValue *ttl = jsonb_get(job->config, "ttl");
	char	   *urgency = provider_config_string(job, "urgency");
	char	   *topic = provider_config_string(job, "topic");
	const char *payload_keys[] = {"title", "body", "data"};
	Jsonb	   *payload_values[3];
	Jsonb	   *payload;
	char	   *payload_text;
	Datum		parsed;
	char	   *parse_error;
	Jsonb	   *subscription;
	Jsonb	   *keys;
	char	   *endpoint;
	char	   *p256dh;
	char	   *auth;

	if (job->recipient == NULL || !safe_input(jsonb_in, job->recipient, &parsed, &parse_error))
		webpush_bad_subscription("recipient", "the subscription as a JSON object");
	subscription = DatumGetJsonbP(parsed);
	endpoint = jsonb_get_string(subscription, "endpoint");
	keys = jsonb_get_jsonb(subscription, "keys");
	p256dh = jsonb_get_string(keys, "p256dh");
	auth = jsonb_get_string(keys, "auth");
	if (endpoint == NULL || !provider_is_http_url(endpoint))
		webpush_bad_subscription("recipient.endpoint", "an http(s) URL");
	if (p256dh == NULL || auth == NULL)
		webpush_bad_subscription("recipient.keys", "the strings p256dh and auth");

	payload_values[0] = jsonb_make_string(provider_content_string(job, "title"));
	payload_values[1] = jsonb_make_string(provider_content_string(job, "body"));
	payload_values[2] = jsonb_get_jsonb(job->content, "data");
	if (payload_values[2] == NULL)
		payload_values[2] = jsonb_make_empty_object();
	payload = jsonb_make_object(3, payload_keys, payload_values);
	payload_text = JsonbToCString(NULL, &payload->root, VARSIZE(payload));
	if (strlen(payload_text) + PUSH_WEBPUSH_OVERHEAD > WEBPUSH_MAX_BODY)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("web push payload too large"),
				 errdetail("content: %zu bytes of JSON; a web push message holds at most %d",
						   strlen(payload_text), WEBPUSH_MAX_BODY - PUSH_WEBPUSH_OVERHEAD),
				 errhint("Send less content in a push message.")));
	push_webpush_encrypt(payload_text, strlen(payload_text), p256dh, auth, NULL, NULL,
						 WEBPUSH_MAX_BODY, &req->body);

	req->url = endpoint;
	req->url_from_data = true;
	req->log_body = psprintf("aes128gcm %d bytes", req->body.len);
	provider_add_header(req, "Content-Encoding", "aes128gcm");
	provider_add_header(req, "Content-Type", "application/octet-stream");
	provider_add_header(req, "TTL", ttl != NULL && ttl->type == jbvNumeric
						? jsonb_scalar_text(JsonbValueToJsonb(ttl))
						: "86400");
	if (urgency != NULL)
		provider_add_header(req, "Urgency", urgency);
	if (topic != NULL)
		provider_add_header(req, "Topic", topic);
	/* k= is unpadded base64url (RFC 8292 as RFC 7515): the key is written again as such */
	{
		size_t		klen;
		unsigned char *k = push_base64url_decode(public_key, &klen);

		provider_add_header(req, "Authorization",
							psprintf("vapid t=%s, k=%s", webpush_vapid_jwt(job, webpush_origin(endpoint)),
									 k != NULL ? push_base64url_encode(k, klen) : public_key));
	}
}

/*
 * 200/201/202 are sent (Location is the message); 404 and 410 mean the
 * subscription is gone; 413 is permanent; 429 and 5xx retry after Retry-After.
 */
static void
webpush_classify(const DeliveryJob *job, const ProviderRequest *req,
				 const ProviderResponse *resp, ProviderResult *res)
{
	provider_classify_http(resp, res);
	if (res->outcome == OUTCOME_SENT)
		res->message_id = provider_response_header(resp, "location");
	else if (resp->curl_code == 0 && (resp->status == 404 || resp->status == 410))
	{
		res->outcome = OUTCOME_INVALID_RECIPIENT;
		res->error = psprintf("HTTP %ld: the subscription has expired or was removed: %s",
							  resp->status, provider_response_excerpt(resp, 200));
	}
}

const ProviderAdapter provider_webpush = {"webpush", "push", webpush_build, webpush_classify};
