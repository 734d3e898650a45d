-- SMS and chat adapters (twilio, sns, vonage, slack, discord, teams): the exact
-- requests they build, and how they classify the providers' own answers.
\set VERBOSITY default
\set SHOW_CONTEXT never
SET client_min_messages = warning;

-- one line per classified answer: provider_classify(kind, status, headers, body)
CREATE TEMP TABLE answers (kind text, n int, label text, status int, headers text[], body text);
CREATE TEMP VIEW classified AS
SELECT a.kind, a.n, a.label,
       c ->> 'outcome' || CASE WHEN (c ->> 'recipient_fault')::boolean THEN ', recipient' ELSE '' END AS outcome,
       c ->> 'message_id' AS message_id,
       (c ->> 'retry_after_ms')::int AS retry_ms, c ->> 'error' AS error
  FROM answers a, notiflow.provider_classify(a.kind, a.status, a.headers, a.body) c;

------------------------------------------------------------------ Twilio
SELECT notiflow.put_provider('sc-twilio', 'sms', 'twilio',
    '{"account_sid": "AC0123456789abcdef0123456789abcdef", "auth_token": "tw-token", "from": "+15005550006"}');
SELECT p ->> 'method' AS method, p ->> 'url' AS url, p -> 'headers' AS headers,
       p ->> 'username' AS username, p ->> 'password' AS password, p ->> 'body' AS body
  FROM notiflow.provider_preview('sc-twilio', '+447700900123', '{"text": "Code 42 & more: 100% ✓"}') p;
-- base_url replaces scheme and host; a Messaging Service SID is sent as MessagingServiceSid
SELECT notiflow.put_provider('sc-twilio', 'sms', 'twilio',
    '{"account_sid": "AC0123456789abcdef0123456789abcdef", "auth_token": "tw-token",
      "from": "MG0123456789abcdef0123456789abcdef", "base_url": "http://127.0.0.1:9/twilio/"}');
SELECT p ->> 'url' AS url, p ->> 'body' AS body
  FROM notiflow.provider_preview('sc-twilio', '+15551234567', '{"text": "hi"}') p;
-- no phone number, an account sid that would change the path, a non-string config value
SELECT notiflow.provider_preview('sc-twilio', NULL, '{"text": "hi"}');
SELECT notiflow.put_provider('sc-twilio', 'sms', 'twilio', '{"account_sid": "AC1/../x", "auth_token": "t", "from": "+15005550006"}');
SELECT notiflow.provider_preview('sc-twilio', '+15551234567', '{"text": "hi"}');
SELECT notiflow.put_provider('sc-twilio', 'sms', 'twilio', '{"account_sid": "AC1", "auth_token": "t", "from": 15005550006}');
SELECT notiflow.provider_preview('sc-twilio', '+15551234567', '{"text": "hi"}');

INSERT INTO answers (kind, n, label, status, headers, body) VALUES
('twilio', 1, 'created', 201, '{"Content-Type: application/json"}',
 '{"account_sid": "AC0123456789abcdef0123456789abcdef", "api_version": "2010-04-01", "body": "hi", "date_created": "Thu, 24 Aug 2023 05:01:45 +0000", "direction": "outbound-api", "error_code": null, "from": "+15005550006", "num_segments": "1", "sid": "SM3f1c0d8a9b7e4c2f8d6a5b4c3d2e1f00", "status": "queued", "to": "+15551234567", "uri": "/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Messages/SM3f1c0d8a9b7e4c2f8d6a5b4c3d2e1f00.json"}'),
('twilio', 2, 'invalid To', 400, NULL,
 '{"code": 21211, "message": "Invalid ''To'' Phone Number: +1555", "more_info": "https://www.twilio.com/docs/errors/21211", "status": 400}'),
('twilio', 3, 'not a mobile number', 400, NULL,
 '{"code": 21614, "message": "''To'' number is not a valid mobile number", "more_info": "https://www.twilio.com/docs/errors/21614", "status": 400}'),
('twilio', 4, 'unsubscribed', 400, NULL,
 '{"code": 21610, "message": "Attempt to send to unsubscribed recipient", "more_info": "https://www.twilio.com/docs/errors/21610", "status": 400}'),
('twilio', 5, 'throttled', 429, '{"Retry-After: 3"}',
 '{"code": 20429, "message": "Too Many Requests", "more_info": "https://www.twilio.com/docs/errors/20429", "status": 429}'),
