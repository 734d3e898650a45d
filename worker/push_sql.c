/*
 * push_sql.c — SQL functions over push_crypto.c, for tests and diagnostics,
 * and the config check of the push provider kinds:
 *   notiflow.webpush_encrypt(plaintext, p256dh, auth, as_private, salt, record_size)
 *       → the RFC 8291 aes128gcm body (key pair and salt random unless given);
 *   notiflow.jwt_sign(alg, key, claims, kid) → a compact ES256 / RS256 JWT
 *       (superusers only: it signs with any key it is given);
 *   notiflow.check_push_config(kind, config) → raises 22023 naming the field
 *       of an fcm, apns or webpush config that is wrong; put_provider() calls it.
 */
#include "postgres.h"

#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"

#include "jsonb_util.h"
#include "provider.h"
#include "push_crypto.h"

PG_FUNCTION_INFO_V1(webpush_encrypt);
PG_FUNCTION_INFO_V1(jwt_sign);
PG_FUNCTION_INFO_V1(check_push_config);
PG_FUNCTION_INFO_V1(p256_point_valid);

static void config_invalid(const char *field, const char *problem, const char *hint) pg_attribute_noreturn();

/* Returns the text argument n as a C string, or NULL. */
static char *
text_arg(FunctionCallInfo fcinfo, int n)
{
	return PG_ARGISNULL(n) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(n));
}

/* Encrypts a web push payload. */
Datum
webpush_encrypt(PG_FUNCTION_ARGS)
{
	bytea	   *plaintext;
	StringInfoData body;
	bytea	   *result;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2))
		PG_RETURN_NULL();
	plaintext = PG_GETARG_BYTEA_PP(0);
	initStringInfo(&body);
	push_webpush_encrypt(VARDATA_ANY(plaintext), VARSIZE_ANY_EXHDR(plaintext),
						 text_arg(fcinfo, 1), text_arg(fcinfo, 2), text_arg(fcinfo, 3),
						 text_arg(fcinfo, 4), PG_ARGISNULL(5) ? 4096 : PG_GETARG_INT32(5), &body);
	result = palloc(VARHDRSZ + body.len);
	SET_VARSIZE(result, VARHDRSZ + body.len);
	memcpy(VARDATA(result), body.data, body.len);
	PG_RETURN_BYTEA_P(result);
}

/* Whether bytes are an uncompressed point on the P-256 curve (a Web Push subscription's p256dh). */
Datum
p256_point_valid(PG_FUNCTION_ARGS)
{
	bytea	   *point = PG_GETARG_BYTEA_PP(0);

	PG_RETURN_BOOL(push_p256_point_valid((const unsigned char *) VARDATA_ANY(point), VARSIZE_ANY_EXHDR(point)));
}

/* Signs a JWT. */
Datum
jwt_sign(PG_FUNCTION_ARGS)
{
	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2))
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(push_jwt_sign(text_arg(fcinfo, 0), text_arg(fcinfo, 1), "key",
												   text_arg(fcinfo, 3), PG_GETARG_JSONB_P(2))));
}


/* ------------------------------------------------------ config checks */

/* Raises the error of a config value: detail "config.<field>: <problem>". */
static void
config_invalid(const char *field, const char *problem, const char *hint)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("invalid provider config value"),
			 errdetail("config.%s: %s", field, problem),
			 hint ? errhint("%s", hint) : 0));
}

/* Returns a required non-empty string of obj, or raises an error naming prefix.key. */
static char *
config_required(const char *kind, Jsonb *obj, const char *prefix, const char *key)
{
	char	   *v = jsonb_get_string(obj, key);

	if (v == NULL || v[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("provider config for kind \"%s\" is incomplete", kind),
				 errdetail("config.%s%s: required (a string)", prefix, key)));
	return v;
}

/* Returns an optional string value, raising an error when it is present but not a string. */
static char *
config_optional_string(Jsonb *config, const char *key)
{
	JsonbValue *v = jsonb_get(config, key);

	if (v == NULL)
		return NULL;
	if (v->type != jbvString)
		config_invalid(key, "expected a string", NULL);
	return pnstrdup(v->val.string.val, v->val.string.len);
}

