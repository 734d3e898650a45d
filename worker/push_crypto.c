/*
 * push_crypto.c — cryptography for the push adapters (FCM, APNs, Web Push)
 * and the SQL diagnostics of push_sql.c, on OpenSSL 3's EVP interfaces only:
 * notiflow computes no cipher, curve or hash itself.
 *
 *   keys      PEM private keys (the FCM service account's RSA key, the APNs
 *             .p8 EC key), raw P-256 scalars and points in base64url (VAPID
 *             keys, subscription keys);
 *   JWT       ES256 / RS256 compact tokens; OpenSSL's DER ECDSA signature is
 *             turned into the 64-byte r || s of JOSE (RFC 7518 §3.4);
 *   Web Push  RFC 8291: ECDH between an ephemeral application-server key and
 *             the subscription's p256dh, two HKDF-SHA256 steps (the auth
 *             secret, then the salt), one AES-128-GCM record of RFC 8188;
 *   cache     credentials the adapters derive (access tokens, provider JWTs),
 *             kept in TopMemoryContext for the process's life.
 *
 * Functions that take OpenSSL objects free them before raising an error, so
 * an ERROR leaks nothing outside palloc'd memory.
 */
#include "postgres.h"

#include <time.h>

#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/params.h>
#include <openssl/pem.h>
#include <openssl/rand.h>

#include "common/base64.h"
#include "nodes/pg_list.h"
#include "utils/memutils.h"

#include "jsonb_util.h"
#include "push_crypto.h"

#define PUSH_GCM_TAG_LEN 16
#define PUSH_GCM_NONCE_LEN 12
#define PUSH_CEK_LEN 16
/* salt(16) | rs(4) | idlen(1) | keyid(65) */
#define PUSH_HEADER_LEN (PUSH_SALT_LEN + 4 + 1 + PUSH_P256_POINT_LEN)

static void push_openssl_error(const char *what) pg_attribute_noreturn();
static void push_bad_argument(const char *message, const char *field, const char *expected) pg_attribute_noreturn();


/* ---------------------------------------------------------------- errors */

/* Raises an error naming the failed step, with OpenSSL's reason as detail. */
static void
push_openssl_error(const char *what)
{
	unsigned long code = ERR_get_error();
	const char *reason = code != 0 ? ERR_reason_error_string(code) : NULL;

	ERR_clear_error();
	ereport(ERROR,
			(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
			 errmsg("%s failed", what),
			 reason ? errdetail("OpenSSL: %s", reason) : 0));
}

/* Raises the error of an argument that is not what it should be. */
static void
push_bad_argument(const char *message, const char *field, const char *expected)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("%s", message),
			 errdetail("%s: expected %s", field, expected)));
}


/* ------------------------------------------------------------- base64url */

/* Encodes with the URL-safe alphabet, no padding. */
char *
push_base64url_encode(const unsigned char *data, size_t len)
{
	int			cap = pg_b64_enc_len((int) len);
	char	   *out = palloc(cap + 1);
	int			n = pg_b64_encode((const char *) data, (int) len, out, cap);

	if (n < 0)
		elog(ERROR, "notiflow: base64 encoding failed");
	while (n > 0 && out[n - 1] == '=')
		n--;
	out[n] = '\0';
	for (char *p = out; *p; p++)
	{
		if (*p == '+')
			*p = '-';
		else if (*p == '/')
			*p = '_';
	}
	return out;
}

/* Decodes the URL-safe alphabet (padding optional, nothing else allowed). */
unsigned char *
push_base64url_decode(const char *s, size_t *len)
{
	size_t		total = strlen(s);
	size_t		body = total;
	StringInfoData std;
	unsigned char *out;
	int			n;

	while (body > 0 && s[body - 1] == '=')
		body--;
	if (total - body > 2 || body % 4 == 1 || (total != body && total % 4 != 0))
		return NULL;
	initStringInfo(&std);
	for (size_t i = 0; i < body; i++)
	{
		char		c = s[i];

		if (c == '-')
			c = '+';
		else if (c == '_')
			c = '/';
		else if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')))
			return NULL;
		appendStringInfoChar(&std, c);
	}
	while (std.len % 4 != 0)
		appendStringInfoChar(&std, '=');
	out = palloc(pg_b64_dec_len(std.len) + 1);
	n = pg_b64_decode(std.data, std.len, (char *) out, pg_b64_dec_len(std.len));
	if (n < 0)
		return NULL;
	*len = (size_t) n;
	return out;
}


