-- Wait nodes: several correlated events in any order, early events kept in the
-- inbox, timeouts, events from the execution's own deliveries.
\set ON_ERROR_STOP 1
\set QUIET 1
SET client_min_messages = warning;
BEGIN;
SELECT plan(63);

SELECT notiflow.put_provider('text', 'sms', 'twilio', '{"account_sid": "AC1", "auth_token": "t", "from": "+15550001111"}');
SELECT notiflow.put_provider('mail', 'email', 'sendgrid', '{"api_key": "k", "from": "shop@example.com"}');
SELECT notiflow.put_subscriber('ann', '{"email": "ann@example.com", "phone": "+15551234567"}');
SELECT notiflow.put_workflow('ship', '{"nodes": [
    {"id": "t", "type": "trigger"},
    {"id": "w", "type": "wait", "events": ["payment.confirmed", "parcel.scanned"],
     "key": "{{payload.order_id}}", "timeout": "10 minutes"},
    {"id": "f", "type": "transform", "set": {"vars.scan": "$.steps.w.events.\"parcel.scanned\".at",
                                             "vars.amount": "$.steps.w.events.\"payment.confirmed\".amount"}},
    {"id": "done", "type": "sms", "text": "paid {{vars.amount}}, scanned at {{vars.scan}}"},
    {"id": "late", "type": "sms", "text": "still waiting for order {{payload.order_id}}"}],
  "edges": [{"from": "t", "to": "w"}, {"from": "w", "to": "f", "on": "completed"},
            {"from": "f", "to": "done"}, {"from": "w", "to": "late", "on": "timeout"}]}');

-- events after the wait is reached, in one order ...
SELECT notiflow.trigger('ship', '{"order_id": "o1"}', '"ann"') AS o1 \gset
SELECT is((SELECT status FROM notiflow.execution_steps WHERE execution_id = :o1 AND node_id = 'w'), 'waiting',
          'the wait node waits');
SELECT ok((SELECT wake_at IS NOT NULL FROM notiflow.executions WHERE id = :o1), 'its timeout is the execution''s wake-up');
SELECT is(notiflow.emit_event('payment.confirmed', 'o1', '{"amount": 42}'), 0, 'the first event completes nothing');
SELECT is((SELECT received FROM notiflow.execution_waits WHERE execution_id = :o1), '{"payment.confirmed": {"amount": 42}}'::jsonb,
          'but is recorded on the wait');
SELECT is(notiflow.emit_event('parcel.scanned', 'o1', '{"at": "09:00"}'), 1, 'the last event completes and resumes the execution');
SELECT is((SELECT content ->> 'text' FROM notiflow.deliveries WHERE execution_id = :o1 AND node_id = 'done'),
          'paid 42, scanned at 09:00', 'the next nodes see each event''s data by name');
SELECT is((SELECT outcome FROM notiflow.execution_steps WHERE execution_id = :o1 AND node_id = 'w'), 'completed',
          'the wait''s outcome is completed');

-- ... and in the other order
SELECT notiflow.trigger('ship', '{"order_id": "o2"}', '"ann"') AS o2 \gset
SELECT is(notiflow.emit_event('parcel.scanned', 'o2', '{"at": "10:00"}'), 0, 'reverse order: first event');
SELECT is(notiflow.emit_event('payment.confirmed', 'o2', '{"amount": 7}'), 1, 'reverse order: last event completes');
SELECT is((SELECT content ->> 'text' FROM notiflow.deliveries WHERE execution_id = :o2 AND node_id = 'done'),
          'paid 7, scanned at 10:00', 'the same result whatever the order');

-- both events before the execution reaches the wait: kept in the inbox
SELECT is(notiflow.emit_event('payment.confirmed', 'o3', '{"amount": 1}'), 0, 'an early event waits in the inbox');
SELECT is(notiflow.emit_event('parcel.scanned', 'o3', '{"at": "11:00"}'), 0, 'so does the second');
SELECT is((SELECT count(*)::int FROM notiflow.event_inbox WHERE correlation_key = 'o3'), 2, 'both are in the inbox');
SELECT notiflow.trigger('ship', '{"order_id": "o3"}', '"ann"') AS o3 \gset
SELECT is((SELECT outcome FROM notiflow.execution_steps WHERE execution_id = :o3 AND node_id = 'w'), 'completed',
          'reaching the wait with both events in the inbox completes it at once');
