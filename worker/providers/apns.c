/*
 * apns.c — the Apple Push Notification service adapter (HTTP/2 provider API,
 * token-based authentication).
 *
 * POSTs {base_url | https://api.push.apple.com (environment production, the
 * default) | https://api.sandbox.push.apple.com (sandbox)}/3/device/<token>
 * with "authorization: bearer <provider token>", apns-topic (the bundle id),
 * apns-push-type: alert, and apns-priority / apns-expiration when config
 * priority / ttl are set.  The body is {"aps": {"alert": {"title", "body"}}}
 * with the content's data keys beside "aps".  The provider token is an ES256
 * JWT {iss: team_id, iat} with kid key_id, signed with the .p8 key; Apple
 * accepts one for an hour and refuses refreshing more often than every 20
 * minutes, so this process caches it per provider for 50 minutes.
 * http.c negotiates HTTP/2 over TLS, which APNs requires.
 *
 * APNs answers 200 with the apns-id header, or an error status with
 * {"reason": "..."}.
 */
#include "postgres.h"

#include <time.h>

#include "utils/jsonb.h"

#include "jsonb_util.h"
#include "provider.h"
#include "push_crypto.h"

#define APNS_TOKEN_LIFETIME_S (50 * 60)

/*
 * Returns the cache key of a provider's token: team and key ids, and a
 * digest of the key (a key replaced under the same id is used at once, not
 * after the old token's 50 minutes).  Not the provider's name: providers of
 * several apps (one topic each) that share a key share its token.  Their
 * requests share the dispatcher's HTTP/2 connection to Apple, which takes
 * one token per connection and answers 429 TooManyProviderTokenUpdates when
 * it changes more often than every 20 minutes.
 */
static char *
apns_token_key(const DeliveryJob *job)
{
	char	   *team_id = provider_config_string(job, "team_id");
	char	   *key_id = provider_config_string(job, "key_id");
	char	   *private_key = provider_config_string(job, "private_key");

	return psprintf("apns\n%s\n%s\n%s", team_id ? team_id : "", key_id ? key_id : "",
					push_secret_digest(private_key ? private_key : ""));
}

/* Returns the cached provider token, or signs and caches a new one. */
static char *
apns_provider_token(const DeliveryJob *job)
{
	char	   *key = apns_token_key(job);
	char	   *token = push_token_get(key, 0);
	int64		now = (int64) time(NULL);
	const char *keys[] = {"iss", "iat"};
	Jsonb	   *values[2];

	if (token != NULL)
		return token;
	values[0] = jsonb_make_string(provider_config_required(job, "team_id"));
	values[1] = jsonb_make_int(now);
	token = push_jwt_sign("ES256", provider_config_required(job, "private_key"), "config.private_key",
						  provider_config_required(job, "key_id"), jsonb_make_object(2, keys, values));
	push_token_put(key, token, now + APNS_TOKEN_LIFETIME_S);
	return token;
}

/* Returns the text of a numeric config value, or NULL when absent or not a number. */
static char *
apns_config_number(const DeliveryJob *job, const char *key)
{
	JsonbValue *v = jsonb_get(job->config, key);

	if (v == NULL || v->type != jbvNumeric)
		return NULL;
	return jsonb_scalar_text(JsonbValueToJsonb(v));
}