/* ------------------------------------------------------------------ keys */

/* Refuses to prompt for the passphrase of an encrypted PEM key. */
static int
push_no_passphrase(char *buf, int size, int rwflag, void *userdata)
{
	return -1;
}

/* Reads the private key of a PEM text; NULL when there is none. */
static EVP_PKEY *
push_pem_read(const char *text)
{
	BIO		   *bio = BIO_new_mem_buf(text, -1);
	EVP_PKEY   *key = NULL;

	if (bio != NULL)
	{
		key = PEM_read_bio_PrivateKey(bio, NULL, push_no_passphrase, NULL);
		BIO_free(bio);
	}
	ERR_clear_error();
	return key;
}

/*
 * Reads a raw P-256 private scalar.  It is wrapped in an RFC 5915
 * ECPrivateKey (version 1, the scalar, the named curve prime256v1), whose
 * reader derives the public point and refuses scalars out of range.
 */
static EVP_PKEY *
push_p256_scalar_read(const unsigned char *scalar)
{
	static const unsigned char head[] = {0x30, 0x31, 0x02, 0x01, 0x01, 0x04, 0x20};
	static const unsigned char curve[] = {0xa0, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07};
	unsigned char der[sizeof(head) + PUSH_P256_SCALAR_LEN + sizeof(curve)];
	const unsigned char *p = der;
	EVP_PKEY   *key;

	memcpy(der, head, sizeof(head));
	memcpy(der + sizeof(head), scalar, PUSH_P256_SCALAR_LEN);
	memcpy(der + sizeof(head) + PUSH_P256_SCALAR_LEN, curve, sizeof(curve));
	key = d2i_PrivateKey(EVP_PKEY_EC, NULL, &p, sizeof(der));
	explicit_bzero(der, sizeof(der));
	ERR_clear_error();
	return key;
}

/* True when key is of the kind: RSA, or EC on P-256 with a valid private part. */
static bool
push_key_is(EVP_PKEY *key, PushKeyKind kind)
{
	char		group[64];
	EVP_PKEY_CTX *ctx;
	bool		ok;

	if (kind == PUSH_KEY_RSA)
		return EVP_PKEY_is_a(key, "RSA");
	if (!EVP_PKEY_is_a(key, "EC") ||
		!EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group), NULL) ||
		(strcmp(group, "prime256v1") != 0 && strcmp(group, "P-256") != 0))
		return false;
	ctx = EVP_PKEY_CTX_new_from_pkey(NULL, key, NULL);
	ok = ctx != NULL && EVP_PKEY_pairwise_check(ctx) > 0;
	EVP_PKEY_CTX_free(ctx);
	ERR_clear_error();
	return ok;
}

/* Reads a PEM key, or a base64url P-256 scalar, of the wanted kind. */
EVP_PKEY *
push_key_read(const char *text, PushKeyKind kind, const char **why)
{
	EVP_PKEY   *key;

	if (strstr(text, "-----BEGIN") != NULL)
	{
		key = push_pem_read(text);
		if (key == NULL)
		{
			*why = "not a readable PEM private key (encrypted keys are not supported)";
			return NULL;
		}
	}
	else if (kind == PUSH_KEY_P256)
	{
		size_t		len;
		unsigned char *raw = push_base64url_decode(text, &len);

		if (raw == NULL || len != PUSH_P256_SCALAR_LEN)
		{
			*why = "neither a PEM private key nor the base64url of a 32-byte P-256 private key";
			return NULL;
		}
		key = push_p256_scalar_read(raw);
		explicit_bzero(raw, len);
		if (key == NULL)
		{
			*why = "not a valid P-256 private key";
			return NULL;
		}
	}
	else
	{
		*why = "not a PEM private key";
		return NULL;
	}
	if (!push_key_is(key, kind))
	{
		EVP_PKEY_free(key);
		*why = kind == PUSH_KEY_P256 ? "not a valid EC P-256 private key" : "not an RSA private key";
		return NULL;
	}
	return key;
}