SELECT is((SELECT count(*)::int FROM notiflow.event_inbox WHERE correlation_key = 'o3'), 2,
          'the inbox events stay (for other executions that reach a wait on the key)');
-- a fan-out after early events: every recipient's execution takes them, not only the first
SELECT is(notiflow.emit_event('payment.confirmed', 'o3f', '{"amount": 2}'), 0, 'fan-out: an early event');
SELECT is(notiflow.emit_event('parcel.scanned', 'o3f', '{"at": "11:30"}'), 0, 'fan-out: a second early event');
SELECT notiflow.put_subscriber('bob', '{"phone": "+15557654321"}');
CREATE TEMP TABLE fan_out AS SELECT execution_id FROM notiflow.trigger_many('ship', '["ann", "bob"]', '{"order_id": "o3f"}');
SELECT is((SELECT array_agg(s.outcome ORDER BY s.execution_id)::text
             FROM fan_out f JOIN notiflow.execution_steps s ON s.execution_id = f.execution_id AND s.node_id = 'w'),
          '{completed,completed}', 'fan-out: both executions of trigger_many complete their waits at once');
SELECT is((SELECT string_agg(content ->> 'text', ',') FROM notiflow.deliveries d
             JOIN notiflow.executions e ON e.id = d.execution_id
            WHERE e.payload ->> 'order_id' = 'o3f' AND d.node_id = 'done'),
          'paid 2, scanned at 11:30,paid 2, scanned at 11:30', 'fan-out: each got both events');

-- one before, one after
SELECT notiflow.emit_event('parcel.scanned', 'o4', '{"at": "12:00"}');
SELECT notiflow.trigger('ship', '{"order_id": "o4"}', '"ann"') AS o4 \gset
SELECT is((SELECT received FROM notiflow.execution_waits WHERE execution_id = :o4), '{"parcel.scanned": {"at": "12:00"}}'::jsonb,
          'an early event is taken when the wait is reached');
SELECT is(notiflow.emit_event('payment.confirmed', 'o4', '{"amount": 3}'), 1, 'and a later one completes it');
SELECT is(notiflow.emit_event('payment.confirmed', 'o4', '{"amount": 999}'), 0, 'an event after completion resumes nothing');
SELECT is((SELECT count(*)::int FROM notiflow.deliveries WHERE execution_id = :o4), 1, 'and creates nothing');

-- a repeated event: the first one counts
SELECT notiflow.trigger('ship', '{"order_id": "o5"}', '"ann"') AS o5 \gset
SELECT notiflow.emit_event('payment.confirmed', 'o5', '{"amount": 5}');
SELECT notiflow.emit_event('payment.confirmed', 'o5', '{"amount": 6}');
SELECT is((SELECT received -> 'payment.confirmed' ->> 'amount' FROM notiflow.execution_waits WHERE execution_id = :o5), '5',
          'the first event of a name counts');

-- timeout: made due, the timer's resume takes the timeout edge
UPDATE notiflow.execution_waits SET deadline = now() - interval '1 second' WHERE execution_id = :o5;
UPDATE notiflow.executions SET wake_at = now() - interval '1 second' WHERE id = :o5;
-- the last event after the deadline, before the timer came round: the timeout still wins
SELECT is(notiflow.emit_event('parcel.scanned', 'o5', '{"late": true}'), 0, 'an event past the deadline completes nothing');
SELECT is((SELECT status FROM notiflow.execution_waits WHERE execution_id = :o5), 'waiting', 'the wait is left to its timeout');
SELECT ok((SELECT NOT received ? 'parcel.scanned' FROM notiflow.execution_waits WHERE execution_id = :o5),
          'and does not record that event');
DELETE FROM notiflow.event_inbox WHERE correlation_key = 'o5';
SELECT is(notiflow.resume_due_executions(10), 1, 'a timed-out wait is resumed by the timer');
SELECT is((SELECT outcome FROM notiflow.execution_steps WHERE execution_id = :o5 AND node_id = 'w'), 'timeout',
          'its outcome is timeout');
SELECT is((SELECT string_agg(node_id, ',') FROM notiflow.deliveries WHERE execution_id = :o5), 'late',
          'the timeout edge runs, the completed edge does not');