/* Builds the POST to /3/device/<token>. */
static void
apns_build(const DeliveryJob *job, ProviderRequest *req)
{
	char	   *topic = provider_config_required(job, "topic");
	char	   *environment = provider_config_string(job, "environment");
	char	   *priority = apns_config_number(job, "priority");
	char	   *ttl = apns_config_number(job, "ttl");
	const char *token = job->recipient;
	const char *alert_keys[] = {"title", "body"};
	Jsonb	   *alert_values[2];
	Jsonb	   *aps;
	Jsonb	   *data = jsonb_get_jsonb(job->content, "data");
	Jsonb	   *body;

	if (token == NULL || token[0] == '\0' ||
		strspn(token, "0123456789abcdefABCDEF") != strlen(token))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("apns device token is not hexadecimal"),
				 errdetail("recipient: expected the device token as hex digits")));
	if (environment != NULL && strcmp(environment, "production") != 0 && strcmp(environment, "sandbox") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid provider config value"),
				 errdetail("config.environment: expected production or sandbox")));

	alert_values[0] = jsonb_make_string(provider_content_string(job, "title"));
	alert_values[1] = jsonb_make_string(provider_content_string(job, "body"));
	aps = jsonb_with_key(NULL, "alert", jsonb_make_object(2, alert_keys, alert_values));
	body = jsonb_with_key(data != NULL && JB_ROOT_IS_OBJECT(data) ? data : NULL, "aps", aps);

	req->url = provider_url(job,
							environment != NULL && strcmp(environment, "sandbox") == 0
							? "https://api.sandbox.push.apple.com" : "https://api.push.apple.com",
							psprintf("/3/device/%s", token));
	provider_add_header(req, "authorization", psprintf("bearer %s", apns_provider_token(job)));
	provider_add_header(req, "apns-topic", topic);
	provider_add_header(req, "apns-push-type", "alert");
	if (priority != NULL)
		provider_add_header(req, "apns-priority", priority);
	if (ttl != NULL)
	{
		/* seconds from now, at most a year (a huge value would overflow the cast) */
		double		seconds = strtod(ttl, NULL);

		seconds = seconds > 0 ? Min(seconds, 365.0 * SECS_PER_DAY) : 0;
		provider_add_header(req, "apns-expiration",
							strcmp(ttl, "0") == 0 ? "0"
							: psprintf(INT64_FORMAT, (int64) time(NULL) + (int64) seconds));
	}
	provider_add_header(req, "content-type", "application/json");
	appendStringInfoString(&req->body, JsonbToCString(NULL, &body->root, VARSIZE(body)));
}

/*
 * 200 is sent (apns-id); 410 Unregistered is the device's fault, 400
 * BadDeviceToken permanent (below); 403 ExpiredProviderToken sends again
 * with a new token; 429 and 5xx retry; other errors are permanent.
 */
static void
apns_classify(const DeliveryJob *job, const ProviderRequest *req,
			  const ProviderResponse *resp, ProviderResult *res)
{
	char	   *reason;
	const char *used = provider_request_bearer(req);

	provider_classify_http(resp, res);
	if (res->outcome == OUTCOME_SENT)
	{
		res->message_id = provider_response_header(resp, "apns-id");
		push_token_accepted(used);
		return;
	}
	if (resp->curl_code != 0)
		return;
	reason = jsonb_get_string(provider_response_json(resp), "reason");
	if (reason != NULL)
		res->error = psprintf("HTTP %ld %s", resp->status, reason);
	/*
	 * 410 Unregistered: the token is gone for good.  400 BadDeviceToken is
	 * also the answer to a token of the other environment (sandbox or
	 * production): a provider configured for the wrong one would mark every
	 * device invalid.  It is permanent, so a sandbox provider after a
	 * production one gets the token, and not the provider's failure.
	 * DeviceTokenNotForTopic (a token of another app, or a topic that is
	 * not this app's) is the same kind of answer.
	 */
	if (resp->status == 410)
		res->outcome = OUTCOME_INVALID_RECIPIENT;
	else if (resp->status == 400 && reason != NULL &&
			 (strcmp(reason, "BadDeviceToken") == 0 || strcmp(reason, "DeviceTokenNotForTopic") == 0))
		res->recipient_fault = true;
	else if (resp->status == 403 && reason != NULL && strcmp(reason, "ExpiredProviderToken") == 0)
	{
		/*
		 * A token Apple took before has aged out (clock skew): a new one, and
		 * send again now, not the provider's failure.  A token never taken
		 * is refused for the key: a counted attempt.
		 */
		res->outcome = push_token_refused(apns_token_key(job), used) ? OUTCOME_AGAIN : OUTCOME_RETRY;
	}
}

const ProviderAdapter provider_apns = {"apns", "push", apns_build, apns_classify};