('twilio', 6, 'bad credentials', 401, NULL,
 '{"code": 20003, "message": "Authenticate", "more_info": "https://www.twilio.com/docs/errors/20003", "status": 401}'),
('twilio', 7, 'empty body', 400, NULL,
 '{"code": 21602, "message": "Message body is required.", "more_info": "https://www.twilio.com/docs/errors/21602", "status": 400}'),
('twilio', 8, 'server error', 500, NULL,
 '{"code": 20500, "message": "Internal Server Error", "more_info": "https://www.twilio.com/docs/errors/20500", "status": 500}'),
('twilio', 9, 'html gateway error', 502, NULL, '<html><body>Bad Gateway</body></html>'),
('twilio', 10, 'queue full (throughput)', 400, NULL,
 '{"code": 21611, "message": "This ''From'' number has exceeded the maximum number of queued messages", "more_info": "https://www.twilio.com/docs/errors/21611", "status": 400}');
SELECT n, label, outcome, message_id, retry_ms, error FROM classified WHERE kind = 'twilio' ORDER BY n;

--------------------------------------------------------------------- SNS
SELECT notiflow.put_provider('sc-sns', 'sms', 'sns',
    '{"access_key_id": "AKIAEXAMPLEKEY000000", "secret_access_key": "sns/secret+key", "region": "eu-west-1"}');
SELECT p ->> 'url' AS url, p -> 'headers' AS headers, p ->> 'aws_sigv4' AS aws_sigv4,
       p ->> 'username' AS username, p ->> 'password' AS password
  FROM notiflow.provider_preview('sc-sns', '+15551234567', '{"text": "Your code is 1234"}') p;
SELECT regexp_split_to_table(p ->> 'body', '&') AS form_field
  FROM notiflow.provider_preview('sc-sns', '+15551234567', '{"text": "Your code is 1234"}') p;
SELECT notiflow.put_provider('sc-sns', 'sms', 'sns',
    '{"access_key_id": "AKIAEXAMPLEKEY000000", "secret_access_key": "s", "region": "us-east-1", "base_url": "http://127.0.0.1:9"}');
SELECT p ->> 'url' AS url, p ->> 'aws_sigv4' AS aws_sigv4
  FROM notiflow.provider_preview('sc-sns', '+15551234567', '{"text": "x"}') p;
SELECT notiflow.put_provider('sc-sns', 'sms', 'sns',
    '{"access_key_id": "AKIAEXAMPLEKEY000000", "secret_access_key": "s", "region": "evil.example.com/x"}');
SELECT notiflow.provider_preview('sc-sns', '+15551234567', '{"text": "x"}');

INSERT INTO answers (kind, n, label, status, headers, body) VALUES
('sns', 1, 'published', 200, '{"Content-Type: text/xml", "x-amzn-RequestId: 2f4a1b7c-0d7e-5a3b-9c55-0e1f2a3b4c5d"}',
 E'<PublishResponse xmlns="http://sns.amazonaws.com/doc/2010-03-31/">\n  <PublishResult>\n    <MessageId>94f20ce6-13c5-43a0-9a9e-ca52d816e90b</MessageId>\n  </PublishResult>\n  <ResponseMetadata>\n    <RequestId>f187a3c1-376f-11df-8963-01868b7c937a</RequestId>\n  </ResponseMetadata>\n</PublishResponse>\n'),
('sns', 2, 'throttled (400)', 400, NULL,
 E'<ErrorResponse xmlns="http://sns.amazonaws.com/doc/2010-03-31/">\n  <Error>\n    <Type>Sender</Type>\n    <Code>Throttling</Code>\n    <Message>Rate exceeded</Message>\n  </Error>\n  <RequestId>9a0d4c1e-1111-5f0e-a1b2-c3d4e5f60718</RequestId>\n</ErrorResponse>\n'),
('sns', 3, 'throttled (429)', 429, '{"Retry-After: 2"}',
 '<ErrorResponse><Error><Type>Sender</Type><Code>ThrottledException</Code><Message>Request is throttled.</Message></Error><RequestId>1</RequestId></ErrorResponse>'),