/* Writes the uncompressed public point of a P-256 key. */
bool
push_p256_public(EVP_PKEY *key, unsigned char *out)
{
	size_t		len = 0;

	return EVP_PKEY_get_octet_string_param(key, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, out,
										   PUSH_P256_POINT_LEN, &len) &&
		len == PUSH_P256_POINT_LEN;
}

/* Reads an uncompressed P-256 public point; NULL when it is not on the curve. */
static EVP_PKEY *
push_p256_point_read(const unsigned char *point, size_t len)
{
	OSSL_PARAM	params[3];
	EVP_PKEY_CTX *ctx;
	EVP_PKEY   *key = NULL;

	if (len != PUSH_P256_POINT_LEN || point[0] != 0x04)
		return NULL;
	params[0] = OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, (char *) "prime256v1", 0);
	params[1] = OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, (void *) point, len);
	params[2] = OSSL_PARAM_construct_end();
	ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
	if (ctx == NULL || EVP_PKEY_fromdata_init(ctx) <= 0 ||
		EVP_PKEY_fromdata(ctx, &key, EVP_PKEY_PUBLIC_KEY, params) <= 0)
		key = NULL;
	EVP_PKEY_CTX_free(ctx);
	ERR_clear_error();
	return key;
}

/* Checks a public point by reading it. */
bool
push_p256_point_valid(const unsigned char *point, size_t len)
{
	EVP_PKEY   *key = push_p256_point_read(point, len);

	EVP_PKEY_free(key);
	return key != NULL;
}


/* ------------------------------------------------------------------- JWT */

/* Signs SHA-256(data) into sig (EVP_PKEY_get_size bytes): DER ECDSA or RSA PKCS#1 v1.5. */
static bool
push_sign_sha256(EVP_PKEY *key, const char *data, size_t len, unsigned char *sig, size_t *siglen)
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	bool		ok;

	*siglen = (size_t) EVP_PKEY_get_size(key);
	ok = md != NULL &&
		EVP_DigestSignInit_ex(md, NULL, "SHA256", NULL, NULL, key, NULL) > 0 &&
		EVP_DigestSign(md, sig, siglen, (const unsigned char *) data, len) > 0;
	EVP_MD_CTX_free(md);
	return ok;
}

/* Turns a DER ECDSA-Sig-Value into JOSE's fixed-width r || s (64 bytes). */
static bool
push_ecdsa_der_to_jose(const unsigned char *der, size_t len, unsigned char *out)
{
	const unsigned char *p = der;
	ECDSA_SIG  *sig = d2i_ECDSA_SIG(NULL, &p, (long) len);
	const BIGNUM *r;
	const BIGNUM *s;
	bool		ok;

	if (sig == NULL)
		return false;
	ECDSA_SIG_get0(sig, &r, &s);
	ok = BN_bn2binpad(r, out, 32) == 32 && BN_bn2binpad(s, out + 32, 32) == 32;
	ECDSA_SIG_free(sig);
	return ok;
}

/*
 * Returns base64url(header) "." base64url(claims) "." base64url(signature).
 * key_field names where the key came from, for the error about a bad one
 * ("config.private_key" at send time, "key" for jwt_sign()).
 */
