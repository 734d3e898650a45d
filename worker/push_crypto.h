/*
 * push_crypto.h — the cryptography of the push adapters, over OpenSSL 3's EVP
 * interfaces: base64url, private keys (PEM, or a raw P-256 scalar), JWTs
 * signed ES256 or RS256 (FCM's OAuth assertion, the APNs provider token,
 * VAPID), and RFC 8291 "aes128gcm" Web Push message encryption.  Also the
 * per-process cache of the credentials those adapters derive (access tokens,
 * provider JWTs).
 *
 * Every function raises an ERROR (ereport) on bad input, after freeing what
 * it took from OpenSSL; nothing here does network I/O.
 */
#ifndef NOTIFLOW_PUSH_CRYPTO_H
#define NOTIFLOW_PUSH_CRYPTO_H

#include "postgres.h"

#include <openssl/evp.h>

#include "lib/stringinfo.h"
#include "utils/jsonb.h"

#define PUSH_P256_POINT_LEN 65	/* uncompressed point: 0x04 | x | y */
#define PUSH_P256_SCALAR_LEN 32
#define PUSH_AUTH_SECRET_LEN 16
#define PUSH_SALT_LEN 16
/* what aes128gcm adds to a plaintext in one record: header (86), delimiter (1), tag (16) */
#define PUSH_WEBPUSH_OVERHEAD (PUSH_SALT_LEN + 4 + 1 + PUSH_P256_POINT_LEN + 1 + 16)

/* The kinds of private key the adapters use. */
typedef enum PushKeyKind
{
	PUSH_KEY_P256,				/* EC on P-256 (ES256, ECDH) */
	PUSH_KEY_RSA				/* RSA (RS256) */
} PushKeyKind;

/* Returns data encoded as base64url without padding (palloc'd). */
extern char *push_base64url_encode(const unsigned char *data, size_t len);

/*
 * Decodes base64url (padding optional) into a palloc'd buffer and sets *len;
 * returns NULL when s is not base64url.
 */
extern unsigned char *push_base64url_decode(const char *s, size_t *len);

/*
 * Reads a private key of the given kind: PEM (PKCS#8 or traditional; not
 * encrypted) or, for PUSH_KEY_P256, the base64url of the 32-byte private
 * scalar.  Returns NULL and sets *why (a phrase such as "not a PEM private
 * key") when the text is not such a key.  Free the key with EVP_PKEY_free.
 */
extern EVP_PKEY *push_key_read(const char *text, PushKeyKind kind, const char **why);

/* Writes the uncompressed public point of a P-256 key into out (65 bytes); false on failure. */
extern bool push_p256_public(EVP_PKEY *key, unsigned char *out);

/* True when point is a valid uncompressed P-256 public point of 65 bytes. */
extern bool push_p256_point_valid(const unsigned char *point, size_t len);

/*
 * Returns a signed compact JWT: header {"alg", "typ": "JWT"[, "kid"]}, the
 * claims object, signed with alg "ES256" (key: PEM or base64url scalar) or
 * "RS256" (key: RSA PEM); key_field names the key in the error about a bad
 * one ("config.private_key").  kid may be NULL.
 */
extern char *push_jwt_sign(const char *alg, const char *key, const char *key_field, const char *kid,
						   Jsonb *claims);

/*
 * Encrypts plaintext for a Web Push subscription (RFC 8291, content coding
 * aes128gcm of RFC 8188, one record) and appends the body — salt | rs |
 * idlen | application-server public key | ciphertext — to out.  p256dh and
 * auth are the subscription's keys (base64url).  as_private (the
 * application server's ephemeral private scalar) and salt are base64url, or
 * NULL for fresh random ones — given only by tests.
 */
extern void push_webpush_encrypt(const char *plaintext, size_t len, const char *p256dh,
								 const char *auth, const char *as_private, const char *salt,
								 int record_size, StringInfo out);

/*
 * The credential cache of this process (a dispatcher keeps its tokens for its
 * life): strings by key, each with an expiry in Unix seconds.
 */

/* Returns a copy of the cached value of key when it stays valid for more than min_valid_s seconds; else NULL. */
extern char *push_token_get(const char *key, int64 min_valid_s);

/* Stores value under key until expires_at (Unix seconds). */
extern void push_token_put(const char *key, const char *value, int64 expires_at);

/* Forgets key and its value (a marker whose reason has passed, like a token request answered). */
extern void push_token_forget(const char *key);

/* Notes that a request carrying the cached value used was accepted. */
extern void push_token_accepted(const char *used);

/*
 * A request carrying used was refused for its credential (expired, revoked):
 * that value is no longer handed out, and the next request gets a new one.
 * Returns true when the refusal is no fault of the provider's setup, so the
 * delivery is sent again at once and no attempt counted: the value had been
 * accepted before (it expired or was revoked; it may be the one a newer
 * value replaced meanwhile).  False for a value never accepted (the
 * credentials themselves are wrong: a counted attempt, which fails over when
 * they stay wrong) or one no longer known.
 */
extern bool push_token_refused(const char *key, const char *used);

/*
 * Forgets the markers of token requests in flight (keys ending "\npending"):
 * a claim rolled back built them, and they were not sent.
 */
extern void push_tokens_forget_pending(void);

/*
 * Returns a short digest (base64url of SHA-256, 22 characters) of the
 * credentials a cached value was derived from, for its key: changing them in
 * the provider's config then takes effect at once.
 */
extern char *push_secret_digest(const char *secret);

#endif							/* NOTIFLOW_PUSH_CRYPTO_H */