SELECT is(notiflow.emit_event('parcel.scanned', 'o5', '{}'), 0, 'an event after the timeout resumes nothing');

-- the inbox keeps events for notiflow.event_ttl only
SET notiflow.event_ttl = '0 seconds';
SELECT notiflow.emit_event('payment.confirmed', 'o6', '{"amount": 1}');
RESET notiflow.event_ttl;
SELECT notiflow.trigger('ship', '{"order_id": "o6"}', '"ann"') AS o6 \gset
SELECT is((SELECT received FROM notiflow.execution_waits WHERE execution_id = :o6), '{}'::jsonb,
          'an expired inbox event is not taken');

-- an event that an open wait took is kept too: an execution that reaches a wait on the key later,
-- within the TTL, takes it (the recipients of one fan-out reach their waits at different times;
-- before, the later ones never got it and timed out)
SELECT notiflow.trigger('ship', '{"order_id": "o7"}', '"ann"') AS o7a \gset
SELECT is(notiflow.emit_event('payment.confirmed', 'o7', '{"amount": 70}'), 0, 'an event that an open wait takes');
SELECT notiflow.trigger('ship', '{"order_id": "o7"}', '"ann"') AS o7b \gset
SELECT is((SELECT received FROM notiflow.execution_waits WHERE execution_id = :o7b), '{"payment.confirmed": {"amount": 70}}'::jsonb,
          'an execution that reaches a wait on the key afterwards takes it too');
SELECT is(notiflow.emit_event('parcel.scanned', 'o7', '{"at": "13:00"}'), 2, 'and the next event completes both waits');
SELECT is((SELECT string_agg(content ->> 'text', ',') FROM notiflow.deliveries WHERE execution_id IN (:o7a, :o7b) AND node_id = 'done'),
          'paid 70, scanned at 13:00,paid 70, scanned at 13:00', 'each with both events');
-- but an execution takes each event once: a second wait on the same name waits for the next one,
-- whether the first wait took the event while open or from the inbox
SELECT notiflow.put_workflow('twice', '{"nodes": [
    {"id": "t", "type": "trigger"},
    {"id": "w1", "type": "wait", "events": ["updated"], "key": "{{payload.id}}"},
    {"id": "w2", "type": "wait", "events": ["updated"], "key": "{{payload.id}}"},
    {"id": "done", "type": "sms", "text": "{{steps.w1.events.updated.n}} then {{steps.w2.events.updated.n}}"}],
  "edges": [{"from": "t", "to": "w1"}, {"from": "w1", "to": "w2", "on": "completed"},
            {"from": "w2", "to": "done", "on": "completed"}]}');
SELECT notiflow.trigger('twice', '{"id": "u1"}', '"ann"') AS u1 \gset
SELECT is(notiflow.emit_event('updated', 'u1', '{"n": 1}'), 1, 'twice: the first event completes the first wait');
SELECT is((SELECT string_agg(node_id || ' ' || status, ',' ORDER BY node_id) FROM notiflow.execution_waits WHERE execution_id = :u1),
          'w1 completed,w2 waiting', 'twice: the second wait does not take the same event from the inbox');
SELECT is(notiflow.emit_event('updated', 'u1', '{"n": 2}'), 1, 'twice: the next event completes it');
SELECT is((SELECT content ->> 'text' FROM notiflow.deliveries WHERE execution_id = :u1), '1 then 2', 'twice: each wait got its own event');
SELECT notiflow.emit_event('updated', 'u2', '{"n": 1}');
SELECT notiflow.trigger('twice', '{"id": "u2"}', '"ann"') AS u2 \gset
SELECT is((SELECT string_agg(node_id || ' ' || status, ',' ORDER BY node_id) FROM notiflow.execution_waits WHERE execution_id = :u2),
          'w1 completed,w2 waiting', 'twice: an early event completes the first wait only');
-- waits on parallel branches each take an event: when it comes early as when it comes while they wait
SELECT notiflow.put_workflow('both', '{"nodes": [
    {"id": "t", "type": "trigger"},
    {"id": "wa", "type": "wait", "events": ["updated"], "key": "{{payload.id}}"},
    {"id": "wb", "type": "wait", "events": ["updated"], "key": "{{payload.id}}"}],
  "edges": [{"from": "t", "to": "wa"}, {"from": "t", "to": "wb"}]}');
