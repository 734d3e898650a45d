-- Subscribers and providers: upserts, validation errors naming the field, redaction.
\set VERBOSITY default
\set SHOW_CONTEXT never
SET client_min_messages = warning;

SELECT notiflow.put_subscriber('ann', '{"name": "Ann", "email": "ann@example.com", "phone": "+15551234567",
                                        "locale": "en-GB", "timezone": "Europe/London",
                                        "data": {"plan": "gold"},
                                        "chat": {"slack": "U123"},
                                        "preferences": {"channels": {"sms": false},
                                                        "workflows": {"digest": false, "promo": {"email": false}}}}');
-- partial update keeps other attributes
SELECT notiflow.put_subscriber('ann', '{"name": "Ann B."}');
SELECT id, name, email, phone, locale, timezone, data, chat, preferences FROM notiflow.subscribers;
-- addresses reported invalid stay invalid while the subscriber has them (before, any change of a
-- contact attribute made them all valid again); those it no longer has are forgotten
SELECT notiflow.put_subscriber('cal', '{"email": "cal@example.com", "phone": "+15551230000", "chat": {"slack": "U123"},
                                        "push": {"fcm": ["fcm-token-0001"], "webpush": [{"endpoint": "https://push.example.com/1",
                                                 "keys": {"p256dh": "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4", "auth": "BTBZMqHH6r4Tts7J_aSIgg"}}]}}');
UPDATE notiflow.subscribers
   SET invalid_addresses = ARRAY['cal@example.com', '+15551230000', 'U123', 'fcm-token-0001', push -> 'webpush' ->> 0]
 WHERE id = 'cal';
SELECT notiflow.put_subscriber('cal', '{"phone": "+15557654321", "email": "cal@example.com"}');
SELECT string_agg(CASE WHEN x LIKE '{%' THEN '(the web push subscription)' ELSE x END, ', ' ORDER BY o) AS invalid
  FROM notiflow.subscribers, unnest(invalid_addresses) WITH ORDINALITY AS u(x, o) WHERE id = 'cal';
SELECT notiflow.put_subscriber('cal', '{"email": "cal.b@example.com", "chat": {"slack": "U999"}, "push": {"fcm": ["fcm-token-0001"]}}');
SELECT invalid_addresses FROM notiflow.subscribers WHERE id = 'cal';
DELETE FROM notiflow.subscribers WHERE id = 'cal';

-- every attribute is checked; the detail names the field
SELECT notiflow.put_subscriber('bob', '{"email": "not-an-email"}');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT notiflow.put_subscriber('bob', '{"email": "bob,eve@example.com"}');
SELECT notiflow.put_subscriber('bob', '{"email": "bob@example.com."}');
-- the one email rule (the engine's inline and rendered addresses follow the same)
SELECT a AS address, notiflow.email_address_valid(a) AS valid
  FROM unnest(ARRAY['ann@example.com', 'a.b+tag@mail.example.co.uk', 'a@b', '@example.com', 'a@.example.com',
                    'a@example.com.', '.a@example.com', 'a.@example.com', 'a..b@example.com', 'a@example..com',
                    'a,b@example.com', 'a;b@example.com', '"a"@example.com', 'a b@example.com', 'a@b@example.com']) a;
-- controls and spaces, Unicode's too, whatever the collation (shown by number: they do not print); other letters are fine
SELECT n, notiflow.email_address_valid(a) AS valid
  FROM unnest(ARRAY[E'a\tb@example.com', E'a\u00a0b@example.com', E'a@exa\u2003mple.com', E'a\u0085@example.com',
                    E'\ufeffa@example.com', E'a@example.com\u007f', E'jos\u00e9@example.com']) WITH ORDINALITY AS u(a, n);
SELECT notiflow.email_address_valid(E'a\u00a0b@example.com' COLLATE "C") AS c_collation;
SET standard_conforming_strings = off;  -- the check does not depend on the session's setting
SELECT notiflow.put_subscriber('bob', '{"email": "bob\\\\x@example.com"}');
RESET standard_conforming_strings;
SELECT notiflow.put_subscriber('bob', '{"phone": "555-1234"}');
SELECT notiflow.put_subscriber('bob', '{"timezone": "Mars/Olympus"}');
SELECT notiflow.put_subscriber('bob', '{"locale": "english please"}');
SELECT notiflow.put_subscriber('bob', '{"nickname": "B"}');
SELECT notiflow.put_subscriber('bob', '{"data": [1, 2]}');
SELECT notiflow.put_subscriber('bob', '{"preferences": {"channels": {"fax": false}}}');
SELECT notiflow.put_subscriber('bob', '{"preferences": {"workflows": {"promo": "no"}}}');
SELECT notiflow.put_subscriber('bob', '{"push": {"fcm": "token"}}');
SELECT notiflow.put_subscriber('bob', '{"push": {"webpush": [{"endpoint": "http://push.example.com/x", "keys": {}}]}}');
SELECT notiflow.put_subscriber('bob', '{"push": {"webpush": [{"endpoint": "https://push.example.com/x", "keys": {"p256dh": "AAAA", "auth": "BTBZMqHH6r4Tts7J_aSIgg"}}]}}');
-- 65 bytes with 0x04 first, but not on the curve (x = y = 0)
SELECT notiflow.put_subscriber('bob', '{"push": {"webpush": [{"endpoint": "https://push.example.com/x", "keys": {"p256dh": "BAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "auth": "BTBZMqHH6r4Tts7J_aSIgg"}}]}}');
SELECT notiflow.put_subscriber('', '{}');
SELECT notiflow.put_subscriber('bob', '[]');
-- copied into every execution that reaches them: bounded by notiflow.max_payload_size, as a payload
SET notiflow.max_payload_size = '1kB';
SELECT notiflow.put_subscriber('bob', jsonb_build_object('data', jsonb_build_object('notes', repeat('x', 2000))));
SELECT notiflow.put_subscriber('bob', jsonb_build_object('data', jsonb_build_object('notes', repeat('x', 700))));
-- attributes given one call at a time add up: the subscriber as a whole is bounded
SELECT notiflow.put_subscriber('bob', jsonb_build_object('chat', jsonb_build_object('slack', repeat('y', 700))));
SELECT octet_length(data::text) > 700 AS data_kept, chat = '{}' AS chat_unchanged FROM notiflow.subscribers WHERE id = 'bob';
-- one too large already (the limit lowered since) may still shrink, and take small changes
SET notiflow.max_payload_size = '2kB';
SELECT notiflow.put_subscriber('bob', jsonb_build_object('chat', jsonb_build_object('slack', repeat('y', 700))));
SET notiflow.max_payload_size = '1kB';
SELECT notiflow.put_subscriber('bob', '{"email": "bob@example.com", "preferences": {"channels": {"email": false}}}');
SELECT notiflow.put_subscriber('bob', jsonb_build_object('name', repeat('n', 1100)));
SELECT notiflow.put_subscriber('bob', '{"data": {}}');
SELECT email, preferences, data, length(chat ->> 'slack') AS slack FROM notiflow.subscribers WHERE id = 'bob';
RESET notiflow.max_payload_size;
SELECT count(*) AS bobs FROM notiflow.subscribers WHERE id = 'bob';
DELETE FROM notiflow.subscribers WHERE id = 'bob';

-- a valid web push subscription (RFC 8291 example keys)
SELECT notiflow.put_subscriber('carol', '{"push": {"fcm": ["fcm-token-0001"], "webpush": [{"endpoint": "https://push.example.com/sub/1",
  "keys": {"p256dh": "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4",
           "auth": "BTBZMqHH6r4Tts7J_aSIgg"}}]}}');