('sns', 4, 'invalid phone number', 400, NULL,
 '<ErrorResponse><Error><Type>Sender</Type><Code>InvalidParameter</Code><Message>Invalid parameter: PhoneNumber Reason: +1555 is not valid to publish to</Message></Error><RequestId>2</RequestId></ErrorResponse>'),
('sns', 5, 'other invalid parameter', 400, NULL,
 '<ErrorResponse><Error><Type>Sender</Type><Code>InvalidParameter</Code><Message>Invalid parameter: Message too long</Message></Error><RequestId>3</RequestId></ErrorResponse>'),
('sns', 6, 'bad signature', 403, NULL,
 '<ErrorResponse><Error><Type>Sender</Type><Code>SignatureDoesNotMatch</Code><Message>The request signature we calculated does not match the signature you provided.</Message></Error><RequestId>4</RequestId></ErrorResponse>'),
('sns', 7, 'unknown key', 403, NULL,
 '<ErrorResponse><Error><Type>Sender</Type><Code>InvalidClientTokenId</Code><Message>The security token included in the request is invalid.</Message></Error><RequestId>5</RequestId></ErrorResponse>'),
('sns', 8, 'internal error', 500, NULL,
 '<ErrorResponse><Error><Type>Receiver</Type><Code>InternalError</Code><Message>Internal error</Message></Error><RequestId>6</RequestId></ErrorResponse>');
SELECT n, label, outcome, message_id, retry_ms, error FROM classified WHERE kind = 'sns' ORDER BY n;

------------------------------------------------------------------ Vonage
SELECT notiflow.put_provider('sc-vonage', 'sms', 'vonage', '{"api_key": "vkey", "api_secret": "v secret", "from": "Acme"}');
SELECT p ->> 'url' AS url, p -> 'headers' AS headers, p ->> 'username' AS username, p ->> 'body' AS body
  FROM notiflow.provider_preview('sc-vonage', '+447700900123', '{"text": "Code 42"}') p;
-- non-ASCII text is sent as type=unicode; base_url applies
SELECT notiflow.put_provider('sc-vonage', 'sms', 'vonage',
    '{"api_key": "vkey", "api_secret": "vs", "from": "Acme", "base_url": "http://127.0.0.1:9/"}');
SELECT p ->> 'url' AS url, p ->> 'body' AS body
  FROM notiflow.provider_preview('sc-vonage', '+447700900123', '{"text": "Grüße"}') p;

INSERT INTO answers (kind, n, label, status, headers, body) VALUES
('vonage', 1, 'sent', 200, NULL,
 '{"message-count": "1", "messages": [{"to": "447700900123", "message-id": "0A0000000123ABCD1", "status": "0", "remaining-balance": "3.14159265", "message-price": "0.03330000", "network": "23410"}]}'),
('vonage', 2, 'sent in two parts', 200, NULL,
 '{"message-count": "2", "messages": [{"to": "447700900123", "message-id": "0A0000000123ABCD2", "status": "0"}, {"to": "447700900123", "message-id": "0A0000000123ABCD3", "status": "0"}]}'),
('vonage', 3, 'throttled', 200, NULL, '{"message-count": "1", "messages": [{"status": "1", "error-text": "Throttled"}]}'),
('vonage', 4, 'invalid to', 200, NULL, '{"message-count": "1", "messages": [{"status": "3", "error-text": "Invalid to param"}]}'),
('vonage', 5, 'invalid from', 200, NULL, '{"message-count": "1", "messages": [{"status": "3", "error-text": "Invalid from param"}]}'),
('vonage', 6, 'unroutable', 200, NULL, '{"message-count": "1", "messages": [{"status": "6", "error-text": "Unroutable message - rejected"}]}'),
('vonage', 7, 'barred number', 200, NULL, '{"message-count": "1", "messages": [{"status": "7", "error-text": "Number barred."}]}'),
('vonage', 8, 'bad credentials', 200, NULL, '{"message-count": "1", "messages": [{"status": "4", "error-text": "Bad Credentials"}]}'),
('vonage', 9, 'missing params', 200, NULL, '{"message-count": "1", "messages": [{"status": "2", "error-text": "Missing from param"}]}'),
('vonage', 10, 'internal error', 200, NULL, '{"message-count": "1", "messages": [{"status": "5", "error-text": "Internal Error"}]}'),
('vonage', 11, 'second part failed', 200, NULL,
 '{"message-count": "2", "messages": [{"message-id": "0A0000000123ABCD4", "status": "0"}, {"status": "1", "error-text": "Throttled"}]}'),