SELECT notiflow.emit_event('updated', 'p1', '{"n": 1}');
SELECT notiflow.trigger('both', '{"id": "p1"}', '"ann"') AS p1 \gset
SELECT is((SELECT string_agg(node_id || ' ' || status, ',' ORDER BY node_id) FROM notiflow.execution_waits WHERE execution_id = :p1),
          'wa completed,wb completed', 'parallel waits: an early event completes both');
SELECT notiflow.trigger('both', '{"id": "p2"}', '"ann"') AS p2 \gset
SELECT is(notiflow.emit_event('updated', 'p2', '{"n": 2}'), 2, 'parallel waits: an event while both wait completes both');

-- the execution's own delivery outcomes are events "<node>.<status>"
SELECT notiflow.put_workflow('receipt', '{"nodes": [
    {"id": "t", "type": "trigger"},
    {"id": "mail", "type": "email", "subject": "s", "text": "x"},
    {"id": "w", "type": "wait", "events": ["mail.sent", "paid"], "key": "{{payload.order_id}}"},
    {"id": "ok", "type": "sms", "text": "receipt sent, payment {{#steps.w.events.paid}}{{amount}}{{/steps.w.events.paid}}"}],
  "edges": [{"from": "t", "to": "mail"}, {"from": "t", "to": "w"}, {"from": "w", "to": "ok", "on": "completed"}]}');
SELECT notiflow.trigger('receipt', '{"order_id": "r1"}', '"ann"') AS r1 \gset
SELECT notiflow.emit_event('paid', 'r1', '{"amount": 10}');
SELECT ok(notiflow.finish_delivery((SELECT id FROM notiflow.deliveries WHERE execution_id = :r1 AND node_id = 'mail'), 'sent', 'm1'),
          'the delivery is sent');
SELECT is((SELECT outcome FROM notiflow.execution_steps WHERE execution_id = :r1 AND node_id = 'w'), 'completed',
          'its outcome completes the wait of the same execution');
SELECT ok((SELECT count(*) = 1 FROM notiflow.deliveries WHERE execution_id = :r1 AND node_id = 'ok'), 'and the workflow goes on');
-- a wait reached after the action ended (mail, then the wait) takes the outcome from the step
SELECT notiflow.put_workflow('receipt_then_wait', '{"nodes": [
    {"id": "t", "type": "trigger"},
    {"id": "mail", "type": "email", "subject": "s", "text": "x"},
    {"id": "w", "type": "wait", "events": ["mail.sent"], "key": "{{payload.order_id}}"},
    {"id": "ok", "type": "sms", "text": "receipt {{steps.w.events.mail.sent.status}}"}],
  "edges": [{"from": "t", "to": "mail"}, {"from": "mail", "to": "w", "on": "sent"},
            {"from": "w", "to": "ok", "on": "completed"}]}');
SELECT notiflow.trigger('receipt_then_wait', '{"order_id": "r2"}', '"ann"') AS r2 \gset
SELECT ok(notiflow.finish_delivery((SELECT id FROM notiflow.deliveries WHERE execution_id = :r2 AND node_id = 'mail'), 'sent', 'm2'),
          'the delivery is sent before its execution reaches the wait');
SELECT is((SELECT outcome FROM notiflow.execution_steps WHERE execution_id = :r2 AND node_id = 'w'), 'completed',
          'the wait reached afterwards completes with the outcome of the action');
SELECT is((SELECT received FROM notiflow.execution_waits WHERE execution_id = :r2), '{"mail.sent": {"status": "sent"}}'::jsonb,
          'whose event data is the status');

-- the wait of a cancelled execution takes no event: it goes to the inbox, for a later execution
-- (before, the dead wait swallowed it)
SELECT notiflow.trigger('ship', '{"order_id": "c1"}', '"ann"') AS c1 \gset
SELECT ok(notiflow.cancel_execution(:c1), 'an execution waiting on key c1 is cancelled');
SELECT is(notiflow.emit_event('payment.confirmed', 'c1', '{"amount": 5}'), 0, 'an event for c1 resumes nothing');
SELECT is((SELECT count(*)::int FROM notiflow.event_inbox WHERE correlation_key = 'c1'), 1, 'and is kept in the inbox');
SELECT notiflow.trigger('ship', '{"order_id": "c1"}', '"ann"') AS c1b \gset
SELECT is((SELECT received FROM notiflow.execution_waits WHERE execution_id = :c1b), '{"payment.confirmed": {"amount": 5}}'::jsonb,
          'where the next execution waiting on c1 finds it');

