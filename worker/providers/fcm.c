/*
 * fcm.c — the Firebase Cloud Messaging HTTP v1 adapter.
 *
 * A send is POST {base_url | https://fcm.googleapis.com}/v1/projects/
 * {project_id}/messages:send with "Authorization: Bearer <access token>" and
 * {"message": {"token", "notification": {"title", "body"}, "data": {...}}}
 * (FCM wants every data value as a string).  FCM answers 200 {"name":
 * "projects/…/messages/…"} or {"error": {"code", "message", "status",
 * "details": [{"@type": "…FcmError", "errorCode"}, …]}}.
 *
 * The access token comes from the service account (config.service_account,
 * the JSON key file): an RS256 JWT {iss: client_email, scope, aud: token_uri,
 * iat, exp: iat + 1 h} posted as an OAuth 2.0 JWT bearer grant to token_uri.
 * build does no network I/O: when this process's cache (push_crypto.c, keyed
 * by provider name and client_email) has no token valid for more than a
 * minute, build returns the token request instead (purpose
 * FCM_TOKEN_REQUEST); its classify stores the token and answers
 * OUTCOME_AGAIN, so the dispatcher sends the delivery again at once, now with
 * the token.  While that request is in flight, the provider's other
 * deliveries are deferred (req->defer_ms) rather than fetching tokens of their
 * own.  A 401 from messages:send retires the token: the delivery is sent
 * again at once with a new one when FCM had taken that token before, and
 * counts as an attempt when it never had (the account is wrong).
 */
#include "postgres.h"

#include <math.h>
#include <time.h>

#include "miscadmin.h"
#include "utils/fmgrprotos.h"
#include "utils/jsonb.h"
#include "utils/jsonpath.h"

#include "jsonb_util.h"
#include "provider.h"
#include "push_crypto.h"

#define FCM_TOKEN_REQUEST 1		/* req->purpose of the OAuth token request */
#define FCM_SCOPE "https://www.googleapis.com/auth/firebase.messaging"
#define FCM_TOKEN_MIN_VALID_S 60
/* the longest lifetime an access token is kept for, whatever expires_in says */
#define FCM_TOKEN_MAX_LIFETIME_S 86400
/* what an OAuth 2 bearer token is made of (RFC 6750 b64token) */
#define FCM_TOKEN_CHARS "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/="
#define FCM_TOKEN_PENDING_S 30		/* how long one token request holds back the others, at least */
#define FCM_TOKEN_WAIT_MS 200		/* how often a held-back delivery looks again */

/* Returns a required string of the service account, or raises an error naming it. */
static char *
fcm_account_string(Jsonb *account, const char *key)
{
	char	   *v = jsonb_get_string(account, key);

	if (v == NULL || v[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("provider config for kind \"fcm\" is incomplete"),
				 errdetail("config.service_account.%s: required (a string)", key)));
	return v;
}

/* Returns the cache key of a provider's access token: provider name, client_email and the account's digest. */
static char *
fcm_token_key(const DeliveryJob *job)
{
	Jsonb	   *account = jsonb_get_jsonb(job->config, "service_account");
	char	   *email = jsonb_get_string(account, "client_email");

	/* with a digest of the whole account: a new key or token_uri is used at once */
	return psprintf("fcm\n%s\n%s\n%s", job->provider ? job->provider : "", email ? email : "",
					push_secret_digest(account ? JsonbToCString(NULL, &account->root, VARSIZE(account)) : ""));
}

/* Returns the cache key that marks this process's token request as in flight. */
static char *
fcm_pending_key(const DeliveryJob *job)
{
	return psprintf("%s\npending", fcm_token_key(job));
}

/* Fills the OAuth 2.0 JWT bearer token request of the service account. */
static void
fcm_build_token_request(const DeliveryJob *job, Jsonb *account, ProviderRequest *req)
{
	const char *keys[] = {"iss", "scope", "aud", "iat", "exp"};
	Jsonb	   *values[5];
	char	   *token_uri = fcm_account_string(account, "token_uri");
	int64		now = (int64) time(NULL);
	char	   *assertion;

	if (!provider_is_http_url(token_uri))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid provider config value"),
				 errdetail("config.service_account.token_uri: expected an http(s) URL")));
	values[0] = jsonb_make_string(fcm_account_string(account, "client_email"));
	values[1] = jsonb_make_string(FCM_SCOPE);
	values[2] = jsonb_make_string(token_uri);
	values[3] = jsonb_make_int(now);
	values[4] = jsonb_make_int(now + 3600);
	assertion = push_jwt_sign("RS256", fcm_account_string(account, "private_key"),
							  "config.service_account.private_key", jsonb_get_string(account, "private_key_id"),
							  jsonb_make_object(5, keys, values));

	req->purpose = FCM_TOKEN_REQUEST;
	req->url = token_uri;
	provider_add_header(req, "Content-Type", "application/x-www-form-urlencoded");
	provider_form_add(&req->body, "grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer");
	provider_form_add(&req->body, "assertion", assertion);
	req->log_body = pstrdup("grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=<signed JWT>");
}

