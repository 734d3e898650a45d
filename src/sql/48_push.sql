-- notiflow 0.1 — push: the cryptography of the fcm, apns and webpush adapters,
-- callable for tests and diagnostics, and the check of their provider configs
-- that put_provider() runs (see docs/push.md).

CREATE FUNCTION notiflow.webpush_encrypt(plaintext bytea, p256dh text, auth text,
                                         as_private text DEFAULT NULL, salt text DEFAULT NULL,
                                         record_size integer DEFAULT 4096)
    RETURNS bytea AS 'MODULE_PATHNAME', 'webpush_encrypt' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION notiflow.webpush_encrypt(bytea, text, text, text, text, integer) IS
    'The RFC 8291 aes128gcm body of a web push message for a subscription''s p256dh and auth (base64url); the application-server key (as_private) and salt are random unless given.';

CREATE FUNCTION notiflow.jwt_sign(alg text, key text, claims jsonb, kid text DEFAULT NULL)
    RETURNS text AS 'MODULE_PATHNAME', 'jwt_sign' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION notiflow.jwt_sign(text, text, jsonb, text) IS
    'A compact JWT of the claims signed ES256 (EC P-256 PEM key or base64url private scalar) or RS256 (RSA PEM key).';
REVOKE EXECUTE ON FUNCTION notiflow.jwt_sign(text, text, jsonb, text) FROM PUBLIC;

CREATE FUNCTION notiflow.p256_point_valid(point bytea)
    RETURNS boolean AS 'MODULE_PATHNAME', 'p256_point_valid' LANGUAGE C IMMUTABLE STRICT;
COMMENT ON FUNCTION notiflow.p256_point_valid(bytea) IS
    'Whether the bytes are an uncompressed point on the P-256 curve (65 bytes, 0x04 first), as a web push p256dh key must be.';

CREATE FUNCTION notiflow.check_push_config(kind text, config jsonb)
    RETURNS void AS 'MODULE_PATHNAME', 'check_push_config' LANGUAGE C STABLE STRICT;
COMMENT ON FUNCTION notiflow.check_push_config(text, jsonb) IS
    'Raises invalid_parameter_value naming the field when an fcm, apns or webpush provider config is wrong.';