char *
push_jwt_sign(const char *alg, const char *key_text, const char *key_field, const char *kid, Jsonb *claims)
{
	bool		es256 = strcmp(alg, "ES256") == 0;
	const char *keys[] = {"alg", "typ", "kid"};
	Jsonb	   *values[3];
	Jsonb	   *header;
	char	   *text;
	StringInfoData jwt;
	EVP_PKEY   *key;
	const char *why = NULL;
	unsigned char *sig;
	unsigned char jose[64];
	size_t		siglen;
	bool		ok;

	if (!es256 && strcmp(alg, "RS256") != 0)
		push_bad_argument(psprintf("unsupported JWT algorithm \"%s\"", alg), "alg", "ES256 or RS256");
	if (claims == NULL || !JB_ROOT_IS_OBJECT(claims))
		push_bad_argument("JWT claims must be a JSON object", "claims", "an object");

	values[0] = jsonb_make_string(alg);
	values[1] = jsonb_make_string("JWT");
	values[2] = kid ? jsonb_make_string(kid) : NULL;
	header = jsonb_make_object(kid ? 3 : 2, keys, values);
	initStringInfo(&jwt);
	text = JsonbToCString(NULL, &header->root, VARSIZE(header));
	appendStringInfoString(&jwt, push_base64url_encode((unsigned char *) text, strlen(text)));
	appendStringInfoChar(&jwt, '.');
	text = JsonbToCString(NULL, &claims->root, VARSIZE(claims));
	appendStringInfoString(&jwt, push_base64url_encode((unsigned char *) text, strlen(text)));

	key = push_key_read(key_text, es256 ? PUSH_KEY_P256 : PUSH_KEY_RSA, &why);
	if (key == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid %s signing key", alg),
				 errdetail("%s: %s", key_field, why),
				 errhint(es256 ? "Give an EC P-256 private key in PEM, or its 32-byte private scalar in base64url."
						 : "Give an RSA private key in PEM.")));
	sig = palloc(Max(EVP_PKEY_get_size(key), 1));
	ok = push_sign_sha256(key, jwt.data, jwt.len, sig, &siglen);
	EVP_PKEY_free(key);
	if (!ok)
		push_openssl_error("signing a JWT");
	if (es256)
	{
		if (!push_ecdsa_der_to_jose(sig, siglen, jose))
			push_openssl_error("converting an ECDSA signature");
		memcpy(sig, jose, sizeof(jose));
		siglen = sizeof(jose);
	}
	appendStringInfoChar(&jwt, '.');
	appendStringInfoString(&jwt, push_base64url_encode(sig, siglen));
	return jwt.data;
}


/* -------------------------------------------------------------- Web Push */

/* HKDF-SHA256 (extract then expand) of ikm with salt and info into out. */
static bool
push_hkdf(const unsigned char *salt, size_t salt_len, const unsigned char *ikm, size_t ikm_len,
		  const unsigned char *info, size_t info_len, unsigned char *out, size_t out_len)
{
	EVP_KDF    *kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
	EVP_KDF_CTX *ctx = kdf != NULL ? EVP_KDF_CTX_new(kdf) : NULL;
	OSSL_PARAM	params[5];
	bool		ok;

	params[0] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *) "SHA256", 0);
	params[1] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *) ikm, ikm_len);
	params[2] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *) salt, salt_len);
	params[3] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, (void *) info, info_len);
	params[4] = OSSL_PARAM_construct_end();
	ok = ctx != NULL && EVP_KDF_derive(ctx, out, out_len, params) > 0;
	EVP_KDF_CTX_free(ctx);
	EVP_KDF_free(kdf);
	return ok;
}

/* ECDH between our key and the peer's point: the 32-byte x coordinate. */
static bool
push_ecdh(EVP_PKEY *ours, EVP_PKEY *peer, unsigned char *secret)
{
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(NULL, ours, NULL);
	size_t		len = 32;
	bool		ok;

	ok = ctx != NULL && EVP_PKEY_derive_init(ctx) > 0 && EVP_PKEY_derive_set_peer(ctx, peer) > 0 &&
		EVP_PKEY_derive(ctx, secret, &len) > 0 && len == 32;
	EVP_PKEY_CTX_free(ctx);
	return ok;
}