('vonage', 12, 'HTTP 429', 429, '{"Retry-After: 1"}',
 '{"type": "https://developer.vonage.com/api-errors#throttled", "title": "Too Many Requests", "detail": "Please wait, then retry your request"}'),
('vonage', 13, 'HTTP 401', 401, NULL,
 '{"type": "https://developer.vonage.com/api-errors#unauthorized", "title": "Unauthorized", "detail": "You did not provide correct credentials."}'),
('vonage', 14, 'HTTP 503', 503, NULL, 'Service Unavailable'),
('vonage', 15, 'not JSON', 200, NULL, '<html>maintenance</html>'),
('vonage', 16, 'number de-activated', 200, NULL, '{"message-count": "1", "messages": [{"status": "33", "error-text": "Number De-activated"}]}'),
('vonage', 17, 'every part failed', 200, NULL,
 '{"message-count": "2", "messages": [{"status": "1", "error-text": "Throttled"}, {"status": "1", "error-text": "Throttled"}]}');
SELECT n, label, outcome, message_id, retry_ms, error FROM classified WHERE kind = 'vonage' ORDER BY n;

------------------------------------------------------------------- Slack
-- incoming webhook: the configured URL as it is (base_url does not apply)
SELECT notiflow.put_provider('sc-slack-hook', 'chat', 'slack',
    '{"webhook_url": "https://hooks.slack.com/services/T000/B000/XXXX", "base_url": "http://127.0.0.1:9"}');
SELECT p ->> 'url' AS url, p -> 'headers' AS headers, (p ->> 'body')::jsonb AS body, p ->> 'username' AS username
  FROM notiflow.provider_preview('sc-slack-hook', NULL, '{"text": "Deploy \"v2\" done <@U1>\n:tada:"}') p;
-- a subscriber address that is itself a webhook URL is posted to
SELECT p ->> 'url' AS url, (p ->> 'body')::jsonb AS body
  FROM notiflow.provider_preview('sc-slack-hook', 'https://hooks.slack.com/services/T111/B111/YYYY', '{"text": "hi"}') p;
-- a channel address needs the Web API, which needs a token
SELECT notiflow.provider_preview('sc-slack-hook', 'C0123456789', '{"text": "hi"}');
-- the engine's slack_text (values escaped for Slack) is what Slack gets
SELECT p ->> 'body' AS body
  FROM notiflow.provider_preview('sc-slack-hook', NULL, '{"text": "hi <!channel>", "slack_text": "hi &lt;!channel&gt;"}') p;
-- Web API: the configured channel, or the subscriber's channel or user id
SELECT notiflow.put_provider('sc-slack-api', 'chat', 'slack', '{"token": "xoxb-test-token", "channel": "C0OPS"}');
SELECT p ->> 'url' AS url, p -> 'headers' AS headers, (p ->> 'body')::jsonb AS body
  FROM notiflow.provider_preview('sc-slack-api', NULL, '{"text": "hi"}') p;
SELECT p ->> 'url' AS url, (p ->> 'body')::jsonb AS body
  FROM notiflow.provider_preview('sc-slack-api', 'U0ANN', '{"text": "hi"}') p;
SELECT notiflow.put_provider('sc-slack-api', 'chat', 'slack',
    '{"token": "xoxb-test-token", "channel": "C0OPS", "base_url": "http://127.0.0.1:9/"}');
SELECT p ->> 'url' AS url FROM notiflow.provider_preview('sc-slack-api', NULL, '{"text": "hi"}') p;
SELECT notiflow.put_provider('sc-slack-api', 'chat', 'slack', '{"token": "xoxb\r\nX-Evil: 1", "channel": "C0OPS"}');
SELECT notiflow.provider_preview('sc-slack-api', NULL, '{"text": "hi"}');

INSERT INTO answers (kind, n, label, status, headers, body) VALUES
('slack', 1, 'webhook ok', 200, '{"Content-Type: text/html"}', 'ok'),
('slack', 2, 'posted', 200, '{"Content-Type: application/json; charset=utf-8"}',
 '{"ok": true, "channel": "C0OPS", "ts": "1503435956.000247", "message": {"type": "message", "text": "hi", "bot_id": "B0BOT", "ts": "1503435956.000247"}}'),
