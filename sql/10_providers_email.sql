-- Email adapters (smtp, sendgrid, mailgun, ses): the request each one builds,
-- the errors it raises for what it cannot send, and how it classifies answers.
\set VERBOSITY default
\set SHOW_CONTEXT never
SET client_min_messages = warning;

-- The request an adapter builds, with the body parsed (JSON) and credentials apart.
CREATE FUNCTION pg_temp.request(provider text, recipient text, content jsonb)
RETURNS TABLE (url text, headers jsonb, username text, password text, aws_sigv4 text, body jsonb)
LANGUAGE sql AS $$
    SELECT p ->> 'url', p -> 'headers', p ->> 'username', p ->> 'password', p ->> 'aws_sigv4',
           CASE WHEN p ->> 'body' LIKE '{%' THEN (p ->> 'body')::jsonb END
      FROM notiflow.provider_preview(provider, recipient, content) p
$$;
-- Decodes one percent-encoded form value.
CREATE FUNCTION pg_temp.url_decode(s text) RETURNS text LANGUAGE sql AS $$
    SELECT convert_from(coalesce(string_agg(CASE WHEN m[1] LIKE '\%%' THEN decode(substr(m[1], 2), 'hex')
                                                 ELSE convert_to(m[1], 'UTF8') END, ''::bytea ORDER BY n), ''), 'UTF8')
      FROM regexp_matches(s, '(%[0-9A-F]{2}|[^%]+)', 'g') WITH ORDINALITY AS t(m, n)
$$;
-- The fields of an application/x-www-form-urlencoded body, in order.
CREATE FUNCTION pg_temp.form(provider text, recipient text, content jsonb)
RETURNS TABLE (field text, value text) LANGUAGE sql AS $$
    SELECT pg_temp.url_decode(split_part(pair, '=', 1)), pg_temp.url_decode(split_part(pair, '=', 2))
      FROM notiflow.provider_preview(provider, recipient, content) p,
           regexp_split_to_table(p ->> 'body', '&') WITH ORDINALITY AS t(pair, n)
     ORDER BY n
$$;
-- The error build raises, as one row (NULL columns when it builds).
CREATE FUNCTION pg_temp.build_error(provider text, recipient text, content jsonb,
                                    OUT code text, OUT message text, OUT detail text)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM notiflow.provider_preview(provider, recipient, content);
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS code = RETURNED_SQLSTATE, message = MESSAGE_TEXT, detail = PG_EXCEPTION_DETAIL;
END;
$$;