/* AES-128-GCM of in (len bytes) into out, then the 16-byte tag. */
static bool
push_aes128gcm(const unsigned char *key, const unsigned char *nonce,
			   const unsigned char *in, int len, unsigned char *out)
{
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
	int			n = 0;
	int			fin = 0;
	bool		ok;

	ok = ctx != NULL &&
		EVP_EncryptInit_ex2(ctx, EVP_aes_128_gcm(), key, nonce, NULL) > 0 &&
		EVP_EncryptUpdate(ctx, out, &n, in, len) > 0 &&
		EVP_EncryptFinal_ex(ctx, out + n, &fin) > 0 &&
		EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, PUSH_GCM_TAG_LEN, out + n + fin) > 0;
	EVP_CIPHER_CTX_free(ctx);
	return ok && n + fin == len;
}

/* Decodes a base64url argument of an exact length, or raises an error naming it. */
static unsigned char *
push_decode_exact(const char *text, size_t want, const char *field, const char *expected)
{
	size_t		len;
	unsigned char *raw = push_base64url_decode(text, &len);

	if (raw == NULL || len != want)
		push_bad_argument("invalid web push encryption input", field, expected);
	return raw;
}

/*
 * RFC 8291 §3.3-3.4 and RFC 8188 §2: derives the content-encryption key and
 * nonce, and writes header and one record ending in the 0x02 delimiter.
 */