('slack', 3, 'ratelimited (429)', 429, '{"Retry-After: 30"}', '{"ok": false, "error": "ratelimited"}'),
('slack', 4, 'ratelimited (200)', 200, NULL, '{"ok": false, "error": "ratelimited"}'),
('slack', 5, 'webhook rate_limited', 429, '{"Retry-After: 1"}', 'rate_limited'),
('slack', 6, 'channel_not_found', 200, NULL, '{"ok": false, "error": "channel_not_found"}'),
('slack', 18, 'not_in_channel', 200, NULL, '{"ok": false, "error": "not_in_channel"}'),
('slack', 7, 'is_archived', 200, NULL, '{"ok": false, "error": "is_archived"}'),
('slack', 8, 'user_not_found', 200, NULL, '{"ok": false, "error": "user_not_found"}'),
('slack', 9, 'webhook channel_is_archived', 410, NULL, 'channel_is_archived'),
('slack', 10, 'webhook no_service', 404, NULL, 'no_service'),
('slack', 11, 'invalid_auth', 200, NULL, '{"ok": false, "error": "invalid_auth"}'),
('slack', 12, 'not_authed', 200, NULL, '{"ok": false, "error": "not_authed"}'),
('slack', 13, 'webhook invalid_token', 403, NULL, 'invalid_token'),
('slack', 14, 'no_text', 200, NULL, '{"ok": false, "error": "no_text"}'),
('slack', 15, 'webhook invalid_payload', 400, NULL, 'invalid_payload'),
('slack', 16, 'internal_error', 200, NULL, '{"ok": false, "error": "internal_error"}'),
('slack', 17, 'HTTP 503', 503, NULL, '<html>Service Unavailable</html>');
SELECT n, label, outcome, message_id, retry_ms, error FROM classified WHERE kind = 'slack' ORDER BY n;

----------------------------------------------------------------- Discord
SELECT notiflow.put_provider('sc-discord', 'chat', 'discord',
    '{"webhook_url": "https://discord.com/api/webhooks/100000000000000000/tok-en", "base_url": "http://127.0.0.1:9"}');
SELECT p ->> 'url' AS url, p -> 'headers' AS headers, (p ->> 'body')::jsonb AS body
  FROM notiflow.provider_preview('sc-discord', NULL, '{"text": "@everyone \"build\" failed"}') p;
-- the subscriber's own webhook URL (a query string is kept)
SELECT p ->> 'url' AS url
  FROM notiflow.provider_preview('sc-discord', 'https://discord.com/api/webhooks/2/t?thread_id=3', '{"text": "hi"}') p;
SELECT notiflow.provider_preview('sc-discord', 'someone#1234', '{"text": "hi"}');
SELECT notiflow.provider_preview('sc-discord', 'file:///etc/passwd', '{"text": "hi"}');

INSERT INTO answers (kind, n, label, status, headers, body) VALUES
('discord', 1, 'created (wait=true)', 200, '{"Content-Type: application/json"}',
 '{"id": "1170000000000000001", "type": 0, "content": "hi", "channel_id": "100000000000000001", "webhook_id": "100000000000000000", "timestamp": "2024-01-31T12:00:00.000000+00:00", "author": {"id": "100000000000000000", "username": "notiflow", "bot": true}}'),
('discord', 2, 'no content', 204, NULL, ''),
('discord', 3, 'rate limited (body)', 429, '{"Retry-After: 2", "X-RateLimit-Reset-After: 1.234"}',
 '{"message": "You are being rate limited.", "retry_after": 1.234, "global": false, "code": 0}'),
('discord', 4, 'rate limited (header)', 429, '{"Retry-After: 2"}', 'rate limited'),
('discord', 5, 'unknown webhook', 404, NULL, '{"message": "Unknown Webhook", "code": 10015}'),
('discord', 6, 'invalid token', 401, NULL, '{"message": "Invalid Webhook Token", "code": 50027}'),
('discord', 7, 'too long', 400, NULL,
 '{"message": "Invalid Form Body", "code": 50035, "errors": {"content": {"_errors": [{"code": "BASE_TYPE_MAX_LENGTH", "message": "Must be 2000 or fewer in length."}]}}}'),
