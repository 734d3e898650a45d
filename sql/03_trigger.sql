-- trigger(): executions, steps, deliveries, idempotency, bad input.
\set VERBOSITY default
\set SHOW_CONTEXT never
SET client_min_messages = warning;

SELECT notiflow.put_provider('mail', 'email', 'sendgrid', '{"api_key": "k", "from": "shop@example.com"}');
SELECT notiflow.put_provider('text', 'sms', 'twilio', '{"account_sid": "AC1", "auth_token": "t", "from": "+15550001111"}');
SELECT notiflow.put_subscriber('ann', '{"name": "Ann & Co", "email": "ann@example.com", "phone": "+15551234567"}');
SELECT notiflow.put_workflow('order_shipped', '{"name": "Order shipped",
 "nodes": [
   {"id": "start", "type": "trigger", "required": ["order_id"]},
   {"id": "big",   "type": "condition", "if": "$.payload.total > 100"},
   {"id": "mail",  "type": "email", "subject": "Order {{payload.order_id}} shipped",
                   "text": "Hi {{recipient.name}}", "html": "<p>Hi {{recipient.name}}</p>"},
   {"id": "sms",   "type": "sms", "text": "Order {{payload.order_id}} is on its way"}],
 "edges": [
   {"from": "start", "to": "big"},
   {"from": "big", "to": "mail", "on": "true"},
   {"from": "big", "to": "sms",  "on": "false"}]}');

SELECT notiflow.trigger('order_shipped', '{"order_id": 42, "total": 150}', '{"subscriber_id": "ann"}') > 0 AS started;
SELECT notiflow.trigger('order_shipped', '{"order_id": 43, "total": 20}', '{"email": "guest@example.com", "phone": "+447700900123", "name": "Guest"}') > 0 AS started;

SELECT workflow_key, workflow_version, status, payload, subscriber_id, recipient ->> 'email' AS email
  FROM notiflow.executions ORDER BY id;
SELECT node_id, node_type, status, outcome, output
  FROM notiflow.execution_steps ORDER BY execution_id, seq;
SELECT node_id, channel, provider, recipient, content, status, attempts
  FROM notiflow.deliveries ORDER BY id;

-- idempotency: the same key returns the first execution and creates nothing
SELECT notiflow.trigger('order_shipped', '{"order_id": 44, "total": 500}', '{"subscriber_id": "ann"}', 'order-44') AS first \gset
SELECT notiflow.trigger('order_shipped', '{"order_id": 44, "total": 500}', '{"subscriber_id": "ann"}', 'order-44') = :first AS same_id;
SELECT count(*) AS executions_with_key FROM notiflow.executions WHERE idempotency_key = 'order-44';

-- a delivery finishing resumes the execution
SELECT notiflow.finish_delivery(d.id, 'sent', 'msg-1') FROM notiflow.deliveries d
 WHERE d.execution_id = :first;
SELECT status, finished_at IS NOT NULL AS finished FROM notiflow.executions WHERE id = :first;
SELECT status, outcome, output -> 'status' AS delivery_status
  FROM notiflow.execution_steps WHERE execution_id = :first AND node_id = 'mail';
-- a late report for an ended delivery changes nothing; a bounce after "sent" is recorded
SELECT notiflow.finish_delivery(d.id, 'cancelled') AS changed FROM notiflow.deliveries d WHERE d.execution_id = :first;
SELECT notiflow.finish_delivery(d.id, 'failed', NULL, 'bounced') AS changed FROM notiflow.deliveries d WHERE d.execution_id = :first;
SELECT status, last_error FROM notiflow.deliveries WHERE execution_id = :first;
SELECT status FROM notiflow.executions WHERE id = :first;

-- fan-out
SELECT notiflow.put_subscriber('u' || i, jsonb_build_object('email', 'u' || i || '@example.com'))
  FROM generate_series(1, 3) i;
CREATE TEMP TABLE first_batch AS
SELECT * FROM notiflow.trigger_many('order_shipped', '["u1", "u2", {"subscriber_id": "u3"}]', '{"order_id": 7, "total": 999}', 'batch-7');
SELECT recipient, execution_id > 0 AS started FROM first_batch;
-- the same call again returns the same executions and creates none
SELECT count(*) AS same_executions
  FROM notiflow.trigger_many('order_shipped', '["u1", "u2", {"subscriber_id": "u3"}]', '{"order_id": 7, "total": 999}', 'batch-7') t
  JOIN first_batch f USING (execution_id);
SELECT idempotency_key FROM notiflow.executions WHERE idempotency_key LIKE 'batch-7/%' ORDER BY 1;
-- a subscriber id that looks like an inline contact's position still gets its own key
SELECT notiflow.put_subscriber('#2', '{"email": "hash@example.com"}');
SELECT count(DISTINCT execution_id) AS executions
  FROM notiflow.trigger_many('order_shipped', '["#2", {"email": "guest2@example.com"}]', '{"order_id": 8}', 'batch-8');
SELECT idempotency_key, recipient ->> 'email' AS email FROM notiflow.executions WHERE idempotency_key LIKE 'batch-8/%' ORDER BY 1;