SELECT jsonb_array_length(push -> 'webpush') AS webpush_devices FROM notiflow.subscribers WHERE id = 'carol';

-- providers
SELECT notiflow.put_provider('sendgrid-main', 'email', 'sendgrid', '{"api_key": "SG.secret", "from": "shop@example.com"}');
SELECT notiflow.put_provider('ses-backup', 'email', 'ses',
       '{"access_key_id": "AKID", "secret_access_key": "shh", "region": "eu-west-1", "from": "shop@example.com"}', 10);
SELECT notiflow.put_provider('slack-ops', 'chat', 'slack', '{"token": "xoxb-1", "channel": "#ops"}');
SELECT notiflow.put_provider('sendgrid-main', 'email', 'sendgrid',
       '{"api_key": "SG.rotated", "from": "shop@example.com", "max_attempts": 3}', 0, true);
SELECT name, channel, kind, config, priority, enabled FROM notiflow.providers_redacted ORDER BY name;

SELECT notiflow.put_provider('p', 'fax', 'sendgrid', '{}');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT notiflow.put_provider('p', 'email', 'postmark', '{}');
SELECT notiflow.put_provider('p', 'sms', 'sendgrid', '{"api_key": "k", "from": "a@b.co"}');
SELECT notiflow.put_provider('p', 'email', 'mailgun', '{"api_key": "k"}');
SELECT notiflow.put_provider('p', 'chat', 'slack', '{"token": "xoxb"}');
SELECT notiflow.put_provider('p', 'email', 'sendgrid', '{"api_key": "k", "from": "a@b.co", "max_attempts": 0}');
SELECT notiflow.put_provider('p', 'email', 'sendgrid', '{"api_key": "k", "from": "a@b.co", "timeout_ms": 10000000000}');
SELECT notiflow.put_provider('p', 'email', 'sendgrid', '{"api_key": "k", "from": "a@b.co", "base_url": "ftp://x"}');
SELECT notiflow.put_provider('p', 'email', 'sendgrid', '{"api_key": "k", "from": "a@b.co", "backoff_min_ms": 900, "backoff_max_ms": 100}');
SELECT notiflow.put_provider('bad name', 'email', 'sendgrid', '{"api_key": "k", "from": "a@b.co"}');
SELECT count(*) AS providers FROM notiflow.providers;
-- a test message goes to one address: a list would reach everyone in it; nothing is queued
SELECT notiflow.send_test('sendgrid-main', 'a@example.com, b@example.org');
SELECT notiflow.send_test('sendgrid-main', 'ann@.example.com');
SELECT count(*) AS test_messages FROM notiflow.deliveries WHERE execution_id = 0;