void
push_webpush_encrypt(const char *plaintext, size_t len, const char *p256dh, const char *auth,
					 const char *as_private, const char *salt_text, int record_size, StringInfo out)
{
	static const char key_label[] = "WebPush: info";	/* each label is used with its NUL */
	static const char cek_label[] = "Content-Encoding: aes128gcm";
	static const char nonce_label[] = "Content-Encoding: nonce";
	unsigned char *ua_public;
	unsigned char *auth_secret;
	unsigned char salt[PUSH_SALT_LEN];
	unsigned char as_public[PUSH_P256_POINT_LEN];
	unsigned char key_info[sizeof(key_label) + 2 * PUSH_P256_POINT_LEN];
	unsigned char ecdh[32];
	unsigned char ikm[32];
	unsigned char cek[PUSH_CEK_LEN];
	unsigned char nonce[PUSH_GCM_NONCE_LEN];
	unsigned char header[PUSH_HEADER_LEN];
	unsigned char *record;
	unsigned char *sealed;
	EVP_PKEY   *ua_key;
	EVP_PKEY   *as_key;
	const char *failed = NULL;

	/* every input is checked before anything is taken from OpenSSL */
	ua_public = push_decode_exact(p256dh, PUSH_P256_POINT_LEN, "p256dh",
								  "base64url of a 65-byte uncompressed P-256 point");
	auth_secret = push_decode_exact(auth, PUSH_AUTH_SECRET_LEN, "auth", "base64url of 16 bytes");
	if (salt_text != NULL)
		memcpy(salt, push_decode_exact(salt_text, PUSH_SALT_LEN, "salt", "base64url of 16 bytes"),
			   PUSH_SALT_LEN);
	else if (RAND_bytes(salt, PUSH_SALT_LEN) != 1)
		push_openssl_error("generating a web push salt");
	if (as_private != NULL)
		push_decode_exact(as_private, PUSH_P256_SCALAR_LEN, "as_private",
						  "base64url of a 32-byte P-256 private key");
	if (record_size < PUSH_GCM_TAG_LEN + 2)
		push_bad_argument("invalid web push encryption input", "record_size", "at least 18");
	if (len + 1 + PUSH_GCM_TAG_LEN > (size_t) record_size)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("web push payload too large"),
				 errdetail("plaintext: %zu bytes; one record of %d bytes holds at most %d",
						   len, record_size, record_size - 1 - PUSH_GCM_TAG_LEN),
				 errhint("Send less content in a push message.")));
	record = palloc(len + 1);
	memcpy(record, plaintext, len);
	record[len] = 0x02;			/* the last (and only) record's delimiter, no padding */
	sealed = palloc(len + 1 + PUSH_GCM_TAG_LEN);

	ua_key = push_p256_point_read(ua_public, PUSH_P256_POINT_LEN);
	if (ua_key == NULL)
		push_bad_argument("invalid web push encryption input", "p256dh", "a point on the P-256 curve");
	if (as_private != NULL)
	{
		const char *why;

		as_key = push_key_read(as_private, PUSH_KEY_P256, &why);
		if (as_key == NULL)
		{
			EVP_PKEY_free(ua_key);
			push_bad_argument("invalid web push encryption input", "as_private", "a valid P-256 private key");
		}
	}
	else
	{
		as_key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
		if (as_key == NULL)
		{
			EVP_PKEY_free(ua_key);
			push_openssl_error("generating a web push key pair");
		}
	}

	/* key_info = "WebPush: info" 0x00 | ua_public | as_public */
	memcpy(key_info, key_label, sizeof(key_label));
	memcpy(key_info + sizeof(key_label), ua_public, PUSH_P256_POINT_LEN);
	if (!push_p256_public(as_key, as_public) || !push_ecdh(as_key, ua_key, ecdh))
		failed = "web push key agreement";
	else
	{
		memcpy(key_info + sizeof(key_label) + PUSH_P256_POINT_LEN, as_public, PUSH_P256_POINT_LEN);
		if (!push_hkdf(auth_secret, PUSH_AUTH_SECRET_LEN, ecdh, sizeof(ecdh),
					   key_info, sizeof(key_info), ikm, sizeof(ikm)) ||
			!push_hkdf(salt, PUSH_SALT_LEN, ikm, sizeof(ikm),
					   (const unsigned char *) cek_label, sizeof(cek_label), cek, sizeof(cek)) ||
			!push_hkdf(salt, PUSH_SALT_LEN, ikm, sizeof(ikm),
					   (const unsigned char *) nonce_label, sizeof(nonce_label), nonce, sizeof(nonce)))
			failed = "web push key derivation";
		else if (!push_aes128gcm(cek, nonce, record, (int) len + 1, sealed))
			failed = "web push encryption";
	}
	EVP_PKEY_free(as_key);
	EVP_PKEY_free(ua_key);
	explicit_bzero(ecdh, sizeof(ecdh));
	explicit_bzero(ikm, sizeof(ikm));
	explicit_bzero(cek, sizeof(cek));
	if (failed)
		push_openssl_error(failed);

	/* header: salt | rs (uint32, network order) | idlen | keyid (our public key) */
	memcpy(header, salt, PUSH_SALT_LEN);
	header[PUSH_SALT_LEN] = (unsigned char) ((uint32) record_size >> 24);
	header[PUSH_SALT_LEN + 1] = (unsigned char) ((uint32) record_size >> 16);
	header[PUSH_SALT_LEN + 2] = (unsigned char) ((uint32) record_size >> 8);
	header[PUSH_SALT_LEN + 3] = (unsigned char) record_size;
	header[PUSH_SALT_LEN + 4] = PUSH_P256_POINT_LEN;
	memcpy(header + PUSH_SALT_LEN + 5, as_public, PUSH_P256_POINT_LEN);
	appendBinaryStringInfo(out, (const char *) header, sizeof(header));
	appendBinaryStringInfo(out, (const char *) sealed, (int) len + 1 + PUSH_GCM_TAG_LEN);
}


/* ------------------------------------------------------ credential cache */

/* One cached credential. */
typedef struct PushToken
{
	char	   *key;
	char	   *value;
	int64		expires_at;		/* Unix seconds */
	bool		proven;			/* a request carrying it was accepted */
	bool		refused;		/* a request carrying it was refused: not handed out */
	char	   *prev_value;		/* the value it replaced (requests may still carry it), or NULL */
	bool		prev_proven;	/* whether that one was accepted */
} PushToken;

static List *push_tokens = NIL;	/* of PushToken, in TopMemoryContext */

/* How long an expired entry is kept: longer than a request can be in flight. */
#define PUSH_TOKEN_GRACE_S 3600