-- an execution that cannot resume fails alone: the others waiting on the key still get the event
-- (before, emit_event raised, and no execution waiting on the key could ever get it)
SELECT notiflow.trigger('ship', '{"order_id": "b1"}', '"ann"') AS b1 \gset
SELECT notiflow.trigger('ship', '{"order_id": "b1"}', '"ann"') AS b2 \gset
UPDATE notiflow.executions SET workflow_version = 999 WHERE id = :b1;
SELECT notiflow.emit_event('payment.confirmed', 'b1', '{"amount": 1}');
SET client_min_messages = error;  -- the WARNING that b1 failed
SELECT is(notiflow.emit_event('parcel.scanned', 'b1', '{"at": "11:00"}'), 2, 'the last event resumes both executions waiting on b1');
SELECT results_eq(format('SELECT status, error FROM notiflow.executions WHERE id = %s', :b1),
    format($$VALUES ('failed'::text, 'cannot resume: execution %s uses workflow "ship" version 999, which no longer exists'::text)$$, :b1),
    'the one whose workflow version is gone fails with the reason');
SELECT is((SELECT outcome FROM notiflow.execution_steps WHERE execution_id = :b2 AND node_id = 'w'), 'completed',
          'the other goes on past its wait');
SELECT is(notiflow.resume_execution(:b1), 'failed', 'resume_execution returns its status');
SET client_min_messages = warning;

-- an action that fails at once (no email provider enabled) gives its outcome to a wait the
-- execution opened before it (edge order: the wait first); the wait completes at the next resume,
-- due at once (before, the wait never got "m.failed" and waited for ever)
SELECT notiflow.put_workflow('fail_first', '{"nodes": [
    {"id": "t", "type": "trigger"},
    {"id": "w", "type": "wait", "events": ["m.failed"], "key": "{{payload.order_id}}"},
    {"id": "m", "type": "email", "subject": "s", "text": "x"},
    {"id": "ok", "type": "sms", "text": "mail failed"}],
  "edges": [{"from": "t", "to": "w"}, {"from": "t", "to": "m"}, {"from": "w", "to": "ok", "on": "completed"},
            {"from": "m", "to": "ok", "on": "failed"}]}');
UPDATE notiflow.providers SET enabled = false WHERE name = 'mail';
SELECT notiflow.trigger('fail_first', '{"order_id": "f1"}', '"ann"') AS f1 \gset
UPDATE notiflow.providers SET enabled = true WHERE name = 'mail';
SELECT is((SELECT status || ' ' || (received ? 'm.failed')::text FROM notiflow.execution_waits WHERE execution_id = :f1),
          'completed true', 'the email failing at once completes the wait opened before it');
SELECT ok((SELECT wake_at <= now() FROM notiflow.executions WHERE id = :f1), 'and its execution is due at once');
SELECT cmp_ok(notiflow.resume_due_executions(100), '>=', 1, 'the due resume runs');
SELECT is((SELECT outcome FROM notiflow.execution_steps WHERE execution_id = :f1 AND node_id = 'w'), 'completed',
          'and the wait node completes');

-- validation
SELECT results_eq($$SELECT path || ': ' || message FROM notiflow.validate_workflow('{"nodes": [{"id": "t", "type": "trigger"},
    {"id": "w", "type": "wait", "events": [], "timeout": "soon"}], "edges": [{"from": "t", "to": "w"}]}')$$,
    ARRAY['nodes[1].events: expected a non-empty array of event names', 'nodes[1].key: required field is missing',
          'nodes[1].timeout: invalid interval: invalid input syntax for type interval: "soon"'],
    'a wait node needs events, a key and a valid timeout');
SELECT throws_ok($$SELECT notiflow.emit_event('', 'k')$$, '22023', 'event name must not be empty', 'emit_event checks its input');

SELECT * FROM finish();
ROLLBACK;
