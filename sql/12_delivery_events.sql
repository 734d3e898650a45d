-- Provider status callbacks: record_delivery_event() with SendGrid, Twilio,
-- Mailgun and SES bodies — matching, the statuses applied, the executions
-- resumed, the events recorded, unmatched events and bad input.
\set VERBOSITY default
\set SHOW_CONTEXT never
SET client_min_messages = warning;

-- providers (disabled email providers are enabled one at a time below; lowest priority wins)
SELECT notiflow.put_provider('ev-sendgrid', 'email', 'sendgrid',
    '{"api_key": "SG.test", "from": "Shop <shop@example.com>", "base_url": "http://127.0.0.1:9"}', -1000, false);
SELECT notiflow.put_provider('ev-mailgun', 'email', 'mailgun',
    '{"api_key": "key-test", "domain": "mg.example.com", "from": "shop@mg.example.com", "base_url": "http://127.0.0.1:9"}', -1000, false);
SELECT notiflow.put_provider('ev-ses', 'email', 'ses',
    '{"access_key_id": "AKIAEXAMPLE", "secret_access_key": "ses-secret", "region": "eu-west-1",
      "from": "shop@example.com", "base_url": "http://127.0.0.1:9"}', -1000, false);
SELECT notiflow.put_provider('ev-twilio', 'sms', 'twilio',
    '{"account_sid": "AC0123456789abcdef0123456789abcdef", "auth_token": "tw-token", "from": "+15005550006",
      "base_url": "http://127.0.0.1:9"}', -1000);
SELECT notiflow.put_provider('ev-smtp', 'email', 'smtp', '{"url": "smtp://127.0.0.1:9", "from": "shop@example.com"}', 1000, false);
SELECT notiflow.put_subscriber('eve', '{"name": "Eve", "email": "eve@example.com", "phone": "+15551234567"}');
-- email first; SMS when the email failed or there is no address
SELECT notiflow.put_workflow('ev_receipt', '{"name": "Receipt",
 "nodes": [
   {"id": "start", "type": "trigger", "required": ["order_id"]},
   {"id": "mail",  "type": "email", "subject": "Receipt {{payload.order_id}}", "text": "Thanks, {{recipient.name}}"},
   {"id": "text",  "type": "sms", "text": "Receipt {{payload.order_id}}: we could not email it"}],
 "edges": [
   {"from": "start", "to": "mail"},
   {"from": "mail", "to": "text", "on": "failed"},
   {"from": "mail", "to": "text", "on": "skipped"}]}');

CREATE TEMP VIEW ev_state AS
SELECT e.payload ->> 'order_id' AS order_id, d.node_id, d.provider, d.status, d.provider_message_id,
       d.last_error, e.status AS execution
  FROM notiflow.deliveries d JOIN notiflow.executions e ON e.id = d.execution_id
 WHERE e.workflow_key = 'ev_receipt'
 ORDER BY d.id;
CREATE TEMP VIEW ev_log AS
SELECT e.payload ->> 'order_id' AS order_id, d.node_id, v.provider, v.provider_event, v.event,
       v.status_applied, v.reason, v.occurred_at
  FROM notiflow.delivery_events v
  JOIN notiflow.deliveries d ON d.id = v.delivery_id
  JOIN notiflow.executions e ON e.id = d.execution_id
 ORDER BY v.id;

------------------------------------------------------------------ SendGrid
UPDATE notiflow.providers SET enabled = (name = 'ev-sendgrid') WHERE name IN ('ev-sendgrid', 'ev-mailgun', 'ev-ses');
SELECT notiflow.trigger('ev_receipt', '{"order_id": "sg-1"}', '"eve"') AS e_sg1 \gset
SELECT id AS d_sg1 FROM notiflow.deliveries WHERE execution_id = :e_sg1 \gset
-- the dispatcher: claimed, then accepted with X-Message-Id; the mail step is done
SELECT notiflow.finish_delivery(:d_sg1, 'sending');
-- "sending" comes with a lease, as from a claim: nobody recording it, it is claimed again
SELECT lease_expires_at BETWEEN now() + interval '50 seconds' AND now() + interval '70 seconds' AS leased
  FROM notiflow.deliveries WHERE id = :d_sg1;
SELECT notiflow.finish_delivery(:d_sg1, 'sent', '14c5d75ce93.dfd.64b469');
SELECT * FROM ev_state WHERE order_id = 'sg-1';
-- an Event Webhook batch: processed, delivered, open, click (custom arg notiflow_delivery_id)
SELECT format('[
  {"email": "eve@example.com", "timestamp": 1714564800, "smtp-id": "<14c5d75ce93.dfd.64b469@ismtpd-555>",
   "event": "processed", "category": ["receipt"], "sg_event_id": "rbtnWrG1DVDGGGFHFyun0A==",
   "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0", "notiflow_delivery_id": "%1$s"},
  {"email": "eve@example.com", "timestamp": 1714564805, "smtp-id": "<14c5d75ce93.dfd.64b469@ismtpd-555>",
   "event": "delivered", "ip": "168.1.1.1", "response": "250 OK", "tls": 1, "sg_event_id": "xVtbS6tKQkGvSgd2dCxr8g==",
   "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0", "notiflow_delivery_id": "%1$s"},
  {"email": "eve@example.com", "timestamp": 1714565400, "event": "open", "sg_machine_open": false,
   "useragent": "Mozilla/5.0", "ip": "255.255.255.255", "sg_event_id": "FOTFFO0ecsBE-zxFXfs6WA==",
   "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0", "notiflow_delivery_id": "%1$s"},
  {"email": "eve@example.com", "timestamp": 1714565460, "event": "click", "url": "https://example.com/orders/sg-1",
   "url_offset": {"index": 0, "type": "html"}, "sg_event_id": "kCAi1KttyQdEKHhdC-nuEA==",
   "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0", "notiflow_delivery_id": "%1$s"}]', :d_sg1) AS sg_batch \gset