/* True when every character of s is in chars and 1 <= length <= max. */
static bool
only_chars(const char *s, const char *chars, size_t max)
{
	size_t		len = strlen(s);

	return len >= 1 && len <= max && strspn(s, chars) == len;
}

/* Returns the text of a jsonb number. */
static char *
numeric_text(JsonbValue *v)
{
	return jsonb_scalar_text(JsonbValueToJsonb(v));
}

#define ALNUM "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

/* Checks an optional whole number between 0 and max. */
static void
config_check_integer(Jsonb *config, const char *key, int64 max, const char *expected)
{
	JsonbValue *v = jsonb_get(config, key);
	char	   *digits;

	if (v == NULL)
		return;
	if (v->type == jbvNumeric)
	{
		digits = numeric_text(v);
		if (only_chars(digits, "0123456789", 18) && strtoll(digits, NULL, 10) <= max)
			return;
	}
	config_invalid(key, expected, NULL);
}

/* Checks that a private key reads as the kind wanted. */
static void
config_check_key(const char *field, const char *text, PushKeyKind kind, const char *hint)
{
	const char *why = NULL;
	EVP_PKEY   *key = push_key_read(text, kind, &why);

	if (key == NULL)
		config_invalid(field, why, hint);
	EVP_PKEY_free(key);
}

/* fcm: the service account key file, with its RSA key. */
static void
check_fcm(Jsonb *config)
{
	static const char *const required[] = {"client_email", "private_key", "project_id", "token_uri"};
	JsonbValue *v = jsonb_get(config, "service_account");
	Jsonb	   *sa;
	char	   *email;

	if (v == NULL || v->type != jbvBinary || !JsonContainerIsObject(v->val.binary.data))
		config_invalid("service_account", "expected an object (the service account's JSON key file)",
					   "Paste the key file of a service account with the Firebase Cloud Messaging API role.");
	sa = jsonb_get_jsonb(config, "service_account");
	for (int i = 0; i < (int) lengthof(required); i++)
		config_required("fcm", sa, "service_account.", required[i]);
	email = jsonb_get_string(sa, "client_email");
	if (strchr(email, '@') == NULL || strpbrk(email, " \t\r\n") != NULL)
		config_invalid("service_account.client_email", "expected the service account's email address", NULL);
	if (!only_chars(jsonb_get_string(sa, "project_id"), ALNUM ".:-", 100))
		config_invalid("service_account.project_id", "expected a Google Cloud project id", NULL);
	if (!provider_is_http_url(jsonb_get_string(sa, "token_uri")))
		config_invalid("service_account.token_uri", "expected an http(s) URL", NULL);
	config_check_key("service_account.private_key", jsonb_get_string(sa, "private_key"), PUSH_KEY_RSA,
					 "The key file's private_key is an RSA key in PEM (-----BEGIN PRIVATE KEY-----).");
}

/* apns: token-based authentication with a .p8 key. */
static void
check_apns(Jsonb *config)
{
	char	   *key = config_required("apns", config, "", "private_key");
	char	   *team_id = config_required("apns", config, "", "team_id");
	char	   *key_id = config_required("apns", config, "", "key_id");
	char	   *topic = config_required("apns", config, "", "topic");
	char	   *environment = config_optional_string(config, "environment");
	JsonbValue *priority = jsonb_get(config, "priority");

	if (strstr(key, "-----BEGIN") == NULL)
		config_invalid("private_key", "expected the .p8 key in PEM (-----BEGIN PRIVATE KEY-----)", NULL);
	config_check_key("private_key", key, PUSH_KEY_P256,
					 "APNs keys (.p8 files from the Apple developer account) are EC P-256 keys.");
	if (strlen(team_id) != 10 || !only_chars(team_id, ALNUM, 10))
		config_invalid("team_id", "expected the 10-character Team ID", NULL);
	if (strlen(key_id) != 10 || !only_chars(key_id, ALNUM, 10))
		config_invalid("key_id", "expected the 10-character Key ID of the .p8 key", NULL);
	if (environment != NULL && strcmp(environment, "production") != 0 && strcmp(environment, "sandbox") != 0)
		config_invalid("environment", "expected production or sandbox", NULL);
	if (strpbrk(topic, " \t\r\n") != NULL)
		config_invalid("topic", "expected the app's bundle id", NULL);
	if (priority != NULL)
	{
		const char *p = priority->type == jbvNumeric ? numeric_text(priority) : "";

		if (strcmp(p, "10") != 0 && strcmp(p, "5") != 0 && strcmp(p, "1") != 0)
			config_invalid("priority", "expected 10, 5 or 1", NULL);
	}
	config_check_integer(config, "ttl", 31536000, "expected seconds from 0 to 31536000");
}