/* Returns content.data with every value as a string (FCM's data is a map<string, string>). */
static Jsonb *
fcm_data(const DeliveryJob *job)
{
	Jsonb	   *data = jsonb_get_jsonb(job->content, "data");
	Jsonb	   *out = jsonb_make_empty_object();
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	char	   *key = NULL;

	if (data == NULL || !JB_ROOT_IS_OBJECT(data))
		return NULL;
	it = JsonbIteratorInit(&data->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (tok == WJB_KEY)
			key = pnstrdup(v.val.string.val, v.val.string.len);
		else if (tok == WJB_VALUE)
			out = jsonb_with_key(out, key, jsonb_make_string(jsonb_scalar_text(JsonbValueToJsonb(&v))));
	}
	return out;
}

/* Builds messages:send, or the token request when no access token is cached. */
static void
fcm_build(const DeliveryJob *job, ProviderRequest *req)
{
	JsonbValue *sa = jsonb_get(job->config, "service_account");
	Jsonb	   *account;
	char	   *project_id;
	char	   *access_token;
	char	   *title = provider_content_string(job, "title");
	char	   *text = provider_content_string(job, "body");
	Jsonb	   *message;
	Jsonb	   *data;
	Jsonb	   *body;

	if (sa == NULL || sa->type != jbvBinary || !JsonContainerIsObject(sa->val.binary.data))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid provider config value"),
				 errdetail("config.service_account: expected an object (the service account's JSON key file)")));
	account = jsonb_get_jsonb(job->config, "service_account");
	project_id = fcm_account_string(account, "project_id");
	if (strspn(project_id, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.:-") != strlen(project_id))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid provider config value"),
				 errdetail("config.service_account.project_id: expected a Google Cloud project id")));
	if (job->recipient == NULL || job->recipient[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("fcm delivery has no registration token"),
				 errdetail("recipient: required")));

	access_token = push_token_get(fcm_token_key(job), FCM_TOKEN_MIN_VALID_S);
	if (access_token == NULL)
	{
		/* one token request at a time: the other deliveries wait for its answer */
		if (push_token_get(fcm_pending_key(job), 0) != NULL)
			req->defer_ms = FCM_TOKEN_WAIT_MS;
		else
		{
			/* held as long as the request may take (timeout_ms), at least FCM_TOKEN_PENDING_S */
			int			timeout_s = jsonb_value_int_bounded(jsonb_get(job->config, "timeout_ms"), 10000, 1) / 1000;

			fcm_build_token_request(job, account, req);
			/* only a dispatcher sends it: a preview (provider_preview) holds nothing back */
			if (IsBackgroundWorker)
				push_token_put(fcm_pending_key(job), "", (int64) time(NULL) + Max(FCM_TOKEN_PENDING_S, timeout_s + 5));
		}
		return;
	}

	message = jsonb_with_key(NULL, "token", jsonb_make_string(job->recipient));
	if (title[0] != '\0' || text[0] != '\0')
	{
		Jsonb	   *notification = jsonb_make_empty_object();

		if (title[0] != '\0')
			notification = jsonb_with_key(notification, "title", jsonb_make_string(title));
		if (text[0] != '\0')
			notification = jsonb_with_key(notification, "body", jsonb_make_string(text));
		message = jsonb_with_key(message, "notification", notification);
	}
	data = fcm_data(job);
	if (data != NULL)
		message = jsonb_with_key(message, "data", data);
	body = jsonb_with_key(NULL, "message", message);

	req->url = provider_url(job, "https://fcm.googleapis.com",
							psprintf("/v1/projects/%s/messages:send", project_id));
	provider_add_header(req, "Authorization", psprintf("Bearer %s", access_token));
	provider_add_header(req, "Content-Type", "application/json; charset=UTF-8");
	appendStringInfoString(&req->body, JsonbToCString(NULL, &body->root, VARSIZE(body)));
}

/* Returns the first item a jsonpath (text) selects in answer, as text; NULL when none. */
static char *
fcm_path_text(Jsonb *answer, const char *path)
{
	Jsonb	   *found;

	if (answer == NULL)
		return NULL;
	found = jsonpath_first(answer, DatumGetJsonPathP(DirectFunctionCall1(jsonpath_in, CStringGetDatum(path))));
	return found ? jsonb_scalar_text(found) : NULL;
}