-- SendGrid's from object for a configured from, or the error detail.
CREATE FUNCTION pg_temp.sendgrid_from(f text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    detail text;
BEGIN
    UPDATE notiflow.providers SET config = config || jsonb_build_object('from', f) WHERE name = 'email-sendgrid';
    RETURN (SELECT r.body -> 'from' FROM pg_temp.request('email-sendgrid', 'ann@example.com', '{"subject": "s", "text": "t"}') r);
EXCEPTION WHEN invalid_parameter_value THEN
    GET STACKED DIAGNOSTICS detail = PG_EXCEPTION_DETAIL;
    RETURN detail;
END;
$$;

\set mail '{"subject": "Order 42 shipped", "text": "Hello Ann,\\nit is on its way.", "html": "<p>Hello <b>Ann</b></p>"}'

SELECT notiflow.put_provider('email-sendgrid', 'email', 'sendgrid',
       '{"api_key": "SG.test-key", "from": "\"Shop, Inc.\" <shop@example.com>"}');
SELECT notiflow.put_provider('email-sendgrid-local', 'email', 'sendgrid',
       '{"api_key": "SG.test-key", "from": "shop@example.com", "base_url": "http://127.0.0.1:8089/"}');
SELECT notiflow.put_provider('email-mailgun', 'email', 'mailgun',
       '{"api_key": "key-test", "domain": "mg.example.com", "from": "Shop <shop@mg.example.com>"}');
SELECT notiflow.put_provider('email-mailgun-eu', 'email', 'mailgun',
       '{"api_key": "key-test", "domain": "mg.example.eu", "from": "shop@mg.example.eu", "base_url": "https://api.eu.mailgun.net"}');
SELECT notiflow.put_provider('email-ses', 'email', 'ses',
       '{"access_key_id": "AKIDEXAMPLE", "secret_access_key": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
         "region": "eu-west-1", "from": "Shop <shop@example.com>"}');
SELECT notiflow.put_provider('email-ses-local', 'email', 'ses',
       '{"access_key_id": "AKIDEXAMPLE", "secret_access_key": "secret", "region": "us-east-1",
         "from": "shop@example.com", "base_url": "http://127.0.0.1:8089"}');
SELECT notiflow.put_provider('email-smtp', 'email', 'smtp',
       '{"url": "smtp://mail.example.com:587", "username": "notiflow", "password": "smtp-secret",
         "from": "Shop <shop@example.com>", "starttls": true}');
SELECT notiflow.put_provider('email-smtps', 'email', 'smtp',
       '{"url": "smtps://mail.example.com:465", "from": "shop@example.com"}');

-- SendGrid: Bearer key, one personalization, from split into email and name,
-- text/plain before text/html, custom_args carrying the delivery id
SELECT url, headers, username, password, aws_sigv4 FROM pg_temp.request('email-sendgrid', 'ann@example.com', :'mail');
SELECT jsonb_pretty(body) FROM pg_temp.request('email-sendgrid', 'ann@example.com', :'mail');
-- base_url override (trailing slash dropped); a bare from has no name; html only
SELECT url, body -> 'from' AS "from", body -> 'content' AS content
  FROM pg_temp.request('email-sendgrid-local', 'ann@example.com', '{"subject": "S", "html": "<p>only html</p>"}');
-- values travel as JSON strings, escaped by escape_json: quotes, backslashes, newlines, non-ASCII
SELECT body ->> 'subject' AS subject, body #>> '{content,0,value}' AS text,
       body #>> '{content,0,value}' = E'line 1\nline "2" \\ end' AS text_intact
  FROM pg_temp.request('email-sendgrid', 'ann@example.com',
                       '{"subject": "Ünïcode \"quoted\" \\ subject", "text": "line 1\nline \"2\" \\ end"}');

-- Mailgun: basic auth api:<key>, domain in the path, a form body
SELECT url, headers, username, password, aws_sigv4, body FROM pg_temp.request('email-mailgun', 'ann@example.com', :'mail');
SELECT * FROM pg_temp.form('email-mailgun', 'ann@example.com', :'mail');
SELECT url FROM pg_temp.request('email-mailgun-eu', 'ann@example.com', :'mail');
-- form encoding keeps &, =, +, % and non-ASCII; text only
SELECT * FROM pg_temp.form('email-mailgun-eu', 'o''brien+tag@example.com', '{"subject": "50% off & more = fun", "text": "a+b=c"}');
SELECT p ->> 'body' AS raw_body
  FROM notiflow.provider_preview('email-mailgun-eu', 'o''brien+tag@example.com', '{"subject": "50% off & more = fun", "text": "a+b=c"}') p;

-- SES v2: regional endpoint, SigV4 by libcurl with the key pair as credentials,
-- the bare from address, UTF-8 parts, the delivery id as an email tag
SELECT url, headers, username, password, aws_sigv4 FROM pg_temp.request('email-ses', 'ann@example.com', :'mail');
SELECT jsonb_pretty(body) FROM pg_temp.request('email-ses', 'ann@example.com', :'mail');
SELECT url, aws_sigv4, body #> '{Content,Simple,Body}' AS mail_body
  FROM pg_temp.request('email-ses-local', 'ann@example.com', '{"subject": "S", "text": "only text"}');
-- the sender's display name in FromEmailAddress: quoted when ASCII (quoted pairs given once), kept
-- when it is nothing but encoded words, quoted when it only looks like them (a comma or an @
-- outside a word would make another mailbox)
SELECT notiflow.put_provider('email-ses-local', 'email', 'ses', jsonb_build_object('access_key_id', 'AKIDEXAMPLE',
         'secret_access_key', 'secret', 'region', 'us-east-1', 'base_url', 'http://127.0.0.1:8089', 'from', $f$"Shop \"Best\" Ltd" <shop@example.com>$f$));
SELECT body ->> 'FromEmailAddress' AS sent FROM pg_temp.request('email-ses-local', 'ann@example.com', '{"subject": "S", "text": "t"}');
SELECT notiflow.put_provider('email-ses-local', 'email', 'ses', jsonb_build_object('access_key_id', 'AKIDEXAMPLE',
         'secret_access_key', 'secret', 'region', 'us-east-1', 'base_url', 'http://127.0.0.1:8089', 'from', $f$=?UTF-8?B?Q2Fmw6k=?= =?UTF-8?Q?Bleu?= <shop@example.com>$f$));
SELECT body ->> 'FromEmailAddress' AS sent FROM pg_temp.request('email-ses-local', 'ann@example.com', '{"subject": "S", "text": "t"}');
SELECT notiflow.put_provider('email-ses-local', 'email', 'ses', jsonb_build_object('access_key_id', 'AKIDEXAMPLE',
         'secret_access_key', 'secret', 'region', 'us-east-1', 'base_url', 'http://127.0.0.1:8089', 'from', $f$=?a?B?x?= x@evil.example, =?b?B?y?= <shop@example.com>$f$));
SELECT body ->> 'FromEmailAddress' AS sent FROM pg_temp.request('email-ses-local', 'ann@example.com', '{"subject": "S", "text": "t"}');
SELECT notiflow.put_provider('email-ses-local', 'email', 'ses', jsonb_build_object('access_key_id', 'AKIDEXAMPLE',
         'secret_access_key', 'secret', 'region', 'us-east-1', 'base_url', 'http://127.0.0.1:8089', 'from', $f$=?a?Q?,x@evil.example,?= <shop@example.com>$f$));
SELECT body ->> 'FromEmailAddress' AS sent FROM pg_temp.request('email-ses-local', 'ann@example.com', '{"subject": "S", "text": "t"}');
SELECT notiflow.put_provider('email-ses-local', 'email', 'ses',
       '{"access_key_id": "AKIDEXAMPLE", "secret_access_key": "secret", "region": "us-east-1",
         "from": "shop@example.com", "base_url": "http://127.0.0.1:8089"}');

-- SMTP: envelope and parts for the HTTP layer's MIME builder; no body
SELECT p ->> 'url' AS url, p ->> 'username' AS username, p ->> 'password' AS password,
       p ->> 'smtp_starttls' AS starttls, p ->> 'smtp_from' AS envelope_from, p ->> 'smtp_to' AS envelope_to,
       p ->> 'smtp_subject' AS subject, p ->> 'smtp_text' AS text, p ->> 'smtp_html' AS html,
       p -> 'headers' AS headers, p ->> 'body' AS body
  FROM notiflow.provider_preview('email-smtp', 'ann@example.com', :'mail') p;
-- smtps without credentials; starttls defaults to false; an absent part is NULL
SELECT p ->> 'url' AS url, p ->> 'username' AS username, p ->> 'password' AS password,
       p ->> 'smtp_starttls' AS starttls, p ->> 'smtp_from' AS envelope_from,
       p ->> 'smtp_text' AS text, p ->> 'smtp_html' AS html
  FROM notiflow.provider_preview('email-smtps', 'ann@example.com', '{"subject": "S", "html": "<p>h</p>"}') p;

-- what build refuses, with the detail naming the field
SELECT notiflow.provider_preview('email-sendgrid', NULL, :'mail');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT notiflow.provider_preview('email-smtp', E'ann@example.com\r\nRCPT TO:<victim@example.com>', :'mail');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT notiflow.provider_preview('email-mailgun', 'ann@example.com', '{"subject": "Hi\nBcc: victim@example.com", "text": "t"}');
SELECT notiflow.provider_preview('email-ses', 'ann@example.com', '{"subject": "no body"}');
-- every adapter refuses CR/LF in the recipient, the subject and the sender, and a missing recipient or body
SELECT a.provider, c.name, e.*
  FROM (VALUES ('email-smtp'), ('email-sendgrid'), ('email-mailgun'), ('email-ses')) a(provider),
       (VALUES (1, 'recipient CR', E'ann@example.com\r', '{"subject": "S", "text": "t"}'::jsonb),
               (2, 'recipient LF', E'ann@example.com\nX-Injected: 1', '{"subject": "S", "text": "t"}'),
               (3, 'subject CRLF', 'ann@example.com', '{"subject": "S\r\nBcc: victim@example.com", "text": "t"}'),
               (4, 'no recipient', NULL, '{"subject": "S", "text": "t"}'),
               (5, 'empty body', 'ann@example.com', '{"subject": "S", "text": "", "html": ""}'),
               -- no subject is fine, but for SendGrid, which answers 400 "The subject is required"
               (6, 'body fine', 'ann@example.com', '{"text": "no subject is fine"}')) c(n, name, recipient, content),
       pg_temp.build_error(a.provider, c.recipient, c.content) e
 ORDER BY a.provider, c.n;

-- configuration build cannot use (put_provider checks required keys; these were changed behind its back)
UPDATE notiflow.providers SET config = config - 'api_key' WHERE name = 'email-sendgrid';
SELECT notiflow.provider_preview('email-sendgrid', 'ann@example.com', :'mail');
UPDATE notiflow.providers SET config = config || '{"api_key": "SG.test-key"}' WHERE name = 'email-sendgrid';
UPDATE notiflow.providers SET config = config || '{"from": "Shop\r\nBcc: victim@example.com <shop@example.com>"}' WHERE name = 'email-mailgun';
SELECT notiflow.provider_preview('email-mailgun', 'ann@example.com', :'mail');
UPDATE notiflow.providers SET config = config || '{"domain": "mg.example.com/../other.example.com"}' WHERE name = 'email-mailgun-eu';
SELECT notiflow.provider_preview('email-mailgun-eu', 'ann@example.com', :'mail');
UPDATE notiflow.providers SET config = config || '{"region": "eu-west-1:evil"}' WHERE name = 'email-ses-local';
SELECT notiflow.provider_preview('email-ses-local', 'ann@example.com', :'mail');
UPDATE notiflow.providers SET config = config || '{"starttls": "yes"}' WHERE name = 'email-smtp';
SELECT notiflow.provider_preview('email-smtp', 'ann@example.com', :'mail');
UPDATE notiflow.providers SET config = config || '{"url": "https://mail.example.com"}' WHERE name = 'email-smtps';
SELECT notiflow.provider_preview('email-smtps', 'ann@example.com', :'mail');
-- the sender must hold one address, bare or in angle brackets
SELECT f AS "from", pg_temp.sendgrid_from(f) AS sendgrid_from_or_error
  FROM (VALUES ('shop@example.com'), ('  Shop   <shop@example.com> '), ('"Shop, Inc." <shop@example.com>'),
               ('<shop@example.com>'), ('Shop'), ('Shop <shop@example.com'), ('Shop <shop@example.com> extra'),
               ('a@b@example.com'), ('Shop <>'), ('shop at example.com <@example.com>')) v(f);

-- classification of answers, in the providers' own shapes
SELECT c.kind, c.name,
       r ->> 'outcome' || CASE WHEN (r ->> 'recipient_fault')::boolean THEN ', recipient' ELSE '' END AS outcome,
       r ->> 'message_id' AS message_id,
       (r ->> 'retry_after_ms')::int AS retry_after_ms, r ->> 'error' AS error
  FROM (VALUES
    (1, 'sendgrid', 'accepted', 202, '{"Server: nginx", "X-Message-Id: 5ia5YTjtSbqJwR8vHuLFuQ", "Content-Length: 0"}'::text[], '', 0),
    (2, 'sendgrid', 'bad to address', 400, '{"Content-Type: application/json"}',
        '{"errors":[{"message":"Does not contain a valid address.","field":"personalizations.0.to.0.email","help":"http://sendgrid.com/docs/..."}]}', 0),
    (3, 'sendgrid', 'bad from address', 400, '{}',
        '{"errors":[{"message":"The from email does not contain a valid address.","field":"from.email","help":null}]}', 0),
    (4, 'sendgrid', 'bad api key', 401, '{}',
        '{"errors":[{"field":null,"message":"The provided authorization grant is invalid, expired, or revoked","help":null}]}', 0),
    (5, 'sendgrid', 'key lacks scope', 403, '{}', '{"errors":[{"field":null,"message":"access forbidden","help":null}]}', 0),
    (6, 'sendgrid', 'throttled, Retry-After', 429, '{"Retry-After: 2"}', '{"errors":[{"field":null,"message":"too many requests","help":null}]}', 0),
    (7, 'sendgrid', 'throttled, reset passed', 429, '{"X-RateLimit-Limit: 600", "X-RateLimit-Remaining: 0", "X-RateLimit-Reset: 1700000000"}',
        '{"errors":[{"field":null,"message":"too many requests","help":null}]}', 0),
    (8, 'sendgrid', 'unavailable', 503, '{}', '', 0),
    (9, 'sendgrid', 'timeout', 0, '{}', '', 28),
    (10, 'mailgun', 'queued', 200, '{"Content-Type: application/json"}',
         '{"id":"<20240611120000.1a2b3c4d5e6f7a8b@mg.example.com>","message":"Queued. Thank you."}', 0),
    (11, 'mailgun', 'bad to address', 400, '{}', '{"message":"''to'' parameter is not a valid address. please check documentation"}', 0),
    (12, 'mailgun', 'bad to address (double)', 400, '{}', '{"message":"to parameter is not a valid address. please check documentation"}', 0),
    (13, 'mailgun', 'bad from address', 400, '{}', '{"message":"''from'' parameter is not a valid address. please check documentation"}', 0),
    (14, 'mailgun', 'no body', 400, '{}', '{"message":"Need at least one of ''text'', ''html'' or ''template'' parameters specified"}', 0),
    (15, 'mailgun', 'bad api key', 401, '{"Content-Type: text/plain; charset=utf-8"}', 'Forbidden', 0),
    (16, 'mailgun', 'unknown domain', 404, '{}', '{"message":"Domain not found: mg.example.com"}', 0),
    (17, 'mailgun', 'throttled', 429, '{"Retry-After: 3"}', '{"message":"Too Many Requests"}', 0),
    (18, 'mailgun', 'bad gateway', 502, '{}', '<html>502 Bad Gateway</html>', 0),
    (19, 'mailgun', 'connection refused', 0, '{}', '', 7),
    (20, 'ses', 'sent', 200, '{"x-amzn-RequestId: 3f2c6a0e-5b1d-4c1e-9b8a-0d6f1e2a3b4c", "Content-Type: application/json"}',
         '{"MessageId":"0102018f2c6a0e5b-1d4c1e9b-8a0d-6f1e-2a3b-4c5d6e7f8a9b-000000"}', 0),
    (21, 'ses', 'too many requests', 429, '{"x-amzn-ErrorType: TooManyRequestsException:http://internal.amazon.com/coral/com.amazonaws.sesv2/"}',
         '{"message":"Maximum sending rate exceeded."}', 0),
    (22, 'ses', 'throttling', 400, '{"x-amzn-ErrorType: ThrottlingException"}', '{"message":"Rate exceeded"}', 0),
    (23, 'ses', 'not verified', 400, '{"x-amzn-ErrorType: MessageRejected"}',
         '{"message":"Email address is not verified. The following identities failed the check in region EU-WEST-1: shop@example.com"}', 0),
    (24, 'ses', 'mail from domain', 400, '{"x-amzn-ErrorType: MailFromDomainNotVerifiedException"}',
         '{"message":"The message can''t be sent because the sending domain isn''t verified."}', 0),
    (25, 'ses', 'illegal address', 400, '{"x-amzn-ErrorType: BadRequestException"}', '{"message":"Illegal address"}', 0),
    (26, 'ses', 'bad destination (double)', 400, '{"x-amzn-ErrorType: BadRequestException"}', '{"message":"Invalid address in Destination.ToAddresses"}', 0),
    (27, 'ses', 'bad request', 400, '{"x-amzn-ErrorType: BadRequestException"}', '{"message":"Missing required parameter: Content.Simple.Subject.Data"}', 0),
    (28, 'ses', 'bad signature', 403, '{"x-amzn-ErrorType: SignatureDoesNotMatchException"}',
         '{"message":"The request signature we calculated does not match the signature you provided."}', 0),
    (29, 'ses', 'unknown key', 403, '{"x-amzn-ErrorType: UnrecognizedClientException"}', '{"message":"The security token included in the request is invalid."}', 0),
    (30, 'ses', 'internal failure', 500, '{"x-amzn-ErrorType: InternalFailure"}', '{"message":"Internal Failure"}', 0),
    (31, 'ses', 'reset by peer', 0, '{}', '', 56),
    (32, 'smtp', '250 queued', 250, NULL, NULL, 0),
    (33, 'smtp', '421 at MAIL', 421, '{"curl-error: MAIL failed: 421"}', NULL, 55),
    (34, 'smtp', '450 mailbox busy', 450, NULL, NULL, 55),
    (35, 'smtp', '451 after data', 451, NULL, NULL, 8),
    (36, 'smtp', '452 at RCPT', 452, '{"curl-error: RCPT failed: 452"}', NULL, 55),
    (37, 'smtp', '550 at RCPT', 550, '{"curl-error: RCPT failed: 550"}', NULL, 55),
    (38, 'smtp', '551 at RCPT', 551, '{"curl-error: RCPT failed: 551"}', NULL, 55),
    (39, 'smtp', '553 at RCPT', 553, '{"curl-error: RCPT failed: 553"}', NULL, 55),
    (40, 'smtp', '550 after data', 550, NULL, NULL, 8),
    (41, 'smtp', '554 at RCPT', 554, '{"curl-error: RCPT failed: 554"}', NULL, 55),
    (42, 'smtp', '535 AUTH', 535, NULL, NULL, 67),
    (43, 'smtp', '530 AUTH required', 530, NULL, NULL, 55),
    (44, 'smtp', 'connection refused', 0, NULL, NULL, 7),
    (45, 'smtp', 'timeout', 0, NULL, NULL, 28),
    (46, 'smtp', 'send error', 0, NULL, NULL, 55),
    (47, 'smtp', 'recv error', 0, NULL, NULL, 56),
    (48, 'smtp', 'empty reply', 0, NULL, NULL, 52),
    (49, 'smtp', 'untrusted certificate', 0, NULL, NULL, 60),
    (50, 'smtp', 'STARTTLS not offered', 0, NULL, NULL, 64),
    -- the server's reply line, as curl passes it: the enhanced status code says whose fault it is
    (51, 'smtp', '550 5.1.1 at RCPT', 550, '{"550 5.1.1 <ann@example.test>: Recipient address rejected: User unknown","curl-error: RCPT failed: 550"}', NULL, 55),
    (52, 'smtp', '550 5.7.1 at RCPT (relay)', 550, '{"550 5.7.1 <ann@example.test>: Relay access denied","curl-error: RCPT failed: 550"}', NULL, 55),
    (53, 'smtp', '553 5.7.1 at RCPT (sender)', 553, '{"553 5.7.1 <shop@example.test>: Sender address rejected: not owned by user","curl-error: RCPT failed: 553"}', NULL, 55),
    (54, 'smtp', '553 5.1.3 at RCPT (syntax)', 553, '{"553 5.1.3 Bad recipient address syntax","curl-error: RCPT failed: 553"}', NULL, 55),
    -- a relay that refuses the HELO name (curl: "Remote access denied") refuses every address alike
    (55, 'smtp', '550 at EHLO', 550, '{"550 5.7.1 Access denied - Invalid HELO name","curl-error: Remote access denied: 550"}', NULL, 9),
    (56, 'smtp', '550 at MAIL', 550, '{"550 5.1.8 Sender address rejected","curl-error: MAIL failed: 550"}', NULL, 55),
    -- Postfix refuses an unknown sender at RCPT TO, with a 5.1.x code about the sender; Exim refuses
    -- relaying without an enhanced code (unsure: falls back, the address kept)
    (57, 'smtp', '550 5.1.0 at RCPT (sender)', 550, '{"550 5.1.0 <shop@example.test>: Sender address rejected: User unknown in virtual mailbox table","curl-error: RCPT failed: 550"}', NULL, 55),
    (58, 'smtp', '550 at RCPT (no enhanced code)', 550, '{"550 relay not permitted","curl-error: RCPT failed: 550"}', NULL, 55),
    (59, 'smtp', '550 5.1.10 at RCPT (null MX)', 550, '{"550 5.1.10 <ann@example.test>: Recipient address rejected: Domain example.test does not accept mail (nullMX)","curl-error: RCPT failed: 550"}', NULL, 55),
    (60, 'smtp', '454 AUTH (temporary)', 454, '{"454 4.7.0 Temporary authentication failure"}', NULL, 67),
    -- "sender" inside the quoted address is not about the sender
    (64, 'smtp', '550 5.1.1 at RCPT (<sender-ops@...>)', 550, '{"550 5.1.1 <sender-ops@example.test>: Recipient address rejected: User unknown","curl-error: RCPT failed: 550"}', NULL, 55),
    -- a URL or CA bundle that cannot work (curl 3, 1, 77) is configuration: no retry helps
    (61, 'sendgrid', 'malformed URL', 0, '{}', '', 3),
    (62, 'mailgun', 'unsupported protocol', 0, '{}', '', 1),
    (63, 'ses', 'bad CA file', 0, '{}', '', 77)
  ) c(n, kind, name, status, headers, body, curl_code),
  LATERAL notiflow.provider_classify(c.kind, c.status, c.headers, c.body, c.curl_code) r
 ORDER BY c.n;

-- Retry-After: delay-seconds (digits only, at most a day) or an HTTP date; anything else counts as 1 s
SELECT v.header, (notiflow.provider_classify('sendgrid', 503, ARRAY['Retry-After: ' || v.header], '') ->> 'retry_after_ms')::int AS ms
  FROM (VALUES ('7'), ('99999999'), ('Wed, 21 Oct 2015 07:28:00 GMT'), ('Fri, 01 Jan 2100 00:00:00 GMT'),
               ('nan'), ('-5'), ('1e3'), ('soon')) v(header);
SELECT (notiflow.provider_classify('sendgrid', 503,
            ARRAY['Retry-After: ' || to_char(now() AT TIME ZONE 'GMT' + interval '90 seconds', 'Dy, DD Mon YYYY HH24:MI:SS "GMT"')],
            '') ->> 'retry_after_ms')::int BETWEEN 88000 AND 91000 AS date_90_s_ahead;

-- SendGrid's X-RateLimit-Reset (Unix seconds) in the future: wait until then
SELECT r ->> 'outcome' AS outcome, (r ->> 'retry_after_ms')::int BETWEEN 58000 AND 61000 AS waits_about_a_minute
  FROM notiflow.provider_classify('sendgrid', 429,
           ARRAY['X-RateLimit-Reset: ' || (extract(epoch FROM now())::bigint + 60)], '{"errors":[{"message":"too many requests"}]}') r;

DELETE FROM notiflow.providers WHERE name LIKE 'email-%';