('discord', 8, 'HTTP 502', 502, NULL, 'error code: 502');
SELECT n, label, outcome, message_id, retry_ms, error FROM classified WHERE kind = 'discord' ORDER BY n;

------------------------------------------------------------------- Teams
-- a legacy Office 365 connector URL gets a MessageCard
SELECT notiflow.put_provider('sc-teams', 'chat', 'teams',
    '{"webhook_url": "https://contoso.webhook.office.com/webhookb2/a@b/IncomingWebhook/c/d"}');
SELECT p ->> 'url' AS url, p -> 'headers' AS headers, (p ->> 'body')::jsonb AS body
  FROM notiflow.provider_preview('sc-teams', NULL, '{"text": "Build **42** failed"}') p;
-- a Workflows URL (logic.azure.com, or powerautomate) gets an Adaptive Card message
SELECT notiflow.put_provider('sc-teams', 'chat', 'teams',
    '{"webhook_url": "https://prod-00.westus.logic.azure.com:443/workflows/abc/triggers/manual/paths/invoke?api-version=2016-06-01&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig=s1g"}');
SELECT p ->> 'url' AS url, jsonb_pretty((p ->> 'body')::jsonb) AS body
  FROM notiflow.provider_preview('sc-teams', NULL, '{"text": "Build **42** failed"}') p;
SELECT p ->> 'url' AS url, (p ->> 'body')::jsonb ->> 'type' AS type
  FROM notiflow.provider_preview('sc-teams', 'https://X.powerautomate.com/powerautomate/automations/direct/Workflows/1/triggers/manual/paths/invoke?sig=z',
                                 '{"text": "hi"}') p;
SELECT notiflow.provider_preview('sc-teams', 'general', '{"text": "hi"}');

INSERT INTO answers (kind, n, label, status, headers, body) VALUES
('teams', 1, 'connector ok', 200, '{"Content-Type: text/plain; charset=utf-8"}', '1'),
('teams', 2, 'workflow accepted', 202, NULL, ''),
('teams', 3, 'connector throttled', 200, NULL,
 'Webhook message delivery failed with error: Microsoft Teams endpoint returned HTTP error 429 with ContextId tcid=0,server=msgapi-production-eus-azsc2-4-170,cv=deadbeef=2..'),
('teams', 4, 'connector failed otherwise', 200, NULL,
 'Webhook message delivery failed with error: Microsoft Teams endpoint returned HTTP error 413 with ContextId tcid=0,server=msgapi-production-eus-azsc2-4-170,cv=deadbeef=2..'),
('teams', 5, 'workflow throttled', 429, '{"Retry-After: 5"}',
 '{"error": {"code": "WorkflowRequestsThrottled", "message": "Number of requests exceeded the limit of 600 over time window of 00:01:00."}}'),
('teams', 6, 'workflow not found', 404, NULL,
 '{"error": {"code": "WorkflowNotFound", "message": "The workflow ''abc'' could not be found."}}'),
('teams', 7, 'connector gone', 410, NULL, 'Connector configuration not found'),
('teams', 8, 'bad signature', 401, NULL,
 '{"error": {"code": "DirectApiInvalidAuthorizationSignature", "message": "The provided authentication token is not valid."}}'),
('teams', 9, 'bad card', 400, NULL, 'Summary or Text is required.'),
('teams', 10, 'HTTP 503', 503, NULL, '');
SELECT n, label, outcome, message_id, retry_ms, error FROM classified WHERE kind = 'teams' ORDER BY n;

------------------------------------------------ every adapter: transport errors
-- curl 6 could not resolve host, 7 connection refused, 28 timeout, 35 TLS, 52 empty reply
SELECT kind, string_agg(DISTINCT c ->> 'outcome', ',') AS outcomes, count(*) AS answers
  FROM unnest(ARRAY['twilio', 'sns', 'vonage', 'slack', 'discord', 'teams']) kind,
       unnest(ARRAY[6, 7, 28, 35, 52]) curl_code,
       notiflow.provider_classify(kind, 0, NULL, NULL, curl_code) c
 GROUP BY kind ORDER BY kind;
SELECT kind, c
  FROM unnest(ARRAY['twilio', 'sns', 'vonage', 'slack', 'discord', 'teams']) kind,
       notiflow.provider_classify(kind, 0, NULL, NULL, 28) c;

DELETE FROM notiflow.providers WHERE name LIKE 'sc-%';
