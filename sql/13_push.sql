-- Push: RFC 8291 web push encryption, ES256/RS256 JWTs, the checks of fcm,
-- apns and webpush provider configs, and the requests those adapters build
-- and how they classify the services' own answers.
\set VERBOSITY default
\set SHOW_CONTEXT never
SET client_min_messages = warning;

-- Test keys, made once with openssl genpkey for this test and used nowhere else
-- (they are not secrets): fcm RSA 2048, apns EC P-256, p384 EC P-384, and the
-- VAPID pair (P-256, raw base64url) of the web push provider.
CREATE TEMP TABLE test_keys (name text PRIMARY KEY, pem text);
INSERT INTO test_keys VALUES
('fcm', '-----BEGIN PRIVATE KEY-----
MIIEvgIBADANBgkqhkiG9w0BAQEFAASCBKgwggSkAgEAAoIBAQCtM9TY5dzVi6Pc
AxCf4zJhp0un/pS9pHRMugizcmjSYJlPWkjOmx8ByI8VNOmxkUTzaHEFy86N5nTC
Do2PZXUow9+eWz3Km148wzgdoZw8Znep8YJXHA/JvE8yY3WKrdoXbMNiJGFyIxmW
6Z7tl+NtKIp+gGrQ7n1H64zKcZQTjXDfBzBHHC7T9qYoWUyGR7zw5Sqd632jpX5G
DxPQCdZNxUo6xfEWPHH9k0upAtPpzvZX2Vq9SYO8N3B/+dDgwHfXil9OvDsMAzZT
ePfUKnVx25PDhx+t1hpocfiAxoCWLRDd3DY2nRdgK1wZu9SmzLv4S5L5ZYuJigwC
3Rh8xVxzAgMBAAECggEADM5Hvu+j18AW0eYCHSgxqemyHM4kVi8qECAzE31yhZdx
zl2pA2mRrdKTzagXXTMV63892AVdFL3ExTJJQiBovKZayr0JQQkiuxBd/kbcI9UZ
pN1/2wvumOZM3rde0e2PseqvOXriH4u70R4dy4hO3tu//aFmBGOVrLMcOj2Siq1r
zYScCrAACDVZSEZqaoAoQC+WkqiKOhXGQ5lfoN71mVpxvG7Me7R5iJ7SjBRGqTIf
KQ1vOb3ZDYBFIq/ff2PIUMIQxPoko7/8qAl/6RSeaLfhOG6SaGwysGiFQ8QZCduS
SJhZphZ/9KDk4/2nNgXISsVCEx+4uhdWL3eRcKwRQQKBgQDdOtG1Ar0m3lgOdWLH
/Iep+nGSz8bFKRA5rKqaKk7cov8iYJ/bNrX7KhRS3pxORszaP1IXsfsN7NBtBHY6
gOsfRvRny3Lp5LY1a12rb1LxdRTOgnVEZIhegc4O1UQWZvcmxslWwo251YNfmsCj
vRszsiUPeDY4hQi5Z1nBFdStwQKBgQDIbKI77n1fLMhvuYe3w34L6vgOj0sOgo+L
KeiY6Uxsvwh0rVhOpDkUDPxBXH3jQeneAiYWk4gBdFra20XDerycB5+vw5aUElHQ
9bqrpY9mVJ8mPPx3xs09SDy/hVhe0+kCW53qSYxkKlLzjAdOMv+798VPXXsYEP8n
t8Pa1jR/MwKBgQDRx5HNpEA7GEHFzBgUbWkzjLGftnjUwqCJICtSLuZDICjwr1FG
bLXZ6kgFYOQ08bwVBFBS+cmHpdTqW33E8jSCnyTpO6nHEsKZGytighjTr+NAA8Mx
TGdnvozn0eFToOWiFoQbSjdcTZPa14LugUbHGZk89w/rPnNMZC1fA9V9wQKBgFvb
De+RufvotmQeD8l020vzAIULv0aDJ+6L4oJSSih81Q9Ecvh344EBAouiLD//cYPC
UFqAexDPluQ/IpYYpmCMTe9sIJL0YnL2a/tHAZXQqrAHu13Zyy6O8OiF4J51WJEw
FAvQcXtmumXMg3yfev1W7SMWoNfC0m4NlsGw8pZpAoGBAIptnJ80c6m+2WS5iN3M
5pk1QcPzV/VWEb2rYNwgYZ264nlaumDoexmiId/QmNBEdE3gtPFMHjO+SUn/CUHc
LplBehU2sS4CNmH/KjvpKXS4RtdmI7GEKTrI0iRrtNOHiDkMNa4Ql0Sq+v/wxEFm
AaslP5AUtjyf4Xe1hdtN6k+1
-----END PRIVATE KEY-----
'),
('apns', '-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg8z+uhkec4HV8gRYJ
Z3iDFLb5byHWRPSZus32ZKWTEjqhRANCAATZ2KiwNHyrhVi0u7GIb/kgGVE47+tw
5r4mqLdgoLHS2qXolCOFSkme4C2kOg8cSfQ/vexZ/A2Eiu3iU/0oR/M5
-----END PRIVATE KEY-----
'),
('p384', '-----BEGIN PRIVATE KEY-----
MIG2AgEAMBAGByqGSM49AgEGBSuBBAAiBIGeMIGbAgEBBDB14TZzoZm+LO85eAzj
oR28FYX1PYRGUqpUMWNTBR3sj2WklBIBMULJlE+4NOO4NWihZANiAAQjUneqgM6f
wcqbO7mizlcO2MyQ+0GchjdDgE1U+3rCJI3UxrYsWWWKAQgTz1DRGKaOjTr6C7xZ
cjl8OgfNV4vNVzNYQsAHaQVxve6lQRnasF4ixm6eqnyNbpR7Iace9bk=
-----END PRIVATE KEY-----
'),
('vapid_private', 'UXVZsJDVDZjxs5XE57RIabPCN7IMzgilHQerHXLDR5A'),
('vapid_public', 'BAU97Tj23b08SCXhk7NId4t1TTzhmP4kDc9gsMlL-zo2BpvitwhCY6G4iHWvh0oJSWl7RgkqQjILWIr5siS8-JY');

-- jwt_part(token, n): the n-th part of a compact JWT, decoded (1 header, 2 claims)
CREATE FUNCTION pg_temp.jwt_part(token text, n integer) RETURNS jsonb LANGUAGE sql
AS $$ SELECT convert_from(notiflow.base64url_decode(split_part(token, '.', n)), 'UTF8')::jsonb $$;
-- b64u(bytes): base64url without padding
CREATE FUNCTION pg_temp.b64u(b bytea) RETURNS text LANGUAGE sql
AS $$ SELECT translate(rtrim(replace(encode(b, 'base64'), E'\n', ''), '='), '+/', '-_') $$;

------------------------------------------------ web push encryption (RFC 8291)
-- RFC 8291 Appendix A (public example values): with the example's application
-- server key and salt, the body is the example's, byte for byte
\set rfc_plaintext 'When I grow up, I want to be a watermelon'
\set rfc_ua_public 'BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4'
\set rfc_auth 'BTBZMqHH6r4Tts7J_aSIgg'
\set rfc_as_private 'yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw'
\set rfc_salt 'DGv6ra1nlYgDCS1FRnbzlw'
\set rfc_body 'DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN'
SELECT notiflow.webpush_encrypt(convert_to(:'rfc_plaintext', 'UTF8'), :'rfc_ua_public', :'rfc_auth',
                                :'rfc_as_private', :'rfc_salt', 4096)
       = notiflow.base64url_decode(:'rfc_body') AS rfc8291_appendix_a;
SELECT pg_temp.b64u(notiflow.webpush_encrypt(convert_to(:'rfc_plaintext', 'UTF8'), :'rfc_ua_public', :'rfc_auth',
                                             :'rfc_as_private', :'rfc_salt')) AS body;
-- by default the key pair and the salt are fresh: the header is salt(16) rs(4) idlen(1) keyid(65)
CREATE TEMP TABLE sealed AS
SELECT notiflow.webpush_encrypt(convert_to(:'rfc_plaintext', 'UTF8'), :'rfc_ua_public', :'rfc_auth') AS body
  FROM generate_series(1, 3);
SELECT length(body) AS bytes, substr(body, 17, 4) AS rs, get_byte(body, 20) AS idlen, get_byte(body, 21) AS keyid_first
  FROM sealed LIMIT 1;
SELECT count(DISTINCT substr(body, 1, 16)) AS salts, count(DISTINCT substr(body, 22, 65)) AS keys FROM sealed;
-- the record size is written as given; one record must hold plaintext, delimiter and tag
SELECT substr(notiflow.webpush_encrypt('ab', :'rfc_ua_public', :'rfc_auth', NULL, NULL, 19), 17, 4) AS rs;
SELECT notiflow.webpush_encrypt('abc', :'rfc_ua_public', :'rfc_auth', NULL, NULL, 19);
SELECT notiflow.webpush_encrypt('ab', :'rfc_ua_public', :'rfc_auth', NULL, NULL, 17);
SELECT notiflow.webpush_encrypt(NULL, :'rfc_ua_public', :'rfc_auth') IS NULL AS null_in_null_out;
-- bad subscription keys, application-server key and salt
SELECT notiflow.webpush_encrypt('x', 'BCVxsr7N_eNgVRqvHtD0zTZsEc6', :'rfc_auth');
SELECT notiflow.webpush_encrypt('x', 'BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcyaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4', :'rfc_auth');
SELECT notiflow.webpush_encrypt('x', :'rfc_ua_public', 'BTBZMqHH6r4Tts7J_aSI');
SELECT notiflow.webpush_encrypt('x', :'rfc_ua_public', 'BTBZMqHH6r4Tts7J+aSIgg');
SELECT notiflow.webpush_encrypt('x', :'rfc_ua_public', :'rfc_auth', 'yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ');
SELECT notiflow.webpush_encrypt('x', :'rfc_ua_public', :'rfc_auth', 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA');
SELECT notiflow.webpush_encrypt('x', :'rfc_ua_public', :'rfc_auth', NULL, 'DGv6ra1nlYgDCS1FRnbz');

-------------------------------------------------------------------- JWT
-- ES256 with a PEM key (the APNs .p8 form): header with kid, claims as given, a 64-byte r||s signature
SELECT pg_temp.jwt_part(t, 1) AS header, pg_temp.jwt_part(t, 2) AS claims,
       length(notiflow.base64url_decode(split_part(t, '.', 3))) AS signature_bytes
  FROM (SELECT notiflow.jwt_sign('ES256', pem, '{"iss": "TEAM123456", "iat": 1700000000}', 'KEY1234567') AS t
          FROM test_keys WHERE name = 'apns') s;
-- ES256 with a raw base64url private scalar (VAPID keys); ECDSA signatures differ each time
SELECT pg_temp.jwt_part(t, 1) AS header, length(notiflow.base64url_decode(split_part(t, '.', 3))) AS signature_bytes
  FROM (SELECT notiflow.jwt_sign('ES256', pem, '{"aud": "https://push.example.net"}') AS t
          FROM test_keys WHERE name = 'vapid_private') s;
SELECT count(DISTINCT notiflow.jwt_sign('ES256', :'rfc_as_private', '{"sub": "x"}')) AS distinct_tokens FROM generate_series(1, 3);
-- RS256 (PKCS#1 v1.5) is deterministic: a 256-byte signature, the same for the same claims
SELECT pg_temp.jwt_part(t, 1) AS header, pg_temp.jwt_part(t, 2) AS claims,
       length(notiflow.base64url_decode(split_part(t, '.', 3))) AS signature_bytes
  FROM (SELECT notiflow.jwt_sign('RS256', pem, '{"iss": "sa@example.iam.gserviceaccount.com", "iat": 1}') AS t
          FROM test_keys WHERE name = 'fcm') s;
SELECT count(DISTINCT notiflow.jwt_sign('RS256', pem, '{"iss": "x"}')) AS distinct_tokens
  FROM test_keys, generate_series(1, 3) WHERE name = 'fcm';
-- wrong algorithm, claims or key
SELECT notiflow.jwt_sign('HS256', 'secret', '{}');
SELECT notiflow.jwt_sign('ES256', :'rfc_as_private', '["not", "an", "object"]');
SELECT notiflow.jwt_sign('ES256', pem, '{}') FROM test_keys WHERE name = 'fcm';
SELECT notiflow.jwt_sign('ES256', pem, '{}') FROM test_keys WHERE name = 'p384';
SELECT notiflow.jwt_sign('RS256', pem, '{}') FROM test_keys WHERE name = 'apns';
SELECT notiflow.jwt_sign('RS256', :'rfc_as_private', '{}');
SELECT notiflow.jwt_sign('ES256', 'c2hvcnQ', '{}');
SELECT notiflow.jwt_sign('ES256', 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA', '{}');
SELECT notiflow.jwt_sign('ES256', E'-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n', '{}');
-- jwt_sign signs with any key it is given: not for PUBLIC (webpush_encrypt is)
CREATE ROLE regress_push_user;
SELECT has_function_privilege('regress_push_user', 'notiflow.jwt_sign(text, text, jsonb, text)', 'EXECUTE') AS jwt_sign,
       has_function_privilege('regress_push_user', 'notiflow.webpush_encrypt(bytea, text, text, text, text, integer)', 'EXECUTE') AS webpush_encrypt;
DROP ROLE regress_push_user;

------------------------------------------------------- provider configs
-- valid configs of each kind are accepted, and their secrets redacted
CREATE TEMP TABLE configs AS
SELECT jsonb_build_object('service_account', jsonb_build_object(
           'type', 'service_account', 'project_id', 'notiflow-test', 'private_key_id', 'k1',
           'private_key', (SELECT pem FROM test_keys WHERE name = 'fcm'),
           'client_email', 'notiflow@notiflow-test.iam.gserviceaccount.com',
           'token_uri', 'https://oauth2.googleapis.com/token')) AS fcm,
       jsonb_build_object('team_id', 'TEAM123456', 'key_id', 'KEY1234567', 'topic', 'com.example.shop',
           'private_key', (SELECT pem FROM test_keys WHERE name = 'apns')) AS apns,
       jsonb_build_object('vapid_public_key', (SELECT pem FROM test_keys WHERE name = 'vapid_public'),
           'vapid_private_key', (SELECT pem FROM test_keys WHERE name = 'vapid_private'),
           'subject', 'mailto:ops@example.com') AS webpush;
SELECT notiflow.put_provider('push-fcm', 'push', 'fcm', fcm) FROM configs;
SELECT notiflow.put_provider('push-apns', 'push', 'apns',
                             apns || '{"environment": "sandbox", "priority": 10, "ttl": 0}') FROM configs;
SELECT notiflow.put_provider('push-webpush', 'push', 'webpush',
                             webpush || '{"ttl": 3600, "urgency": "high", "topic": "orders"}') FROM configs;
SELECT name, kind, config ->> 'service_account' AS service_account, config ->> 'private_key' AS private_key,
       config ->> 'vapid_private_key' AS vapid_private_key, config ->> 'vapid_public_key' IS NOT NULL AS public_key_shown
  FROM notiflow.providers_redacted WHERE name LIKE 'push-%' ORDER BY name;

-- fcm: put_provider runs the checks; each names the field
SELECT notiflow.put_provider('push-bad', 'push', 'fcm', '{"service_account": "{\"type\": \"service_account\"}"}');
SELECT notiflow.put_provider('push-bad', 'push', 'fcm', jsonb_set(fcm, '{service_account}', (fcm -> 'service_account') - 'client_email')) FROM configs;
SELECT notiflow.put_provider('push-bad', 'push', 'fcm', jsonb_set(fcm, '{service_account}', (fcm -> 'service_account') - 'private_key')) FROM configs;
SELECT notiflow.put_provider('push-bad', 'push', 'fcm', jsonb_set(fcm, '{service_account}', (fcm -> 'service_account') - 'project_id')) FROM configs;
SELECT notiflow.put_provider('push-bad', 'push', 'fcm', jsonb_set(fcm, '{service_account}', (fcm -> 'service_account') - 'token_uri')) FROM configs;
SELECT notiflow.put_provider('push-bad', 'push', 'fcm', jsonb_set(fcm, '{service_account,client_email}', '"notiflow"')) FROM configs;
SELECT notiflow.put_provider('push-bad', 'push', 'fcm', jsonb_set(fcm, '{service_account,project_id}', '"a/../b"')) FROM configs;
SELECT notiflow.put_provider('push-bad', 'push', 'fcm', jsonb_set(fcm, '{service_account,token_uri}', '"ftp://x"')) FROM configs;
SELECT notiflow.put_provider('push-bad', 'push', 'fcm', jsonb_set(fcm, '{service_account,private_key}', to_jsonb(pem)))
  FROM configs, test_keys WHERE name = 'apns';
SELECT notiflow.put_provider('push-bad', 'push', 'fcm', jsonb_set(fcm, '{service_account,private_key}', '"MIIEvgIBADANBgkqhkiG9w0BAQEFAASC"')) FROM configs;
-- apns
SELECT notiflow.put_provider('push-bad', 'push', 'apns', jsonb_set(apns, '{private_key}', to_jsonb(pem)))
  FROM configs, test_keys WHERE name = 'fcm';
SELECT notiflow.put_provider('push-bad', 'push', 'apns', jsonb_set(apns, '{private_key}', to_jsonb(pem)))
  FROM configs, test_keys WHERE name = 'p384';
SELECT notiflow.put_provider('push-bad', 'push', 'apns', jsonb_set(apns, '{private_key}', to_jsonb(pem)))
  FROM configs, test_keys WHERE name = 'vapid_private';
SELECT notiflow.put_provider('push-bad', 'push', 'apns', apns || '{"team_id": "TEAM12345"}') FROM configs;
SELECT notiflow.put_provider('push-bad', 'push', 'apns', apns || '{"key_id": "KEY-123456"}') FROM configs;
SELECT notiflow.put_provider('push-bad', 'push', 'apns', apns || '{"environment": "development"}') FROM configs;
SELECT notiflow.put_provider('push-bad', 'push', 'apns', apns || '{"environment": true}') FROM configs;
SELECT notiflow.put_provider('push-bad', 'push', 'apns', apns || '{"topic": "com.example shop"}') FROM configs;
SELECT notiflow.put_provider('push-bad', 'push', 'apns', apns || '{"priority": 7}') FROM configs;
SELECT notiflow.put_provider('push-bad', 'push', 'apns', apns || '{"ttl": -1}') FROM configs;
-- webpush
SELECT notiflow.put_provider('push-bad', 'push', 'webpush', webpush || '{"vapid_public_key": "BAU97Tj23b08SCXhk7NId4t1TTzhmP4kDc9gsMlL"}') FROM configs;
SELECT notiflow.put_provider('push-bad', 'push', 'webpush', webpush || jsonb_build_object('vapid_public_key',
           pg_temp.b64u(set_byte(notiflow.base64url_decode(webpush ->> 'vapid_public_key'), 0, 2)))) FROM configs;
SELECT notiflow.put_provider('push-bad', 'push', 'webpush', webpush || jsonb_build_object('vapid_public_key',
           pg_temp.b64u(set_byte(notiflow.base64url_decode(webpush ->> 'vapid_public_key'), 40, 0)))) FROM configs;
SELECT notiflow.put_provider('push-bad', 'push', 'webpush', webpush || '{"vapid_private_key": "UXVZsJDVDZjxs5XE57RIabPCN7IMzgilHQerHXLDR5"}') FROM configs;
SELECT notiflow.put_provider('push-bad', 'push', 'webpush', webpush || jsonb_build_object('vapid_private_key', :'rfc_as_private')) FROM configs;
SELECT notiflow.put_provider('push-bad', 'push', 'webpush', webpush || '{"subject": "http://example.com/contact"}') FROM configs;
SELECT notiflow.put_provider('push-bad', 'push', 'webpush', webpush || '{"subject": "ops@example.com"}') FROM configs;
SELECT notiflow.put_provider('push-bad', 'push', 'webpush', webpush || '{"urgency": "urgent"}') FROM configs;
SELECT notiflow.put_provider('push-bad', 'push', 'webpush', webpush || '{"topic": "a topic with spaces"}') FROM configs;
SELECT notiflow.put_provider('push-bad', 'push', 'webpush', webpush || '{"ttl": 1.5}') FROM configs;
SELECT notiflow.put_provider('push-bad', 'push', 'webpush', webpush || '{"ttl": 2419201}') FROM configs;
SELECT count(*) AS bad_providers_stored FROM notiflow.providers WHERE name = 'push-bad';
-- check_push_config is also callable on its own
SELECT notiflow.check_push_config('webpush', webpush) FROM configs;
SELECT notiflow.check_push_config('sendgrid', '{}');
SELECT notiflow.check_push_config('fcm', '[]');

---------------------------------------------------------------- fcm
-- no access token cached in this backend: the request is the service
-- account's token request (an RS256 JWT bearer assertion to token_uri)
CREATE TEMP TABLE fcm_preview AS
SELECT p FROM notiflow.provider_preview('push-fcm', 'fcm-token-0001',
         '{"title": "Order shipped", "body": "Hello Ann", "data": {"order": "A-1"}}') p;
SELECT p ->> 'url' AS url, p -> 'headers' AS headers, split_part(p ->> 'body', '&', 1) AS grant_type
  FROM fcm_preview;
SELECT pg_temp.jwt_part(a, 1) AS header, pg_temp.jwt_part(a, 2) - 'iat' - 'exp' AS claims,
       (pg_temp.jwt_part(a, 2) ->> 'exp')::bigint - (pg_temp.jwt_part(a, 2) ->> 'iat')::bigint AS lifetime_s,
       abs((pg_temp.jwt_part(a, 2) ->> 'iat')::bigint - extract(epoch FROM now())::bigint) < 60 AS iat_is_now
  FROM (SELECT substr(split_part(p ->> 'body', '&', 2), length('assertion=') + 1) AS a FROM fcm_preview) s;
-- previewed again at once, it shows the token request again (a preview holds back no request)
SELECT p ->> 'url' = (SELECT p ->> 'url' FROM fcm_preview) AS token_request_again, p ->> 'defer_ms' AS defer_ms
  FROM notiflow.provider_preview('push-fcm', 'fcm-token-0001', '{"title": "x"}') p;
-- a delivery without a token cannot be sent
SELECT notiflow.provider_preview('push-fcm', NULL, '{"title": "x"}');

-- the token endpoint's answers (purpose 1): a token means "send again now"
CREATE TEMP TABLE answers (kind text, n int, label text, status int, headers text[], body text,
                           curl_code int DEFAULT 0, purpose int DEFAULT 0);
CREATE TEMP VIEW classified AS
SELECT a.kind, a.n, a.label,
       c ->> 'outcome' || CASE WHEN (c ->> 'recipient_fault')::boolean THEN ', recipient' ELSE '' END AS outcome,
       c ->> 'message_id' AS message_id,
       (c ->> 'retry_after_ms')::int AS retry_ms, c ->> 'error' AS error
  FROM answers a, notiflow.provider_classify(a.kind, a.status, a.headers, a.body, a.curl_code, a.purpose) c;
INSERT INTO answers (kind, n, label, status, headers, body, curl_code, purpose) VALUES
('fcm', 1, 'token', 200, '{"Content-Type: application/json; charset=utf-8"}',
 '{"access_token": "ya29.c.b0Aaekm1K-test-token", "expires_in": 3599, "token_type": "Bearer"}', 0, 1),
('fcm', 2, 'bad signature', 400, NULL, '{"error": "invalid_grant", "error_description": "Invalid JWT Signature."}', 0, 1),
('fcm', 3, 'deleted account', 401, NULL, '{"error": "invalid_client", "error_description": "The OAuth client was not found."}', 0, 1),
('fcm', 4, 'no token in 200', 200, NULL, '{"token_type": "Bearer"}', 0, 1),
('fcm', 5, 'token too short-lived', 200, NULL, '{"access_token": "ya29.x", "expires_in": 30}', 0, 1),
('fcm', 6, 'unavailable', 503, '{"Retry-After: 5"}', 'Service Unavailable', 0, 1),
('fcm', 7, 'timeout', 0, NULL, NULL, 28, 1),
('fcm', 8, 'token with a line break', 200, NULL, '{"access_token": "ya29.x\r\nX-Evil: 1", "expires_in": 3599}', 0, 1),
('fcm', 9, 'token forever', 200, NULL, '{"access_token": "ya29.long", "expires_in": 1e300}', 0, 1);
SELECT n, label, outcome, message_id, retry_ms, error FROM classified WHERE kind = 'fcm' AND n < 10 ORDER BY n;

-- messages:send answers (purpose 0)
INSERT INTO answers (kind, n, label, status, headers, body) VALUES
('fcm', 11, 'sent', 200, NULL, '{"name": "projects/notiflow-test/messages/0:1500415314455276%31bd1c9631bd1c96"}'),
('fcm', 12, 'unregistered', 404, NULL,
 '{"error": {"code": 404, "message": "Requested entity was not found.", "status": "NOT_FOUND", "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "UNREGISTERED"}]}}'),
('fcm', 13, 'malformed token', 400, NULL,
 '{"error": {"code": 400, "message": "The registration token is not a valid FCM registration token", "status": "INVALID_ARGUMENT", "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "INVALID_ARGUMENT"}]}}'),
('fcm', 14, 'token field violation', 400, NULL,
 '{"error": {"code": 400, "message": "Request contains an invalid argument.", "status": "INVALID_ARGUMENT", "details": [{"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": [{"field": "message.token", "description": "Invalid registration token"}]}]}}'),
('fcm', 15, 'bad payload', 400, NULL,
 '{"error": {"code": 400, "message": "Invalid JSON payload received. Unknown name \"badge\" at ''message.notification'': Cannot find field.", "status": "INVALID_ARGUMENT", "details": [{"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": [{"field": "message.notification", "description": "Invalid JSON payload received. Unknown name \"badge\""}]}]}}'),
('fcm', 16, 'access token expired', 401, NULL,
 '{"error": {"code": 401, "message": "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.", "status": "UNAUTHENTICATED"}}'),
('fcm', 17, 'APNs certificate refused', 401, NULL,
 '{"error": {"code": 401, "message": "Auth error from APNS or Web Push Service", "status": "UNAUTHENTICATED", "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "THIRD_PARTY_AUTH_ERROR"}]}}'),
('fcm', 18, 'sender id mismatch', 403, NULL,
 '{"error": {"code": 403, "message": "SenderId mismatch", "status": "PERMISSION_DENIED", "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "SENDER_ID_MISMATCH"}]}}'),
('fcm', 19, 'quota exceeded', 429, '{"Retry-After: 30"}',
 '{"error": {"code": 429, "message": "Quota exceeded for quota metric", "status": "RESOURCE_EXHAUSTED", "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "QUOTA_EXCEEDED"}]}}'),
('fcm', 20, 'unavailable', 503, NULL,
 '{"error": {"code": 503, "message": "The service is currently unavailable.", "status": "UNAVAILABLE", "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "UNAVAILABLE"}]}}'),
('fcm', 21, 'internal', 500, NULL,
 '{"error": {"code": 500, "message": "Internal error encountered.", "status": "INTERNAL", "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "INTERNAL"}]}}'),
('fcm', 22, 'html gateway error', 502, NULL, '<html><body>Bad Gateway</body></html>');
SELECT n, label, outcome, message_id, retry_ms, error FROM classified WHERE kind = 'fcm' AND n > 10 ORDER BY n;

---------------------------------------------------------------- apns
-- sandbox host, the ES256 provider token (kid = key_id, iss = team_id), topic,
-- push type, priority and expiration; data keys beside "aps"
CREATE TEMP TABLE apns_preview AS
SELECT p FROM notiflow.provider_preview('push-apns', '7a4f0c1e9b2d8a6f3c5e1b0d9a8f7e6d5c4b3a291807f6e5d4c3b2a190817263',
         '{"title": "Order shipped", "body": "Hello Ann", "data": {"order": "A-1", "aps": "ignored"}}') p;
SELECT p ->> 'url' AS url, (SELECT jsonb_agg(h) FROM jsonb_array_elements_text(p -> 'headers') h
                              WHERE h NOT LIKE 'authorization:%') AS headers,
       (p ->> 'body')::jsonb AS body
  FROM apns_preview;
SELECT pg_temp.jwt_part(t, 1) AS header, pg_temp.jwt_part(t, 2) - 'iat' AS claims,
       abs((pg_temp.jwt_part(t, 2) ->> 'iat')::bigint - extract(epoch FROM now())::bigint) < 60 AS iat_is_now
  FROM (SELECT substr(h, length('authorization: bearer ') + 1) AS t
          FROM apns_preview, jsonb_array_elements_text(p -> 'headers') h WHERE h LIKE 'authorization:%') s;
-- the provider token is reused (Apple refuses tokens renewed more often than every 20 minutes)
SELECT count(DISTINCT h) AS distinct_provider_tokens
  FROM generate_series(1, 3) g, notiflow.provider_preview('push-apns', 'abcdef0123456789', jsonb_build_object('title', g)) p,
       jsonb_array_elements_text(p -> 'headers') h
 WHERE h LIKE 'authorization:%';
-- production is the default host; base_url replaces it; device tokens are hex
SELECT notiflow.put_provider('push-apns-prod', 'push', 'apns', apns) FROM configs;
SELECT p ->> 'url' AS url, (SELECT jsonb_agg(h) FROM jsonb_array_elements_text(p -> 'headers') h
                              WHERE h NOT LIKE 'authorization:%') AS headers
  FROM notiflow.provider_preview('push-apns-prod', 'abcdef0123456789', '{"title": "x"}') p;
SELECT notiflow.put_provider('push-apns-prod', 'push', 'apns', apns || '{"base_url": "https://127.0.0.1:8443/"}') FROM configs;
SELECT p ->> 'url' AS url FROM notiflow.provider_preview('push-apns-prod', 'ABCDEF0123456789', '{"title": "x"}') p;
SELECT notiflow.provider_preview('push-apns-prod', 'abc/../../x', '{"title": "x"}');

INSERT INTO answers (kind, n, label, status, headers, body) VALUES
('apns', 1, 'sent', 200, '{"apns-id: 6E1E7E9A-3A7B-4C2D-9F4B-7E0A1B2C3D4E", "apns-unique-id: 3f2b9c1e-4d5a-6b7c-8d9e-0f1a2b3c4d5e"}', ''),
('apns', 2, 'bad device token', 400, '{"apns-id: 6E1E7E9A-3A7B-4C2D-9F4B-7E0A1B2C3D4F"}', '{"reason": "BadDeviceToken"}'),
('apns', 3, 'unregistered', 410, NULL, '{"reason": "Unregistered", "timestamp": 1700000000000}'),
('apns', 4, 'token for another app', 400, NULL, '{"reason": "DeviceTokenNotForTopic"}'),
('apns', 5, 'bad payload', 400, NULL, '{"reason": "PayloadEmpty"}'),
('apns', 6, 'provider token expired', 403, NULL, '{"reason": "ExpiredProviderToken"}'),
('apns', 7, 'provider token invalid', 403, NULL, '{"reason": "InvalidProviderToken"}'),
('apns', 8, 'payload too large', 413, NULL, '{"reason": "PayloadTooLarge"}'),
('apns', 9, 'too many requests', 429, '{"Retry-After: 10"}', '{"reason": "TooManyRequests"}'),
('apns', 10, 'too many token updates', 429, NULL, '{"reason": "TooManyProviderTokenUpdates"}'),
('apns', 11, 'internal error', 500, NULL, '{"reason": "InternalServerError"}'),
('apns', 12, 'unavailable', 503, NULL, '{"reason": "ServiceUnavailable"}'),
('apns', 13, 'connection refused', 0, NULL, NULL);
UPDATE answers SET curl_code = 7 WHERE kind = 'apns' AND n = 13;
SELECT n, label, outcome, message_id, retry_ms, error FROM classified WHERE kind = 'apns' ORDER BY n;

------------------------------------------------------------- webpush
-- the recipient is the subscription; the request goes to its endpoint with
-- the aes128gcm body and a VAPID JWT for the endpoint's origin
\set subscription '{"endpoint": "https://push.example.net:443/wpush/v2/gAAAAABk", "keys": {"p256dh": "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4", "auth": "BTBZMqHH6r4Tts7J_aSIgg"}}'
CREATE TEMP TABLE webpush_preview AS
SELECT p FROM notiflow.provider_preview('push-webpush', :'subscription',
         '{"title": "Order shipped", "body": "Hello Ann", "data": {"order": "A-1"}}') p;
SELECT p ->> 'url' AS url, (SELECT jsonb_agg(h) FROM jsonb_array_elements_text(p -> 'headers') h
                              WHERE h NOT LIKE 'Authorization:%') AS headers
  FROM webpush_preview;
SELECT pg_temp.jwt_part(t, 1) AS header, pg_temp.jwt_part(t, 2) - 'exp' AS claims,
       (pg_temp.jwt_part(t, 2) ->> 'exp')::bigint - extract(epoch FROM now())::bigint BETWEEN 43140 AND 43260 AS exp_in_12h,
       k = (SELECT pem FROM test_keys WHERE name = 'vapid_public') AS k_is_vapid_public_key
  FROM (SELECT substring(h FROM 'vapid t=([^,]+), ') AS t, substring(h FROM ', k=(.+)$') AS k
          FROM webpush_preview, jsonb_array_elements_text(p -> 'headers') h WHERE h LIKE 'Authorization:%') s;
-- the VAPID JWT is reused per origin; another origin gets its own
SELECT count(DISTINCT h) AS distinct_vapid_tokens
  FROM generate_series(1, 3) g, notiflow.provider_preview('push-webpush', :'subscription', jsonb_build_object('title', g)) p,
       jsonb_array_elements_text(p -> 'headers') h
 WHERE h LIKE 'Authorization:%';
SELECT pg_temp.jwt_part(substring(h FROM 'vapid t=([^,]+), '), 2) ->> 'aud' AS aud
  FROM notiflow.provider_preview('push-webpush',
         '{"endpoint": "https://Updates.Push.Example.ORG:8443/wpush/v1/x?y=1", "keys": {"p256dh": "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4", "auth": "BTBZMqHH6r4Tts7J_aSIgg"}}',
         '{"title": "x"}') p, jsonb_array_elements_text(p -> 'headers') h
 WHERE h LIKE 'Authorization:%';
-- TTL defaults to a day
SELECT notiflow.put_provider('push-webpush-plain', 'push', 'webpush', webpush) FROM configs;
SELECT (SELECT jsonb_agg(h) FROM jsonb_array_elements_text(p -> 'headers') h WHERE h NOT LIKE 'Authorization:%') AS headers
  FROM notiflow.provider_preview('push-webpush-plain', :'subscription', '{"title": "x"}') p;
-- a public key configured with base64 padding is sent without it (k= is unpadded base64url)
SELECT notiflow.put_provider('push-webpush-padded', 'push', 'webpush',
                             webpush || jsonb_build_object('vapid_public_key', (webpush ->> 'vapid_public_key') || '='))
  FROM configs;
SELECT substring(h FROM ', k=(.+)$') = (SELECT webpush ->> 'vapid_public_key' FROM configs) AS k_unpadded
  FROM notiflow.provider_preview('push-webpush-padded', :'subscription', '{"title": "x"}') p,
       jsonb_array_elements_text(p -> 'headers') h
 WHERE h LIKE 'Authorization:%';
-- recipients that are not subscriptions, and content too large for one push message
SELECT notiflow.provider_preview('push-webpush', 'https://push.example.net/x', '{"title": "x"}');
SELECT notiflow.provider_preview('push-webpush', '{"endpoint": "ftp://push.example.net/x", "keys": {"p256dh": "x", "auth": "y"}}', '{}');
SELECT notiflow.provider_preview('push-webpush', '{"endpoint": "https://push.example.net/x", "keys": {"auth": "y"}}', '{}');
SELECT notiflow.provider_preview('push-webpush', '{"endpoint": "https://push.example.net/x", "keys": {"p256dh": "BCVx", "auth": "BTBZMqHH6r4Tts7J_aSIgg"}}', '{}');
SELECT notiflow.provider_preview('push-webpush', :'subscription', jsonb_build_object('title', repeat('x', 4000)));

INSERT INTO answers (kind, n, label, status, headers, body) VALUES
('webpush', 1, 'created', 201, '{"Location: https://push.example.net/m/gAAAAABkZ3J1", "TTL: 3600"}', ''),
('webpush', 2, 'accepted (no location)', 202, NULL, ''),
('webpush', 3, 'subscription gone', 410, NULL, '{"code": 410, "errno": 106, "error": "Gone", "message": "Request did not validate: subscription expired"}'),
('webpush', 4, 'subscription not found', 404, NULL, 'Not Found'),
('webpush', 5, 'payload too large', 413, NULL, '{"code": 413, "errno": 104, "error": "Payload Too Large"}'),
('webpush', 6, 'too many requests', 429, '{"Retry-After: 60"}', ''),
('webpush', 7, 'VAPID refused', 403, NULL, '{"code": 403, "errno": 109, "error": "Forbidden", "message": "Request did not validate: invalid JWT"}'),
('webpush', 8, 'bad request', 400, NULL, '{"code": 400, "errno": 110, "error": "Bad Request", "message": "Invalid TTL header"}'),
('webpush', 9, 'server error', 500, NULL, '');
SELECT n, label, outcome, message_id, retry_ms, error FROM classified WHERE kind = 'webpush' ORDER BY n;