/* Finds the entry of key. */
static PushToken *
push_token_find(const char *key)
{
	ListCell   *lc;

	foreach(lc, push_tokens)
	{
		PushToken  *t = lfirst(lc);

		if (strcmp(t->key, key) == 0)
			return t;
	}
	return NULL;
}

/* Returns the cached value when it stays valid long enough. */
char *
push_token_get(const char *key, int64 min_valid_s)
{
	PushToken  *t = push_token_find(key);

	if (t == NULL || t->refused || t->expires_at - (int64) time(NULL) <= min_valid_s)
		return NULL;
	return pstrdup(t->value);
}

/* Frees an entry. */
static void
push_token_free(PushToken *t)
{
	pfree(t->key);
	pfree(t->value);
	if (t->prev_value)
		pfree(t->prev_value);
	pfree(t);
}

/*
 * Stores or replaces the value of key.  Expired entries go first, so that
 * the cache holds what is valid (Web Push keys one entry per push service
 * origin, which comes from subscriptions).
 */
void
push_token_put(const char *key, const char *value, int64 expires_at)
{
	MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
	int64		now = (int64) time(NULL);
	ListCell   *lc;
	PushToken  *t;
	char	   *copy = pstrdup(value);

	foreach(lc, push_tokens)
	{
		PushToken  *e = lfirst(lc);

		/*
		 * Expired for a while: no request in flight carries it any more (its
		 * refusal must find it, see push_token_refused).  The key's own entry
		 * is replaced below, keeping its value as the previous one.
		 */
		if (e->expires_at + PUSH_TOKEN_GRACE_S <= now && strcmp(e->key, key) != 0)
		{
			push_tokens = foreach_delete_current(push_tokens, lc);
			push_token_free(e);
		}
	}
	t = push_token_find(key);

	if (t == NULL)
	{
		t = palloc0(sizeof(PushToken));
		t->key = pstrdup(key);
		push_tokens = lappend(push_tokens, t);
	}
	else
	{
		if (t->prev_value)
			pfree(t->prev_value);
		t->prev_value = t->value;
		t->prev_proven = t->proven;
	}
	t->value = copy;
	t->expires_at = expires_at;
	t->proven = false;
	t->refused = false;
	MemoryContextSwitchTo(old);
}

void
push_token_forget(const char *key)
{
	PushToken  *t = push_token_find(key);

	if (t == NULL)
		return;
	push_tokens = list_delete_ptr(push_tokens, t);
	push_token_free(t);
}

void
push_token_accepted(const char *used)
{
	ListCell   *lc;

	if (used == NULL)
		return;
	foreach(lc, push_tokens)
	{
		PushToken  *t = lfirst(lc);

		if (strcmp(t->value, used) == 0)
		{
			t->proven = true;
			return;
		}
		if (t->prev_value != NULL && strcmp(t->prev_value, used) == 0)
		{
			t->prev_proven = true;
			return;
		}
	}
}

bool
push_token_refused(const char *key, const char *used)
{
	PushToken  *t = push_token_find(key);

	if (t == NULL || used == NULL)
		return false;
	if (strcmp(t->value, used) == 0)
	{
		t->refused = true;
		return t->proven;
	}
	/* a newer one is cached already: the refused one counts as it was taken or not */
	return t->prev_value != NULL && strcmp(t->prev_value, used) == 0 && t->prev_proven;
}

void
push_tokens_forget_pending(void)
{
	ListCell   *lc;

	foreach(lc, push_tokens)
	{
		PushToken  *t = lfirst(lc);
		size_t		len = strlen(t->key);

		if (len >= 8 && strcmp(t->key + len - 8, "\npending") == 0)
		{
			push_tokens = foreach_delete_current(push_tokens, lc);
			push_token_free(t);
		}
	}
}

char *
push_secret_digest(const char *secret)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int len = 0;

	if (!EVP_Digest(secret, strlen(secret), md, &len, EVP_sha256(), NULL))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("sha-256 digest failed")));
	return pnstrdup(push_base64url_encode(md, len), 22);
}