SELECT notiflow.record_delivery_event('ev-sendgrid', :'sg_batch') AS recorded;
SELECT * FROM ev_state WHERE order_id = 'sg-1';
SELECT * FROM ev_log WHERE order_id = 'sg-1';
-- the same batch again (webhooks retry): recorded again, the status is not applied twice
SELECT notiflow.record_delivery_event('ev-sendgrid', :'sg_batch') AS recorded;
SELECT event, count(*) AS events, count(status_applied) AS applied
  FROM ev_log WHERE order_id = 'sg-1' GROUP BY event ORDER BY event;
-- a bounce after delivered fails the delivery; the execution, completed, stays completed
SELECT notiflow.record_delivery_event('ev-sendgrid', format('[
  {"email": "eve@example.com", "timestamp": 1714568400, "event": "bounce", "type": "bounce", "status": "5.1.1",
   "reason": "550 5.1.1 The email account that you tried to reach does not exist.",
   "bounce_classification": "Invalid Address", "sg_event_id": "6g4ZI7SA-xmRDv57GoPIPw==",
   "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0", "notiflow_delivery_id": "%s"}]', :d_sg1)::jsonb) AS recorded;
SELECT * FROM ev_state WHERE order_id = 'sg-1';
SELECT * FROM ev_log WHERE order_id = 'sg-1' AND event = 'bounced';
-- a hard bounce (type "bounce") marks the subscriber's address invalid, as a refusal at once does
-- (before, a bounced address was mailed again by the next workflow)
SELECT invalid_addresses FROM notiflow.subscribers WHERE id = 'eve';
UPDATE notiflow.subscribers SET invalid_addresses = '{}' WHERE id = 'eve';  -- eve's address serves the next cases

-- matched by sg_message_id alone (no custom args): X-Message-Id "W86EgYT6SQKk0lRflfLRsA" then ".filterdrecv-..."
SELECT notiflow.trigger('ev_receipt', '{"order_id": "sg-2"}', '"eve"') AS e_sg2 \gset
SELECT notiflow.finish_delivery(d.id, 'sent', 'W86EgYT6SQKk0lRflfLRsA') FROM notiflow.deliveries d WHERE d.execution_id = :e_sg2;
SELECT notiflow.record_delivery_event('ev-sendgrid', '[
  {"email": "eve@example.com", "timestamp": 1714564800, "event": "processed",
   "sg_message_id": "W86EgYT6SQKk0lRflfLRsA.filterdrecv-5645d9c87f-xs4hq-1-662F8A2C-37.0"},
  {"email": "eve@example.com", "timestamp": 1714564860, "event": "deferred", "attempt": "1",
   "response": "421 4.7.0 Try again later", "sg_message_id": "W86EgYT6SQKk0lRflfLRsA.filterdrecv-5645d9c87f-xs4hq-1-662F8A2C-37.0"},
  {"email": "eve@example.com", "timestamp": 1714568460, "event": "bounce", "type": "blocked", "status": "5.7.1",
   "reason": "550 5.7.1 Message rejected as spam", "sg_message_id": "W86EgYT6SQKk0lRflfLRsA.filterdrecv-5645d9c87f-xs4hq-1-662F8A2C-37.0"}]') AS recorded;
SELECT * FROM ev_state WHERE order_id = 'sg-2';
SELECT * FROM ev_log WHERE order_id = 'sg-2';
-- a "blocked" bounce is the sender's reputation, not the address: it stays valid
SELECT invalid_addresses FROM notiflow.subscribers WHERE id = 'eve';

-- one bad event refuses the whole batch: the good one before it changes nothing
SELECT notiflow.trigger('ev_receipt', '{"order_id": "sg-3"}', '"eve"') AS e_sg3 \gset
SELECT id AS d_sg3 FROM notiflow.deliveries WHERE execution_id = :e_sg3 \gset
SELECT notiflow.finish_delivery(:d_sg3, 'sent', 'Zq0Jv2cERUeWm2sQ3lS5Tg');
SELECT notiflow.record_delivery_event('ev-sendgrid', format('[
  {"event": "delivered", "timestamp": 1714564800, "sg_message_id": "Zq0Jv2cERUeWm2sQ3lS5Tg.filterdrecv-1.0", "notiflow_delivery_id": "%s"},
  {"event": "open", "timestamp": "yesterday", "sg_message_id": "Zq0Jv2cERUeWm2sQ3lS5Tg.filterdrecv-1.0"}]', :d_sg3)::jsonb) AS recorded;
SELECT * FROM ev_state WHERE order_id = 'sg-3';
SELECT count(*) AS events FROM ev_log WHERE order_id = 'sg-3';
-- an event with no id at all (SendGrid's asynchronous bounces) is about no message we can tell:
-- it is passed over, and the rest of the batch is recorded
SELECT notiflow.record_delivery_event('ev-sendgrid', format('[
  {"event": "delivered", "timestamp": 1714564800, "sg_message_id": "Zq0Jv2cERUeWm2sQ3lS5Tg.filterdrecv-1.0", "notiflow_delivery_id": "%s"},
  {"event": "bounce", "type": "bounce", "timestamp": 1714564900, "email": "eve@example.com", "sg_message_id": "", "reason": "550 5.1.1 unknown"}]', :d_sg3)::jsonb) AS recorded;
SELECT * FROM ev_state WHERE order_id = 'sg-3';
SELECT count(*) AS events FROM ev_log WHERE order_id = 'sg-3';
SELECT invalid_addresses FROM notiflow.subscribers WHERE id = 'eve';

-- an event before the dispatcher's own report: dropped while "sending" fails the mail step,
-- so the execution takes its "failed" edge and queues the SMS
SELECT notiflow.trigger('ev_receipt', '{"order_id": "sg-4"}', '"eve"') AS e_sg4 \gset
SELECT id AS d_sg4 FROM notiflow.deliveries WHERE execution_id = :e_sg4 \gset
SELECT notiflow.finish_delivery(:d_sg4, 'sending');
SELECT status FROM notiflow.executions WHERE id = :e_sg4;
SELECT notiflow.record_delivery_event('ev-sendgrid', format('[
  {"email": "eve@example.com", "timestamp": 1714564800, "event": "dropped", "reason": "Bounced Address",
   "status": "5.0.0", "sg_event_id": "zmzJhfJgAfUSOW80yEbPyw==",
   "sg_message_id": "LRzXl_NHStOGhQ4kofSm_A.filterdrecv-p3mdw1-756b745b58-kmzbl-18-5F5FC76C-9.0",
   "notiflow_delivery_id": %s}]', :d_sg4)::jsonb) AS recorded;
SELECT * FROM ev_state WHERE order_id = 'sg-4';
SELECT node_id, status, outcome FROM notiflow.execution_steps WHERE execution_id = :e_sg4 ORDER BY seq;
-- dropped as a "Bounced Address" (on SendGrid's bounce list): the address is invalid too
SELECT invalid_addresses FROM notiflow.subscribers WHERE id = 'eve';
UPDATE notiflow.subscribers SET invalid_addresses = '{}' WHERE id = 'eve';

-- an event naming one of our delivery ids with another message id (another installation sharing
-- the SendGrid account sends its own, small, delivery ids), or naming a delivery never handed to
-- the provider, changes nothing (before, it bounced or delivered our delivery)
SELECT notiflow.trigger('ev_receipt', '{"order_id": "sg-5"}', '"eve"') AS e_sg5 \gset
SELECT id AS d_sg5 FROM notiflow.deliveries WHERE execution_id = :e_sg5 \gset
SELECT notiflow.finish_delivery(:d_sg5, 'sent', 'OurOwnMessageId5');
SELECT notiflow.trigger('ev_receipt', '{"order_id": "sg-6"}', '"eve"') AS e_sg6 \gset
SELECT id AS d_sg6 FROM notiflow.deliveries WHERE execution_id = :e_sg6 \gset
SELECT notiflow.record_delivery_event('ev-sendgrid', format('[
  {"event": "bounce", "type": "bounce", "timestamp": 1714564800, "reason": "550 5.1.1 unknown",
   "sg_message_id": "TheirMessageId.filterdrecv-1.0", "notiflow_delivery_id": "%s"},
  {"event": "delivered", "timestamp": 1714564800, "sg_message_id": "TheirOtherId.filterdrecv-1.0", "notiflow_delivery_id": "%s"}]',
  :d_sg5, :d_sg6)::jsonb) AS recorded;
SELECT order_id, status, provider_message_id FROM ev_state WHERE order_id IN ('sg-5', 'sg-6');
-- nor does one naming a delivery that failed before the provider had it (say its circuit was open)
SELECT notiflow.trigger('ev_receipt', '{"order_id": "sg-7"}', '"eve"') AS e_sg7 \gset
SELECT id AS d_sg7 FROM notiflow.deliveries WHERE execution_id = :e_sg7 \gset
UPDATE notiflow.deliveries SET status = 'failed', finished_at = now(), last_error = 'circuit open' WHERE id = :d_sg7;
SELECT notiflow.record_delivery_event('ev-sendgrid', format('[
  {"event": "bounce", "type": "bounce", "timestamp": 1714564800, "reason": "550 5.1.1 unknown",
   "sg_message_id": "TheirMessageId.filterdrecv-1.0", "notiflow_delivery_id": "%s"}]', :d_sg7)::jsonb) AS recorded;
-- nor does one naming a delivery cancelled while queued
SELECT notiflow.cancel_execution(:e_sg6);
SELECT notiflow.record_delivery_event('ev-sendgrid', format('[
  {"event": "bounce", "type": "bounce", "timestamp": 1714564800, "reason": "550 5.1.1 unknown",
   "sg_message_id": "TheirMessageId.filterdrecv-1.0", "notiflow_delivery_id": "%s"}]', :d_sg6)::jsonb) AS recorded;
SELECT invalid_addresses FROM notiflow.subscribers WHERE id = 'eve';
-- the same delivery id with our message id matches
SELECT notiflow.record_delivery_event('ev-sendgrid', format('[
  {"event": "delivered", "timestamp": 1714564800, "sg_message_id": "OurOwnMessageId5.filterdrecv-1.0", "notiflow_delivery_id": "%s"}]',
  :d_sg5)::jsonb) AS recorded;
SELECT order_id, status FROM ev_state WHERE order_id = 'sg-5';

------------------------------------------------------------------ Twilio
-- the SMS of sg-4: the dispatcher reports the Message sid, then Twilio's status callbacks
-- (form parameters as a JSON object) follow
SELECT id AS d_tw1 FROM notiflow.deliveries WHERE execution_id = :e_sg4 AND node_id = 'text' \gset
SELECT notiflow.finish_delivery(:d_tw1, 'sent', 'SM1f0e3b5c2a7d4e6f8091a2b3c4d5e6f7');
SELECT notiflow.record_delivery_event('ev-twilio', '{"ApiVersion": "2010-04-01", "AccountSid": "AC0123456789abcdef0123456789abcdef",
  "From": "+15005550006", "To": "+15551234567", "MessageSid": "SM1f0e3b5c2a7d4e6f8091a2b3c4d5e6f7",
  "SmsSid": "SM1f0e3b5c2a7d4e6f8091a2b3c4d5e6f7", "MessageStatus": "sent", "SmsStatus": "sent"}') AS recorded;
SELECT notiflow.record_delivery_event('ev-twilio', '{"ApiVersion": "2010-04-01", "AccountSid": "AC0123456789abcdef0123456789abcdef",
  "From": "+15005550006", "To": "+15551234567", "MessageSid": "SM1f0e3b5c2a7d4e6f8091a2b3c4d5e6f7",
  "SmsSid": "SM1f0e3b5c2a7d4e6f8091a2b3c4d5e6f7", "MessageStatus": "delivered", "SmsStatus": "delivered"}') AS recorded;
SELECT * FROM ev_state WHERE order_id = 'sg-4';
SELECT * FROM ev_log WHERE order_id = 'sg-4';
-- an "undelivered" replayed after "delivered" is recorded, and changes nothing: after delivered,
-- only a bounce fails a delivery (before, the SMS failed and its execution took "failed" again)
SELECT notiflow.record_delivery_event('ev-twilio', '{"AccountSid": "AC0123456789abcdef0123456789abcdef",
  "MessageSid": "SM1f0e3b5c2a7d4e6f8091a2b3c4d5e6f7", "MessageStatus": "undelivered", "ErrorCode": "30003"}') AS recorded;
SELECT order_id, node_id, status FROM ev_state WHERE order_id = 'sg-4' AND node_id = 'text';
SELECT provider_event, status_applied FROM ev_log WHERE order_id = 'sg-4' AND provider_event = 'undelivered';
-- nor does it mark the number invalid, though its error (30005) would for a live delivery
SELECT notiflow.record_delivery_event('ev-twilio', '{"AccountSid": "AC0123456789abcdef0123456789abcdef",
  "MessageSid": "SM1f0e3b5c2a7d4e6f8091a2b3c4d5e6f7", "MessageStatus": "undelivered", "ErrorCode": "30005"}') AS recorded;
SELECT invalid_addresses FROM notiflow.subscribers WHERE id = 'eve';
-- no email address: the SMS is sent straight away; the carrier cannot deliver it
SELECT notiflow.trigger('ev_receipt', '{"order_id": "tw-2"}', '{"name": "Tom", "phone": "+447700900123"}') AS e_tw2 \gset
SELECT notiflow.finish_delivery(d.id, 'sent', 'SM9a8b7c6d5e4f30211203948576abcdef') FROM notiflow.deliveries d WHERE d.execution_id = :e_tw2;
SELECT notiflow.record_delivery_event('ev-twilio', '{"AccountSid": "AC0123456789abcdef0123456789abcdef",
  "MessageSid": "SM9a8b7c6d5e4f30211203948576abcdef", "MessageStatus": "undelivered", "ErrorCode": "30003",
  "From": "+15005550006", "To": "+447700900123", "ApiVersion": "2010-04-01"}') AS recorded;
SELECT * FROM ev_state WHERE order_id = 'tw-2';
SELECT * FROM ev_log WHERE order_id = 'tw-2';
-- a callback that comes before the send is recorded (Twilio answered, the dispatcher's record has
-- not committed) matches nothing yet: it is kept, and applied when the send is recorded with its sid
SELECT notiflow.trigger('ev_receipt', '{"order_id": "tw-3"}', '{"name": "Una", "phone": "+447700900456"}') AS e_tw3 \gset
SELECT id AS d_tw3 FROM notiflow.deliveries WHERE execution_id = :e_tw3 \gset
SELECT notiflow.finish_delivery(:d_tw3, 'sending');
SELECT notiflow.record_delivery_event('ev-twilio', '{"MessageSid": "SM5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e", "MessageStatus": "undelivered",
  "ErrorCode": "30003", "To": "+447700900456"}') AS recorded_early;
SELECT provider, message_id, body ->> 'MessageStatus' AS status FROM notiflow.delivery_events_early;
SELECT notiflow.finish_delivery(:d_tw3, 'sent', 'SM5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e');
SELECT * FROM ev_state WHERE order_id = 'tw-3';
SELECT * FROM ev_log WHERE order_id = 'tw-3';
SELECT count(*) AS still_kept FROM notiflow.delivery_events_early;

------------------------------------------------------------------ Mailgun
UPDATE notiflow.providers SET enabled = (name = 'ev-mailgun') WHERE name IN ('ev-sendgrid', 'ev-mailgun', 'ev-ses');
SELECT notiflow.trigger('ev_receipt', '{"order_id": "mg-1"}', '"eve"') AS e_mg1 \gset
SELECT id AS d_mg1 FROM notiflow.deliveries WHERE execution_id = :e_mg1 \gset
-- the adapter stores Mailgun's id without its angle brackets, as the events show it
SELECT notiflow.finish_delivery(:d_mg1, 'sent', '20240501120000.1.ABCDEF0123456789@mg.example.com');
-- a temporary failure is only recorded; delivered is matched by the message-id header alone
SELECT notiflow.record_delivery_event('ev-mailgun', format('{
  "signature": {"timestamp": "1714564900", "token": "a8ce0edb2dd8301dee6c2405235584e45aa91d1e9f979f3de0", "signature": "d2271d12299f6592d9d44cd9d250f0704e4674c30d79d07c47a66f95ce71cf55"},
  "event-data": {"id": "Ase7i2zsRYeDXztHGENqRA", "timestamp": 1714564900.123456, "event": "failed", "severity": "temporary",
    "reason": "generic", "recipient": "eve@example.com",
    "delivery-status": {"attempt-no": 1, "code": 452, "message": "4.2.2 The email account that you tried to reach is over quota.",
                        "description": "", "retry-seconds": 600},
    "message": {"headers": {"message-id": "20240501120000.1.ABCDEF0123456789@mg.example.com", "to": "eve@example.com"}},
    "user-variables": {"notiflow_delivery_id": "%s"}}}', :d_mg1)::jsonb) AS recorded;
SELECT notiflow.record_delivery_event('ev-mailgun', '{
  "signature": {"timestamp": "1714565500", "token": "b9df1fec3ee9412eff7d3516346695f56bb02e2f0a08a4e0f1", "signature": "e3382e23300a7603e0e55de0e361f1815f5785d41e8ae18d58b77a06df82d066"},
  "event-data": {"id": "CPgfbmQMTCKtHW6uIWtuVe", "timestamp": 1714565500.5, "event": "delivered", "recipient": "eve@example.com",
    "delivery-status": {"attempt-no": 2, "code": 250, "message": "OK", "description": ""},
    "message": {"headers": {"message-id": "20240501120000.1.ABCDEF0123456789@mg.example.com"}}}}') AS recorded;
-- opened, clicked and complained are only recorded: the address is not marked invalid
SELECT notiflow.record_delivery_event('ev-mailgun', format('{"signature": {},
  "event-data": {"event": "%s", "timestamp": %s, "recipient": "eve@example.com",
    "message": {"headers": {"message-id": "<20240501120000.1.ABCDEF0123456789@mg.example.com>"}},
    "user-variables": {"notiflow_delivery_id": %s}}}', ev, 1714566000 + n, :d_mg1)::jsonb) AS recorded
  FROM unnest(ARRAY['opened', 'clicked', 'complained']) WITH ORDINALITY AS x(ev, n);
SELECT * FROM ev_state WHERE order_id = 'mg-1';
SELECT * FROM ev_log WHERE order_id = 'mg-1';
SELECT invalid_addresses FROM notiflow.subscribers WHERE id = 'eve';
-- delivered before the dispatcher reported "sent": the step completes; the late report changes
-- no status but keeps the provider message id
SELECT notiflow.trigger('ev_receipt', '{"order_id": "mg-2"}', '"eve"') AS e_mg2 \gset
SELECT id AS d_mg2 FROM notiflow.deliveries WHERE execution_id = :e_mg2 \gset
SELECT notiflow.finish_delivery(:d_mg2, 'sending');
SELECT notiflow.record_delivery_event('ev-mailgun', format('{"signature": {},
  "event-data": {"event": "delivered", "timestamp": 1714564800, "recipient": "eve@example.com",
    "delivery-status": {"code": 250, "message": "OK"}, "user-variables": {"notiflow_delivery_id": "%s"}}}', :d_mg2)::jsonb) AS recorded;
SELECT notiflow.finish_delivery(:d_mg2, 'sent', '20240501120001.2.FEDCBA9876543210@mg.example.com') AS late_report_changed;
SELECT * FROM ev_state WHERE order_id = 'mg-2';
-- a permanent failure after sent
SELECT notiflow.trigger('ev_receipt', '{"order_id": "mg-3"}', '"eve"') AS e_mg3 \gset
SELECT notiflow.finish_delivery(d.id, 'sent', '20240501120002.3.0123456789ABCDEF@mg.example.com')
  FROM notiflow.deliveries d WHERE d.execution_id = :e_mg3;
SELECT notiflow.record_delivery_event('ev-mailgun', '{"signature": {},
  "event-data": {"event": "failed", "severity": "permanent", "reason": "bounce", "timestamp": 1714564830,
    "recipient": "eve@example.com", "log-level": "error",
    "delivery-status": {"attempt-no": 1, "code": 550, "message": "5.1.1 The email account that you tried to reach does not exist.",
                        "description": "", "bounce-code": "5.1.1"},
    "message": {"headers": {"message-id": "20240501120002.3.0123456789ABCDEF@mg.example.com"}}}}') AS recorded;
SELECT * FROM ev_state WHERE order_id = 'mg-3';
-- a permanent bounce marks the address invalid
SELECT invalid_addresses FROM notiflow.subscribers WHERE id = 'eve';
UPDATE notiflow.subscribers SET invalid_addresses = '{}' WHERE id = 'eve';

------------------------------------------------------------------ SES
UPDATE notiflow.providers SET enabled = (name = 'ev-ses') WHERE name IN ('ev-sendgrid', 'ev-mailgun', 'ev-ses');
SELECT notiflow.trigger('ev_receipt', '{"order_id": "ses-1"}', '"eve"') AS e_ses1 \gset
SELECT notiflow.finish_delivery(d.id, 'sent', '0102018f3b5e5c1e-6c4e7d43-1111-4a9c-9d5e-2f0a8c1d7e11-000000')
  FROM notiflow.deliveries d WHERE d.execution_id = :e_ses1;
-- an SNS message carrying an SES Delivery notification (matched by mail.messageId)
SELECT notiflow.record_delivery_event('ev-ses', '{"Type": "Notification",
  "MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324", "TopicArn": "arn:aws:sns:eu-west-1:123456789012:ses-notifications",
  "Timestamp": "2024-05-01T12:00:04.000Z", "SignatureVersion": "1", "Signature": "EXAMPLE",
  "SigningCertURL": "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-example.pem"}'::jsonb
  || jsonb_build_object('Message', '{"notificationType": "Delivery",
       "mail": {"timestamp": "2024-05-01T12:00:00.000Z", "source": "shop@example.com",
                "messageId": "0102018f3b5e5c1e-6c4e7d43-1111-4a9c-9d5e-2f0a8c1d7e11-000000", "destination": ["eve@example.com"]},
       "delivery": {"timestamp": "2024-05-01T12:00:03.000Z", "processingTimeMillis": 3000, "recipients": ["eve@example.com"],
                    "smtpResponse": "250 2.0.0 OK", "reportingMTA": "a8-70.smtp-out.amazonses.com"}}')) AS recorded;
-- a bare Complaint notification
SELECT notiflow.record_delivery_event('ev-ses', '{"notificationType": "Complaint",
  "complaint": {"complainedRecipients": [{"emailAddress": "eve@example.com"}], "timestamp": "2024-05-02T08:00:00.000Z",
                "feedbackId": "0102018f3b5e5c1e-feedback", "complaintFeedbackType": "abuse"},
  "mail": {"timestamp": "2024-05-01T12:00:00.000Z", "messageId": "0102018f3b5e5c1e-6c4e7d43-1111-4a9c-9d5e-2f0a8c1d7e11-000000"}}') AS recorded;
SELECT * FROM ev_state WHERE order_id = 'ses-1';
SELECT * FROM ev_log WHERE order_id = 'ses-1';
-- event publishing (eventType, the tag notiflow_delivery_id): Send, a transient bounce (recorded only), then a permanent one
SELECT notiflow.trigger('ev_receipt', '{"order_id": "ses-2"}', '"eve"') AS e_ses2 \gset
SELECT id AS d_ses2 FROM notiflow.deliveries WHERE execution_id = :e_ses2 \gset
SELECT notiflow.finish_delivery(:d_ses2, 'sent', '0102018f3b5e5c1e-7d5f8e54-2222-4b0d-8e6f-3a1b9d2e8f22-000000');
SELECT notiflow.record_delivery_event('ev-ses', format('{"eventType": "Send", "send": {},
  "mail": {"timestamp": "2024-05-01T12:00:00.000Z", "messageId": "0102018f3b5e5c1e-7d5f8e54-2222-4b0d-8e6f-3a1b9d2e8f22-000000",
           "tags": {"ses:configuration-set": ["notiflow"], "notiflow_delivery_id": ["%s"]}}}', :d_ses2)::jsonb) AS recorded;
SELECT notiflow.record_delivery_event('ev-ses', format('{"eventType": "Bounce",
  "bounce": {"bounceType": "Transient", "bounceSubType": "MailboxFull", "timestamp": "2024-05-01T12:05:00.000Z",
             "bouncedRecipients": [{"emailAddress": "eve@example.com", "diagnosticCode": "smtp; 452 4.2.2 Mailbox full"}]},
  "mail": {"timestamp": "2024-05-01T12:00:00.000Z", "messageId": "0102018f3b5e5c1e-7d5f8e54-2222-4b0d-8e6f-3a1b9d2e8f22-000000",
           "tags": {"notiflow_delivery_id": ["%s"]}}}', :d_ses2)::jsonb) AS recorded;
SELECT * FROM ev_state WHERE order_id = 'ses-2';
SELECT notiflow.record_delivery_event('ev-ses', jsonb_build_object('Type', 'Notification', 'MessageId', 'e1d8c7a6-0000-4f00-9000-000000000001',
  'Message', format('{"eventType": "Bounce",
    "bounce": {"bounceType": "Permanent", "bounceSubType": "General", "timestamp": "2024-05-01T13:00:00.000Z",
               "bouncedRecipients": [{"emailAddress": "eve@example.com", "action": "failed", "status": "5.1.1",
                                      "diagnosticCode": "smtp; 550 5.1.1 user unknown"}]},
    "mail": {"timestamp": "2024-05-01T12:00:00.000Z", "messageId": "0102018f3b5e5c1e-7d5f8e54-2222-4b0d-8e6f-3a1b9d2e8f22-000000",
             "tags": {"notiflow_delivery_id": ["%s"]}}}', :d_ses2))) AS recorded;
SELECT * FROM ev_state WHERE order_id = 'ses-2';
SELECT * FROM ev_log WHERE order_id = 'ses-2';
-- the Transient bounce did not mark the address invalid, the Permanent one did
SELECT invalid_addresses FROM notiflow.subscribers WHERE id = 'eve';
UPDATE notiflow.subscribers SET invalid_addresses = '{}' WHERE id = 'eve';
-- SNS subscription confirmations and the SES test notification carry no delivery event
SELECT notiflow.record_delivery_event('ev-ses', '{"Type": "SubscriptionConfirmation", "MessageId": "165545c9-2a5c-472c-8df2-7ff2be2b3b1b",
  "Token": "2336412f37f", "TopicArn": "arn:aws:sns:eu-west-1:123456789012:ses-notifications",
  "Message": "You have chosen to subscribe to the topic.", "SubscribeURL": "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription"}') AS recorded;
SELECT notiflow.record_delivery_event('ev-ses', '{"Type": "Notification", "Message": "{\"notificationType\": \"AmazonSnsSubscriptionSucceeded\", \"message\": \"You have successfully subscribed.\"}"}') AS recorded;

------------------------------------------------------------------ how each provider event is read
SELECT c.kind, x.provider_event, x.event, x.status, x.reason, coalesce(x.invalid_recipient, false) AS invalid_recipient
  FROM (VALUES
    ('sendgrid', '[{"event": "spamreport", "sg_message_id": "m.1"}, {"event": "unsubscribe", "sg_message_id": "m.1"},
                   {"event": "group_unsubscribe", "sg_message_id": "m.1"}, {"event": "group_resubscribe", "sg_message_id": "m.1"},
                   {"event": "dropped", "sg_message_id": "m.1"}]'::jsonb),
    ('twilio', '{"MessageSid": "SM1", "MessageStatus": "accepted"}'),
    ('twilio', '{"MessageSid": "SM1", "MessageStatus": "scheduled"}'),
    ('twilio', '{"SmsSid": "SM1", "SmsStatus": "sending"}'),
    ('twilio', '{"MessageSid": "SM1", "MessageStatus": "failed", "ErrorCode": "30007", "ErrorMessage": "Carrier violation"}'),
    ('twilio', '{"MessageSid": "SM1", "MessageStatus": "undelivered", "ErrorCode": "30005", "ErrorMessage": "Unknown destination handset"}'),
    ('twilio', '{"MessageSid": "SM1", "MessageStatus": "canceled"}'),
    ('twilio', '{"MessageSid": "SM1", "MessageStatus": "read"}'),
    ('twilio', '{"MessageSid": "SM1", "MessageStatus": "received"}'),
    ('mailgun', '{"event-data": {"event": "accepted", "message": {"headers": {"message-id": "m@mg"}}}}'),
    ('mailgun', '{"event-data": {"event": "failed", "severity": "permanent", "reason": "suppress-bounce",
                  "delivery-status": {"code": 605, "message": "Not delivering to previously bounced address"},
                  "message": {"headers": {"message-id": "m@mg"}}}}'),
    ('mailgun', '{"event-data": {"event": "failed", "severity": "permanent", "reason": "old",
                  "message": {"headers": {"message-id": "m@mg"}}}}'),
    ('mailgun', '{"event-data": {"event": "rejected", "reject": {"reason": "Sandbox subdomains are for test purposes only"},
                  "message": {"headers": {"message-id": "m@mg"}}}}'),
    ('mailgun', '{"event-data": {"event": "unsubscribed", "message": {"headers": {"message-id": "m@mg"}}}}'),
    ('mailgun', '{"event-data": {"event": "stored", "message": {"headers": {"message-id": "m@mg"}}}}'),
    ('ses', '{"eventType": "Reject", "reject": {"reason": "Bad content"}, "mail": {"messageId": "m"}}'),
    ('ses', '{"eventType": "Rendering Failure", "failure": {"errorMessage": "Attribute name is missing", "templateName": "t"},
              "mail": {"messageId": "m"}}'),
    ('ses', '{"eventType": "DeliveryDelay", "deliveryDelay": {"delayType": "MailboxFull", "timestamp": "2024-05-01T12:00:00Z"},
              "mail": {"messageId": "m"}}'),
    ('ses', '{"eventType": "Bounce", "bounce": {"bounceType": "Undetermined", "bounceSubType": "Undetermined"}, "mail": {"messageId": "m"}}'),
    ('ses', '{"eventType": "Complaint", "complaint": {}, "mail": {"messageId": "m"}}'),
    ('ses', '{"eventType": "Open", "open": {"timestamp": "2024-05-01T12:00:00Z"}, "mail": {"messageId": "m"}}'),
    ('ses', '{"eventType": "Click", "click": {"link": "https://example.com"}, "mail": {"messageId": "m"}}'),
    ('ses', '{"eventType": "Subscription", "mail": {"messageId": "m"}}')) AS c(kind, body),
       notiflow.provider_events(c.kind, c.body) x;

------------------------------------------------------------------ unmatched events: 0, nothing stored
SELECT count(*) AS events_before FROM notiflow.delivery_events \gset
SELECT notiflow.record_delivery_event('ev-sendgrid', '[{"event": "delivered", "timestamp": 1714564800,
  "sg_message_id": "UnknownMessageId0000A.filterdrecv-1.0"}]') AS unknown_message_id;
-- a delivery of another provider, and one that does not exist
SELECT notiflow.record_delivery_event('ev-sendgrid', format('[{"event": "bounce", "reason": "550 no such user",
  "sg_message_id": "x.y", "notiflow_delivery_id": "%s"}]', :d_mg1)::jsonb) AS other_providers_delivery;
SELECT notiflow.record_delivery_event('ev-sendgrid', '[{"event": "delivered", "notiflow_delivery_id": "999999999"}]') AS no_such_delivery;
SELECT notiflow.record_delivery_event('ev-twilio', '{"MessageSid": "SM00000000000000000000000000000000", "MessageStatus": "delivered"}') AS unknown_sid;
-- (kept as an early event for an hour, in case its send is being recorded)
SELECT message_id FROM notiflow.delivery_events_early;
SELECT notiflow.record_delivery_event('ev-mailgun', '{"event-data": {"event": "delivered", "message": {"headers": {"message-id": "nobody@mg.example.com"}}}}') AS unknown_message_id;
SELECT notiflow.record_delivery_event('ev-ses', '{"notificationType": "Delivery", "mail": {"messageId": "0000000000000000-unknown-000000"}, "delivery": {}}') AS unknown_message_id;
SELECT count(*) - :events_before AS events_added FROM notiflow.delivery_events;
SELECT status, last_error FROM notiflow.deliveries WHERE id = :d_mg1;

------------------------------------------------------------------ bad input: SQLSTATE and a DETAIL naming the field
SELECT notiflow.record_delivery_event('no-such-provider', '[]');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT notiflow.record_delivery_event(NULL, '[]');
SELECT notiflow.record_delivery_event('ev-smtp', '{}');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT notiflow.record_delivery_event('ev-sendgrid', NULL);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT notiflow.record_delivery_event('ev-sendgrid', '"delivered"');
SELECT notiflow.record_delivery_event('ev-sendgrid', '[{"event": "open", "sg_message_id": "a.b"}, 1]');
SELECT notiflow.record_delivery_event('ev-sendgrid', '[{"sg_message_id": "a.b"}]');
SELECT notiflow.record_delivery_event('ev-sendgrid', '[{"event": "delivered", "email": "eve@example.com"}]');
SELECT notiflow.record_delivery_event('ev-sendgrid', '[{"event": "delivered", "notiflow_delivery_id": "12; drop"}]');
SELECT notiflow.record_delivery_event('ev-sendgrid', '[{"event": "delivered", "sg_message_id": "a.b", "timestamp": "yesterday"}]');
SELECT notiflow.record_delivery_event('ev-sendgrid', '[{"event": "delivered", "sg_message_id": "a.b", "timestamp": 1714564800000}]');
SELECT notiflow.record_delivery_event('ev-twilio', '[]');
SELECT notiflow.record_delivery_event('ev-twilio', '{"MessageStatus": "delivered"}');
SELECT notiflow.record_delivery_event('ev-twilio', '{"MessageSid": "SM1"}');
SELECT notiflow.record_delivery_event('ev-mailgun', '{"signature": {"token": "t"}}');
SELECT notiflow.record_delivery_event('ev-mailgun', '{"event-data": {"message": {"headers": {"message-id": "m@mg"}}}}');
SELECT notiflow.record_delivery_event('ev-mailgun', '{"event-data": {"event": "delivered", "recipient": "eve@example.com"}}');
SELECT notiflow.record_delivery_event('ev-ses', '{"Type": "Notification", "Message": "not json"}');
SELECT notiflow.record_delivery_event('ev-ses', '{"Type": "Heartbeat"}');
SELECT notiflow.record_delivery_event('ev-ses', '{"mail": {"messageId": "m"}}');
SELECT notiflow.record_delivery_event('ev-ses', '{"notificationType": "Delivery"}');
SELECT notiflow.record_delivery_event('ev-ses', '{"eventType": "Delivery", "mail": {"destination": ["eve@example.com"]}}');
SELECT notiflow.record_delivery_event('ev-ses', '{"eventType": "Delivery", "mail": {"messageId": "m", "tags": {"notiflow_delivery_id": ["x"]}}}');
-- leave the other tests' providers in charge
UPDATE notiflow.providers SET enabled = false WHERE name IN ('ev-sendgrid', 'ev-mailgun', 'ev-ses', 'ev-twilio');