-- bad input: each a clear error naming the field, nothing created
SELECT count(*) AS executions_before FROM notiflow.executions \gset
SELECT notiflow.trigger('order_shipped', '[1, 2]');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT notiflow.trigger('order_shipped', '"text"');
SELECT notiflow.trigger('order_shipped', '{"total": 1}');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT notiflow.trigger('no_such_workflow', '{}');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT notiflow.trigger(NULL, '{}');
SELECT notiflow.trigger('order_shipped', '{"order_id": 1}', '{"subscriber_id": "nobody"}');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT notiflow.trigger('order_shipped', '{"order_id": 1}', '{"email": "nope"}');
SELECT notiflow.trigger('order_shipped', '{"order_id": 1}', E'{"email": "ann\u2003@example.com"}');  -- an em space
SELECT notiflow.trigger('order_shipped', '{"order_id": 1}', '{"phone": "12345"}');
SELECT notiflow.trigger('order_shipped', '{"order_id": 1}', '{"fax": "+15551234567"}');
SELECT notiflow.trigger('order_shipped', '{"order_id": 1}', '[1]');
SELECT notiflow.trigger('order_shipped', '{"order_id": 1}', NULL, '');
SET notiflow.max_payload_size = '1kB';
SELECT notiflow.trigger('order_shipped', jsonb_build_object('order_id', 1, 'blob', repeat('x', 2000)));
\echo SQLSTATE :LAST_ERROR_SQLSTATE
-- an inline recipient is stored with the execution too: the same limit
SELECT notiflow.trigger('order_shipped', '{"order_id": 1}',
                        jsonb_build_object('email', 'big@example.com', 'data', jsonb_build_object('blob', repeat('x', 2000))));
\echo SQLSTATE :LAST_ERROR_SQLSTATE
RESET notiflow.max_payload_size;
-- each key is locked until the transaction ends: a call may not fill the server's lock table
\set VERBOSITY terse
SELECT count(*) FROM notiflow.trigger_many('order_shipped',
  (SELECT jsonb_agg(jsonb_build_object('email', 'g' || i || '@example.com')) FROM generate_series(1, 20000) i), '{}', 'huge');
\set VERBOSITY default
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM notiflow.trigger_many('order_shipped', '{"not": "an array"}');
SELECT * FROM notiflow.trigger_many('order_shipped', '["u1"]', '{}', '');
SELECT count(*) = :executions_before AS nothing_created FROM notiflow.executions;

-- a node's "to" must render one address: a list would reach everyone in it (Mailgun takes one)
SELECT notiflow.put_workflow('to_list', '{"nodes": [{"id": "t", "type": "trigger"},
  {"id": "m", "type": "email", "to": "{{payload.to}}", "subject": "s", "text": "x"},
  {"id": "s", "type": "sms", "to": "{{payload.phone}}", "text": "x"}],
  "edges": [{"from": "t", "to": "m"}, {"from": "t", "to": "s"}]}') > 0 AS put;
SELECT notiflow.trigger('to_list', '{"to": "a,b@example.org", "phone": "+15551234567;+15557654321"}') AS listed \gset
SELECT node_id, status, outcome, output FROM notiflow.execution_steps WHERE execution_id = :listed ORDER BY seq;
SELECT count(*) AS deliveries FROM notiflow.deliveries WHERE execution_id = :listed;

-- a condition comparing a datetime without a time zone with one that has it: evaluated with the
-- session's TimeZone (the server's in the workers); it raised 0A000 and failed the whole trigger
SELECT notiflow.put_workflow('tz_compare', '{"nodes": [{"id": "t", "type": "trigger"},
  {"id": "c", "type": "condition", "if": "$.payload.at.datetime() < \"2024-01-01 00:00:00+00\".datetime()"}],
  "edges": [{"from": "t", "to": "c"}]}') > 0 AS put;
SET timezone = 'UTC';
SELECT notiflow.trigger('tz_compare', '{"at": "2023-12-31 23:00:00"}') AS tz_early \gset
SELECT notiflow.trigger('tz_compare', '{"at": "2024-01-01 01:00:00"}') AS tz_late \gset
SELECT execution_id = :tz_early AS early, outcome FROM notiflow.execution_steps
 WHERE execution_id IN (:tz_early, :tz_late) AND node_id = 'c' ORDER BY execution_id;
RESET timezone;

-- an error while rendering names the field, the node and the workflow (CONTEXT)
SELECT notiflow.put_workflow('loop_partial', '{"nodes": [{"id": "t", "type": "trigger"},
  {"id": "mail", "type": "email", "to": "a@example.org", "subject": "ok", "text": "{{>loop}}"}],
  "edges": [{"from": "t", "to": "mail"}], "partials": {"loop": "x{{>loop}}"}}') > 0 AS put;
\set SHOW_CONTEXT errors
SELECT notiflow.trigger('loop_partial', '{}');
SELECT notiflow.put_workflow('loop_key', '{"nodes": [{"id": "t", "type": "trigger"},
  {"id": "w", "type": "wait", "events": ["e"], "key": "{{>loop}}"}],
  "edges": [{"from": "t", "to": "w"}], "partials": {"loop": "x{{>loop}}"}}') > 0 AS put;
SELECT notiflow.trigger('loop_key', '{}');
\set SHOW_CONTEXT never