/* Stores the access token of a 200 answer and asks to send again; the rest is an error of the token request. */
static void
fcm_classify_token(const DeliveryJob *job, const ProviderResponse *resp, ProviderResult *res)
{
	Jsonb	   *answer = provider_response_json(resp);
	char	   *access_token = fcm_path_text(answer, "$.access_token");
	char	   *expires_in = fcm_path_text(answer, "$.expires_in");
	char	   *error = fcm_path_text(answer, "$.error");
	char	   *description = fcm_path_text(answer, "$.error_description");
	double		seconds;
	int64		lifetime;

	push_token_forget(fcm_pending_key(job));
	provider_classify_http(resp, res);
	if (res->outcome != OUTCOME_SENT)
	{
		if (resp->curl_code == 0 && error != NULL)
			res->error = psprintf("token request: HTTP %ld %s%s%s", resp->status, error,
								  description ? ": " : "", description ? description : "");
		else
			res->error = psprintf("token request: %s", res->error);
		return;
	}
	/* Google's tokens last an hour: a longer lifetime is held to a day */
	seconds = expires_in ? strtod(expires_in, NULL) : 3600;
	lifetime = isnan(seconds) || seconds < 0 ? 0 : (int64) Min(seconds, (double) FCM_TOKEN_MAX_LIFETIME_S);
	if (access_token == NULL || access_token[0] == '\0' || lifetime <= 2 * FCM_TOKEN_MIN_VALID_S ||
		strspn(access_token, FCM_TOKEN_CHARS) != strlen(access_token))
	{
		/* the answer may hold a token: it stays out of the error */
		res->outcome = OUTCOME_RETRY;
		res->error = access_token == NULL || access_token[0] == '\0'
			? psprintf("token request: HTTP %ld without an access_token", resp->status)
			: lifetime <= 2 * FCM_TOKEN_MIN_VALID_S
			? psprintf("token request: the access token is valid for only " INT64_FORMAT " s", lifetime)
			: pstrdup("token request: the access token has characters a bearer token cannot hold");
		return;
	}
	if (jsonb_get_jsonb(job->config, "service_account") != NULL)
		push_token_put(fcm_token_key(job), access_token, (int64) time(NULL) + lifetime);
	res->outcome = OUTCOME_AGAIN;
	res->error = psprintf("fetched an access token valid for " INT64_FORMAT " s", lifetime);
}

/*
 * 200 is sent (message id "name"); UNREGISTERED, or INVALID_ARGUMENT about
 * the token, is the recipient's fault; 401 sends again with a new access
 * token; 429 / 5xx retry after Retry-After; other errors are permanent.
 */
static void
fcm_classify(const DeliveryJob *job, const ProviderRequest *req,
			 const ProviderResponse *resp, ProviderResult *res)
{
	Jsonb	   *answer;
	char	   *code;
	char	   *status;
	char	   *message;

	if (req->purpose == FCM_TOKEN_REQUEST)
	{
		fcm_classify_token(job, resp, res);
		return;
	}
	provider_classify_http(resp, res);
	answer = provider_response_json(resp);
	if (res->outcome == OUTCOME_SENT)
	{
		res->message_id = fcm_path_text(answer, "$.name");
		push_token_accepted(provider_request_bearer(req));
		return;
	}
	if (resp->curl_code != 0)
		return;
	code = fcm_path_text(answer, "$.error.details[*] ? (@.\"@type\" == \"type.googleapis.com/google.firebase.fcm.v1.FcmError\").errorCode");
	status = fcm_path_text(answer, "$.error.status");
	message = fcm_path_text(answer, "$.error.message");
	if (code != NULL || status != NULL)
		res->error = psprintf("HTTP %ld %s: %s", resp->status, code ? code : status,
							  message ? message : provider_response_excerpt(resp, 200));

	if (code != NULL && strcmp(code, "UNREGISTERED") == 0)
		res->outcome = OUTCOME_INVALID_RECIPIENT;
	else if (resp->status == 400 &&
			 ((code != NULL && strcmp(code, "INVALID_ARGUMENT") == 0) ||
			  (status != NULL && strcmp(status, "INVALID_ARGUMENT") == 0)) &&
			 (fcm_path_text(answer, "$.error.details[*].fieldViolations[*] ? (@.field == \"message.token\")") != NULL ||
			  (message != NULL && strstr(message, "registration token") != NULL)))
		res->outcome = OUTCOME_INVALID_RECIPIENT;
	else if (code != NULL && strcmp(code, "SENDER_ID_MISMATCH") == 0)
	{
		/*
		 * A token of another Firebase project: permanent for this provider
		 * (another one may hold the project), not its failure, though a
		 * provider set up with the wrong project gets it for every token.
		 */
		res->outcome = OUTCOME_PERMANENT;
		res->recipient_fault = true;
	}
	else if (resp->status == 401 && (code == NULL || strcmp(code, "THIRD_PARTY_AUTH_ERROR") != 0))
	{
		/*
		 * An access token FCM took before has expired or was revoked: a new
		 * one, and send again now, not the provider's failure.  One never
		 * taken is refused for the account: a counted attempt.
		 */
		res->outcome = push_token_refused(fcm_token_key(job), provider_request_bearer(req)) ? OUTCOME_AGAIN
			: OUTCOME_RETRY;
	}
}

const ProviderAdapter provider_fcm = {"fcm", "push", fcm_build, fcm_classify};