/* webpush: the VAPID key pair and subject. */
static void
check_webpush(Jsonb *config)
{
	char	   *public_text = config_required("webpush", config, "", "vapid_public_key");
	char	   *private_text = config_required("webpush", config, "", "vapid_private_key");
	char	   *subject = config_required("webpush", config, "", "subject");
	char	   *urgency = config_optional_string(config, "urgency");
	char	   *topic = config_optional_string(config, "topic");
	unsigned char *public_key;
	unsigned char *private_key;
	unsigned char derived[PUSH_P256_POINT_LEN];
	size_t		public_len;
	size_t		private_len;
	const char *why = NULL;
	EVP_PKEY   *key;
	bool		read;

	public_key = push_base64url_decode(public_text, &public_len);
	if (public_key == NULL || public_len != PUSH_P256_POINT_LEN || public_key[0] != 0x04)
		config_invalid("vapid_public_key",
					   "expected base64url of a 65-byte uncompressed P-256 public key (0x04 | x | y)",
					   "Generate the pair as docs/push.md shows.");
	if (!push_p256_point_valid(public_key, public_len))
		config_invalid("vapid_public_key", "not a point on the P-256 curve",
					   "Generate the pair as docs/push.md shows.");
	private_key = push_base64url_decode(private_text, &private_len);
	if (private_key == NULL || private_len != PUSH_P256_SCALAR_LEN)
		config_invalid("vapid_private_key", "expected base64url of a 32-byte P-256 private key",
					   "Generate the pair as docs/push.md shows.");
	key = push_key_read(private_text, PUSH_KEY_P256, &why);
	if (key == NULL)
		config_invalid("vapid_private_key", why, NULL);
	read = push_p256_public(key, derived);
	EVP_PKEY_free(key);
	if (!read || memcmp(derived, public_key, PUSH_P256_POINT_LEN) != 0)
		config_invalid("vapid_private_key", "does not match config.vapid_public_key",
					   "Give the two halves of one key pair.");
	if (strncmp(subject, "mailto:", 7) != 0 && strncmp(subject, "https://", 8) != 0)
		config_invalid("subject", "expected a mailto: or https: URL to contact the sender",
					   "Push services contact the sender there, e.g. mailto:ops@example.com.");
	if (strpbrk(subject, " \t\r\n") != NULL)
		config_invalid("subject", "expected a mailto: or https: URL without blanks", NULL);
	if (urgency != NULL && strcmp(urgency, "very-low") != 0 && strcmp(urgency, "low") != 0 &&
		strcmp(urgency, "normal") != 0 && strcmp(urgency, "high") != 0)
		config_invalid("urgency", "expected very-low, low, normal or high", NULL);
	if (topic != NULL && !only_chars(topic, ALNUM "-_", 32))
		config_invalid("topic", "expected 1 to 32 base64url characters", NULL);
	config_check_integer(config, "ttl", 2419200, "expected seconds from 0 to 2419200 (28 days)");
}

/* Checks the config of a push provider kind. */
Datum
check_push_config(PG_FUNCTION_ARGS)
{
	char	   *kind = text_to_cstring(PG_GETARG_TEXT_PP(0));
	Jsonb	   *config = PG_GETARG_JSONB_P(1);

	if (!JB_ROOT_IS_OBJECT(config))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("provider config must be a JSON object"),
				 errdetail("config: expected an object")));
	if (strcmp(kind, "fcm") == 0)
		check_fcm(config);
	else if (strcmp(kind, "apns") == 0)
		check_apns(config);
	else if (strcmp(kind, "webpush") == 0)
		check_webpush(config);
	else
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown push provider kind \"%s\"", kind),
				 errdetail("kind: expected fcm, apns or webpush")));
	PG_RETURN_VOID();
}
