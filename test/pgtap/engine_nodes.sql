-- Engine semantics: every node type, branching, fallback across channels,
-- preferences, addresses, version pinning and the caller's transaction.
\set ON_ERROR_STOP 1
\set QUIET 1
SET client_min_messages = warning;
BEGIN;
SELECT plan(102);

-- fixtures ---------------------------------------------------------------------
SELECT notiflow.put_provider('mail', 'email', 'sendgrid', '{"api_key": "k", "from": "shop@example.com"}');
SELECT notiflow.put_provider('mail-backup', 'email', 'mailgun', '{"api_key": "k", "domain": "mg.example.com", "from": "shop@example.com"}', 5);
SELECT notiflow.put_provider('text', 'sms', 'twilio', '{"account_sid": "AC1", "auth_token": "t", "from": "+15550001111"}');
SELECT notiflow.put_provider('slack', 'chat', 'slack', '{"token": "xoxb-1", "channel": "#general"}');
SELECT notiflow.put_provider('hooks', 'webhook', 'webhook', '{"url": "https://hooks.example.com/in", "secret": "s"}');
-- the engine only needs the provider's row (put_provider would check a real service account)
INSERT INTO notiflow.providers (name, channel, kind, config) VALUES ('fcm', 'push', 'fcm', '{}');
SELECT notiflow.put_subscriber('ann', '{"name": "Ann", "email": "ann@example.com", "phone": "+15551234567",
    "chat": {"slack": "U-ANN"}, "data": {"tier": "gold"},
    "push": {"fcm": ["fcm-token-1", "fcm-token-2"], "apns": ["apns-token-1"]}}');
SELECT notiflow.put_subscriber('quiet', '{"email": "quiet@example.com", "phone": "+15557654321",
    "preferences": {"channels": {"sms": false}, "workflows": {"promo": {"email": false}, "digest": false}}}');

-- condition: true / false / a missing field counts as false -------------------
SELECT notiflow.put_workflow('cond', '{"nodes": [
    {"id": "t", "type": "trigger"},
    {"id": "c", "type": "condition", "if": "$.payload.total > 100"},
    {"id": "yes", "type": "email", "subject": "big {{steps.c.result}}", "text": "x"},
    {"id": "no", "type": "sms", "text": "small"}],
  "edges": [{"from": "t", "to": "c"}, {"from": "c", "to": "yes", "on": true}, {"from": "c", "to": "no", "on": "false"}]}');
SELECT notiflow.trigger('cond', '{"total": 500}', '"ann"') AS e1 \gset
SELECT notiflow.trigger('cond', '{"total": 5}', '"ann"') AS e2 \gset
SELECT notiflow.trigger('cond', '{}', '"ann"') AS e3 \gset
SELECT is((SELECT array_agg(node_id ORDER BY seq) FROM notiflow.execution_steps WHERE execution_id = :e1),
          '{t,c,yes}', 'condition true follows the "true" edge');
SELECT is((SELECT content ->> 'subject' FROM notiflow.deliveries WHERE execution_id = :e1),
          'big true', 'templates see the outputs of earlier steps');
SELECT is((SELECT array_agg(node_id ORDER BY seq) FROM notiflow.execution_steps WHERE execution_id = :e2),
          '{t,c,no}', 'condition false follows the "false" edge');
SELECT is((SELECT outcome FROM notiflow.execution_steps WHERE execution_id = :e3 AND node_id = 'c'),
          'false', 'a predicate on a missing field is false');

-- switch: case values and default ---------------------------------------------
SELECT notiflow.put_workflow('sw', '{"nodes": [
    {"id": "t", "type": "trigger"},
    {"id": "s", "type": "switch", "value": "$.payload.tier"},
    {"id": "gold", "type": "sms", "text": "gold"},
    {"id": "n1", "type": "sms", "text": "level one"},
    {"id": "other", "type": "sms", "text": "other {{steps.s.case}}"}],
  "edges": [{"from": "t", "to": "s"}, {"from": "s", "to": "gold", "on": "gold"},
            {"from": "s", "to": "n1", "on": "1"}, {"from": "s", "to": "other", "on": "default"}]}');
SELECT notiflow.trigger('sw', '{"tier": "gold"}', '"ann"') AS _id \gset
SELECT is((SELECT content ->> 'text' FROM notiflow.deliveries WHERE execution_id = :_id),
          'gold', 'switch takes the edge of a matching string case');
SELECT notiflow.trigger('sw', '{"tier": 1}', '"ann"') AS _id \gset
SELECT is((SELECT content ->> 'text' FROM notiflow.deliveries WHERE execution_id = :_id),
          'level one', 'switch matches a number against its text');
SELECT notiflow.trigger('sw', '{"tier": "tin"}', '"ann"') AS _id \gset
SELECT is((SELECT content ->> 'text' FROM notiflow.deliveries WHERE execution_id = :_id),
          'other default', 'switch falls back to "default"');
SELECT notiflow.trigger('sw', '{}', '"ann"') AS _id \gset
SELECT is((SELECT content ->> 'text' FROM notiflow.deliveries WHERE execution_id = :_id),
          'other default', 'switch on a missing value takes "default"');

-- transform: templates, jsonpaths, literals; payload, recipient and vars targets
SELECT notiflow.put_workflow('tf', '{"nodes": [
    {"id": "t", "type": "trigger"},
    {"id": "f", "type": "transform", "set": {
        "vars.greeting": "Hello {{recipient.name}}",
        "vars.count": "$.payload.items.size()",
        "payload.extra.flag": true,
        "recipient.name": "Dr {{recipient.name}}"}},
    {"id": "m", "type": "email", "subject": "{{vars.greeting}} ({{vars.count}} items, {{payload.extra.flag}})",
     "text": "{{recipient.name}}"}],
  "edges": [{"from": "t", "to": "f"}, {"from": "f", "to": "m"}]}');
SELECT notiflow.trigger('tf', '{"items": [1, 2, 3]}', '"ann"') AS tf \gset
SELECT is((SELECT content ->> 'subject' FROM notiflow.deliveries WHERE execution_id = :tf),
          'Hello Ann (3 items, true)', 'transform sets vars and payload for later nodes');
SELECT is((SELECT content ->> 'text' FROM notiflow.deliveries WHERE execution_id = :tf),
          'Dr Ann', 'transform can rewrite the recipient');
SELECT is((SELECT output FROM notiflow.execution_steps WHERE execution_id = :tf AND node_id = 'f'),
          '{"vars.count": 3, "vars.greeting": "Hello Ann", "payload.extra.flag": true, "recipient.name": "Dr Ann"}'::jsonb,
          'transform step output lists each assignment');
SELECT is((SELECT context #> '{vars,count}' FROM notiflow.executions WHERE id = :tf),
          '3'::jsonb, 'the working context is stored with the execution');
SELECT is((SELECT payload FROM notiflow.executions WHERE id = :tf),
          '{"items": [1, 2, 3]}'::jsonb, 'the trigger payload is kept as received');
-- every value of a transform from the context before the node: "vars.a" sorts before "vars.bb"
-- (jsonb: shorter keys first), and "vars.bb" saw it set, where "vars.b" would not have
SELECT notiflow.put_workflow('tf_order', '{"nodes": [
    {"id": "t", "type": "trigger"},
    {"id": "f", "type": "transform", "set": {"vars.bb": "[{{vars.a}}]", "vars.a": "one"}},
    {"id": "g", "type": "transform", "set": {"vars.c": "[{{vars.a}}]"}},
    {"id": "m", "type": "email", "subject": "{{vars.bb}} {{vars.c}}", "text": "x"}],
  "edges": [{"from": "t", "to": "f"}, {"from": "f", "to": "g"}, {"from": "g", "to": "m"}]}');
SELECT notiflow.trigger('tf_order', '{}', '"ann"') AS tfo \gset
SELECT is((SELECT content ->> 'subject' FROM notiflow.deliveries WHERE execution_id = :tfo), '[] [one]',
          'a transform''s values see the context before the node, whatever its keys'' order; the next node sees them');

-- delay: until in the past completes at once; in the future waits; resume_due --
SELECT notiflow.put_workflow('dl', '{"nodes": [
    {"id": "t", "type": "trigger"},
    {"id": "d", "type": "delay", "until": "$.payload.at"},
    {"id": "m", "type": "sms", "text": "later"}],
  "edges": [{"from": "t", "to": "d"}, {"from": "d", "to": "m"}]}');
SELECT notiflow.trigger('dl', '{"at": "2000-01-01T00:00:00Z"}', '"ann"') AS past \gset
SELECT notiflow.trigger('dl', '{"at": "2999-01-01T00:00:00Z"}', '"ann"') AS future \gset
SELECT is((SELECT count(*)::int FROM notiflow.deliveries WHERE execution_id = :past), 1,
          'a delay whose time has passed goes straight on');
SELECT is((SELECT status FROM notiflow.executions WHERE id = :future), 'waiting', 'a future delay waits');
SELECT is((SELECT wake_at FROM notiflow.executions WHERE id = :future), '2999-01-01T00:00:00Z'::timestamptz,
          'the execution wakes when the delay ends');
SELECT is((SELECT status FROM notiflow.execution_steps WHERE execution_id = :future AND node_id = 'd'), 'waiting',
          'the delay step is waiting');
SELECT is(notiflow.resume_due_executions(10), 0, 'nothing is due yet');
SELECT notiflow.trigger('dl', '{"at": "next tuesday-ish"}', '"ann"') AS _id \gset
SELECT is((SELECT status || ': ' || error FROM notiflow.executions
            WHERE id = :_id),
          'failed: node "d": "until" is not a timestamp: invalid input syntax for type timestamp with time zone: "next tuesday-ish"',
          'a delay on a bad timestamp fails the execution with the reason');
SELECT notiflow.trigger('dl', '{"at": "infinity"}', '"ann"') AS _id \gset
SELECT is((SELECT status || ': ' || error FROM notiflow.executions WHERE id = :_id),
          'failed: node "d": "until" is infinity; expected a finite timestamp',
          'a delay until infinity fails the execution instead of waiting for ever');
SELECT notiflow.trigger('dl', '{"at": "-infinity"}', '"ann"') AS _id \gset
SELECT is((SELECT count(*)::int FROM notiflow.deliveries WHERE execution_id = :_id), 1,
          'a delay until -infinity goes straight on');
-- make the future delay due (as if time had passed), then resume
CREATE FUNCTION pg_temp.make_delay_due(execution bigint) RETURNS void LANGUAGE sql AS $$
UPDATE notiflow.executions
   SET wake_at = '2001-01-01',
       steps = (SELECT jsonb_agg(CASE WHEN s ->> 1 = 'd'
                                      THEN jsonb_set(s, '{5}', '{"until": "2001-01-01T00:00:00+00:00"}')
                                      ELSE s END ORDER BY o)
                  FROM jsonb_array_elements(steps) WITH ORDINALITY AS x(s, o))
 WHERE id = execution
$$;
SELECT pg_temp.make_delay_due(:future);
SELECT is(notiflow.resume_due_executions(10), 1, 'a due execution is resumed');
SELECT is((SELECT array_agg(node_id || ':' || status ORDER BY seq) FROM notiflow.execution_steps WHERE execution_id = :future),
          '{t:completed,d:completed,m:waiting}', 'after the delay the next node runs');
SELECT is((SELECT wake_at FROM notiflow.executions WHERE id = :future), NULL, 'no wake-up is left');
SELECT ok((SELECT started_at < finished_at FROM notiflow.execution_steps WHERE execution_id = :future AND node_id = 'd'),
          'the delay step keeps the time it started waiting');
-- a resume writes the execution back by the row version it locked; should the
-- transaction change the row meanwhile (here a user's trigger on deliveries),
-- the write still lands, by id
SELECT notiflow.trigger('dl', '{"at": "2999-01-01T00:00:00Z"}', '"ann"') AS touched \gset
CREATE FUNCTION pg_temp.touch_execution() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE notiflow.executions SET updated_at = updated_at WHERE id = NEW.execution_id;
    RETURN NEW;
END $$;
CREATE TRIGGER touch_execution AFTER INSERT ON notiflow.deliveries
    FOR EACH ROW EXECUTE FUNCTION pg_temp.touch_execution();
SELECT pg_temp.make_delay_due(:touched);
SELECT ctid AS touched_version FROM notiflow.executions WHERE id = :touched \gset
SELECT is(notiflow.resume_due_executions(10), 1, 'an execution changed during its resume is resumed');
SELECT is((SELECT array_agg(node_id || ':' || status ORDER BY seq) FROM notiflow.execution_steps WHERE execution_id = :touched),
          '{t:completed,d:completed,m:waiting}', 'and its steps are written back');
SELECT isnt((SELECT ctid FROM notiflow.executions WHERE id = :touched), :'touched_version'::tid,
            'by id: the trigger had moved the row to another version');
DROP TRIGGER touch_execution ON notiflow.deliveries;

SELECT notiflow.put_workflow('dl2', '{"nodes": [
    {"id": "t", "type": "trigger"}, {"id": "d", "type": "delay", "for": "2 hours"}, {"id": "m", "type": "sms", "text": "x"}],
  "edges": [{"from": "t", "to": "d"}, {"from": "d", "to": "m"}]}');
SELECT notiflow.trigger('dl2', '{}', '"ann"') AS _id \gset
SELECT ok((SELECT wake_at BETWEEN now() + interval '119 minutes' AND clock_timestamp() + interval '121 minutes'
             FROM notiflow.executions WHERE id = :_id),
          'a "for" delay wakes after the interval');

-- actions: fallback across channels with on: sent / failed ----------------------
SELECT notiflow.put_workflow('fb', '{"nodes": [
    {"id": "t", "type": "trigger"},
    {"id": "mail", "type": "email", "subject": "s", "text": "x"},
    {"id": "sms", "type": "sms", "text": "fallback"},
    {"id": "thanks", "type": "chat", "text": "delivered by mail"}],
  "edges": [{"from": "t", "to": "mail"}, {"from": "mail", "to": "sms", "on": "failed"},
            {"from": "mail", "to": "thanks", "on": "sent"}]}');
SELECT notiflow.trigger('fb', '{}', '"ann"') AS fb1 \gset
SELECT notiflow.trigger('fb', '{}', '"ann"') AS fb2 \gset
SELECT is((SELECT status FROM notiflow.executions WHERE id = :fb1), 'waiting', 'an action waits for its delivery');
SELECT ok(notiflow.finish_delivery((SELECT id FROM notiflow.deliveries WHERE execution_id = :fb1), 'failed', NULL, '550 mailbox unknown'),
          'finish_delivery records a failure');
SELECT is((SELECT array_agg(node_id || ':' || status || ':' || coalesce(outcome, '') ORDER BY seq)
             FROM notiflow.execution_steps WHERE execution_id = :fb1),
          '{t:completed:,mail:failed:failed,sms:waiting:}', 'a failed email falls back to sms');
SELECT is((SELECT channel || ':' || recipient FROM notiflow.deliveries WHERE execution_id = :fb1 AND node_id = 'sms'),
          'sms:+15551234567', 'the fallback delivery goes to the phone');
SELECT ok(notiflow.finish_delivery((SELECT id FROM notiflow.deliveries WHERE execution_id = :fb1 AND node_id = 'sms'), 'sent', 'SM1'),
          'the fallback is sent');
SELECT is((SELECT status FROM notiflow.executions WHERE id = :fb1), 'completed', 'a handled failure completes the execution');
SELECT ok(notiflow.finish_delivery((SELECT id FROM notiflow.deliveries WHERE execution_id = :fb2), 'delivered', 'm2'),
          'finish_delivery records success');
SELECT is((SELECT array_agg(node_id ORDER BY seq) FROM notiflow.execution_steps WHERE execution_id = :fb2),
          '{t,mail,thanks}', 'a sent email follows the "sent" edge');
SELECT is((SELECT recipient FROM notiflow.deliveries WHERE execution_id = :fb2 AND node_id = 'thanks'),
          'U-ANN', 'chat goes to the subscriber''s address for the provider kind');
SELECT is((SELECT output #>> '{deliveries,0,provider_message_id}' FROM notiflow.execution_steps WHERE execution_id = :fb2 AND node_id = 'mail'),
          'm2', 'the step output lists its deliveries');
SELECT is(notiflow.resume_execution(:fb2), 'waiting', 'resume_execution of a waiting execution with nothing done keeps it waiting');

-- chat text for Slack: values cannot make Slack markup; the template's own markup stays
SELECT notiflow.put_workflow('slack_text', '{"nodes": [{"id": "t", "type": "trigger"},
    {"id": "c", "type": "chat", "text": "<@U1> deploy {{payload.v}} by {{{payload.who}}} \"q\""}],
  "edges": [{"from": "t", "to": "c"}]}');
SELECT notiflow.trigger('slack_text', '{"v": "<!channel> & co", "who": "<@U2>"}', '"ann"') AS st \gset
SELECT is((SELECT content ->> 'text' FROM notiflow.deliveries WHERE execution_id = :st),
          '<@U1> deploy <!channel> & co by <@U2> "q"', 'chat text is rendered plain');
SELECT is((SELECT content ->> 'slack_text' FROM notiflow.deliveries WHERE execution_id = :st),
          '<@U1> deploy &lt;!channel&gt; &amp; co by <@U2> "q"', 'slack_text escapes & < > in {{values}} only');
SELECT notiflow.trigger('slack_text', '{"v": "v2", "who": "ann"}', '"ann"') AS st2 \gset
SELECT ok((SELECT NOT content ? 'slack_text' FROM notiflow.deliveries WHERE execution_id = :st2),
          'no slack_text when escaping changes nothing');

-- an unhandled delivery failure fails the execution
SELECT notiflow.put_workflow('solo', '{"nodes": [{"id": "t", "type": "trigger"}, {"id": "m", "type": "email", "subject": "s", "text": "x"}],
  "edges": [{"from": "t", "to": "m"}]}');
SELECT notiflow.trigger('solo', '{}', '"ann"') AS solo \gset
SELECT notiflow.finish_delivery((SELECT id FROM notiflow.deliveries WHERE execution_id = :solo), 'failed', NULL, 'rejected');
SELECT is((SELECT status || ' / ' || error FROM notiflow.executions WHERE id = :solo),
          'failed / node "m": delivery failed: every delivery failed', 'an unhandled delivery failure fails the execution');

-- no enabled provider: the delivery fails at once, so fallback happens in the same call
UPDATE notiflow.providers SET enabled = false WHERE channel = 'email';
SELECT notiflow.trigger('fb', '{}', '"ann"') AS fb3 \gset
UPDATE notiflow.providers SET enabled = true WHERE channel = 'email';
SELECT is((SELECT status || ':' || last_error FROM notiflow.deliveries WHERE execution_id = :fb3 AND node_id = 'mail'),
          'failed:no enabled email provider', 'without a provider the delivery fails with the reason');
SELECT is((SELECT count(*)::int FROM notiflow.deliveries WHERE execution_id = :fb3 AND node_id = 'sms'), 1,
          'and the workflow falls back immediately');
SELECT is((SELECT provider FROM notiflow.deliveries WHERE execution_id = :fb2 AND node_id = 'mail'), 'mail',
          'the provider with the lowest priority value is chosen');

-- preferences and addresses -------------------------------------------------------
SELECT notiflow.put_workflow('promo', '{"nodes": [{"id": "t", "type": "trigger"},
    {"id": "m", "type": "email", "subject": "s", "text": "x"}, {"id": "s", "type": "sms", "text": "x"}],
  "edges": [{"from": "t", "to": "m"}, {"from": "t", "to": "s"}]}');
SELECT notiflow.trigger('promo', '{}', '"quiet"') AS promo \gset
SELECT is((SELECT array_agg(node_id || ':' || status || ':' || (output ->> 'reason') ORDER BY node_id)
             FROM notiflow.execution_steps WHERE execution_id = :promo AND node_id IN ('m', 's')),
          '{"m:skipped:recipient opted out of email","s:skipped:recipient opted out of sms"}',
          'channel and per-workflow channel opt-outs skip the step with the reason');
SELECT is((SELECT status FROM notiflow.executions WHERE id = :promo), 'completed', 'skipped steps complete the execution');
SELECT notiflow.put_workflow('digest', '{"nodes": [{"id": "t", "type": "trigger"}, {"id": "m", "type": "email", "subject": "s", "text": "x"}],
  "edges": [{"from": "t", "to": "m"}]}');
SELECT notiflow.trigger('digest', '{}', '"quiet"') AS _id \gset
SELECT is((SELECT status FROM notiflow.execution_steps WHERE execution_id = :_id AND node_id = 'm'),
          'skipped', 'a workflow opt-out skips every channel');
SELECT notiflow.trigger('digest', '{}', '"ann"') AS _id \gset
SELECT is((SELECT status FROM notiflow.execution_steps WHERE execution_id = :_id AND node_id = 'm'),
          'waiting', 'other subscribers still receive it');
SELECT notiflow.trigger('solo', '{}', '{"phone": "+15551112222"}') AS _id \gset
SELECT is((SELECT output ->> 'reason' FROM notiflow.execution_steps
            WHERE execution_id = :_id AND node_id = 'm'),
          'recipient has no valid email address', 'a recipient without the address is skipped with the reason');
UPDATE notiflow.subscribers SET invalid_addresses = '{ann@example.com}' WHERE id = 'ann';
SELECT notiflow.trigger('solo', '{}', '"ann"') AS _id \gset
SELECT is((SELECT status FROM notiflow.execution_steps WHERE execution_id = :_id AND node_id = 'm'),
          'skipped', 'an address a provider reported invalid is not used again');
UPDATE notiflow.subscribers SET invalid_addresses = '{}' WHERE id = 'ann';
SELECT notiflow.trigger('solo', '{}', '{"subscriber_id": "ann", "email": "other@example.com"}') AS _id \gset
SELECT is((SELECT count(*)::int FROM notiflow.deliveries WHERE execution_id = :_id
             AND recipient = 'other@example.com'), 1, 'inline fields override the subscriber''s');

-- push, webhook and "to" ---------------------------------------------------------
SELECT notiflow.put_workflow('pw', '{"nodes": [{"id": "t", "type": "trigger"},
    {"id": "p", "type": "push", "title": "Hi {{recipient.name}}", "body": "b", "data": {"order": "{{payload.id}}"}},
    {"id": "h", "type": "webhook"},
    {"id": "o", "type": "email", "to": "{{payload.cc}}", "subject": "copy", "text": "x"}],
  "edges": [{"from": "t", "to": "p"}, {"from": "t", "to": "h"}, {"from": "t", "to": "o"}]}');
SELECT notiflow.trigger('pw', '{"id": 7, "cc": "cc@example.com"}', '"ann"') AS pw \gset
SELECT is((SELECT array_agg(provider || ':' || recipient ORDER BY recipient) FROM notiflow.deliveries WHERE execution_id = :pw AND node_id = 'p'),
          '{fcm:fcm-token-1,fcm:fcm-token-2}', 'push sends to every device of each kind that has a provider');
SELECT is((SELECT content FROM notiflow.deliveries WHERE execution_id = :pw AND node_id = 'p' LIMIT 1),
          '{"title": "Hi Ann", "body": "b", "data": {"order": "7"}}'::jsonb, 'push content has title, body and data');
SELECT is((SELECT output FROM notiflow.execution_steps WHERE execution_id = :pw AND node_id = 'p'),
          '{"pending": 2}'::jsonb, 'the push step waits for both devices');
SELECT is((SELECT content #> '{body,payload}' FROM notiflow.deliveries WHERE execution_id = :pw AND node_id = 'h'),
          '{"id": 7, "cc": "cc@example.com"}'::jsonb, 'a webhook posts the payload by default');
SELECT is((SELECT recipient FROM notiflow.deliveries WHERE execution_id = :pw AND node_id = 'o'),
          'cc@example.com', '"to" overrides the address');
SELECT notiflow.finish_delivery(id, 'sent') FROM notiflow.deliveries WHERE execution_id = :pw AND node_id = 'p' AND recipient = 'fcm-token-1';
SELECT is((SELECT status FROM notiflow.execution_steps WHERE execution_id = :pw AND node_id = 'p'), 'waiting',
          'an action waits until every delivery ended');
SELECT notiflow.finish_delivery(id, 'failed', NULL, 'UNREGISTERED') FROM notiflow.deliveries WHERE execution_id = :pw AND node_id = 'p' AND recipient = 'fcm-token-2';
SELECT is((SELECT outcome FROM notiflow.execution_steps WHERE execution_id = :pw AND node_id = 'p'), 'sent',
          'one sent device is enough for "sent"');

-- escaping: only HTML is escaped ------------------------------------------------
SELECT notiflow.put_workflow('esc', '{"nodes": [{"id": "t", "type": "trigger"},
    {"id": "m", "type": "email", "subject": "{{payload.s}}", "text": "{{payload.s}}", "html": "<p>{{payload.s}} {{{payload.s}}}</p>"}],
  "edges": [{"from": "t", "to": "m"}]}');
SELECT notiflow.trigger('esc', '{"s": "Tom & <Jerry>"}', '"ann"') AS _id \gset
SELECT is((SELECT content FROM notiflow.deliveries WHERE execution_id = :_id),
          '{"subject": "Tom & <Jerry>", "text": "Tom & <Jerry>", "html": "<p>Tom &amp; &lt;Jerry&gt; Tom & <Jerry></p>"}'::jsonb,
          'html is HTML-escaped ({{{raw}}} is not); plain-text fields are not');

-- a webhook's url: {{values}} are percent-encoded (one stays one path segment or query value),
-- {{{raw}}} is not (a whole URL from the data)
SELECT notiflow.put_workflow('hook_url', '{"nodes": [{"id": "t", "type": "trigger"},
    {"id": "h", "type": "webhook", "url": "https://hooks.example.com/orders/{{payload.id}}?note={{payload.note}}"},
    {"id": "r", "type": "webhook", "url": "{{{payload.callback}}}"}],
  "edges": [{"from": "t", "to": "h"}, {"from": "t", "to": "r"}]}');
SELECT notiflow.trigger('hook_url', '{"id": "../admin?x=1#", "note": "a b&c=d/é~_.-", "callback": "https://cb.example.com/a?b=c"}', '"ann"') AS _id \gset
SELECT is((SELECT recipient FROM notiflow.deliveries WHERE execution_id = :_id AND node_id = 'h'),
          'https://hooks.example.com/orders/..%2Fadmin%3Fx%3D1%23?note=a%20b%26c%3Dd%2F%C3%A9~_.-',
          'a webhook url percent-encodes {{values}}');
SELECT is((SELECT recipient FROM notiflow.deliveries WHERE execution_id = :_id AND node_id = 'r'),
          'https://cb.example.com/a?b=c', 'and leaves {{{raw}}} values as they are');
SELECT notiflow.trigger('hook_url', '{"id": "..", "note": ".", "callback": "https://cb.example.com/"}', '"ann"') AS _id \gset
SELECT is((SELECT recipient FROM notiflow.deliveries WHERE execution_id = :_id AND node_id = 'h'),
          'https://hooks.example.com/orders/%2E%2E?note=%2E',
          'a value that is a dot segment has its dots encoded (the URL parser would remove it with the segment before)');

-- a version stored before the bounds of today's definitions still runs: a negative delay is
-- zero, a wait timeout of 1000 years is 100; keys that put_workflow now refuses are ignored
INSERT INTO notiflow.workflows (key, name, current_version) VALUES ('legacy', 'Legacy', 1);
INSERT INTO notiflow.workflow_versions (workflow_key, version, definition) VALUES ('legacy', 1, '{"owner": "ops", "nodes": [
    {"id": "t", "type": "trigger"},
    {"id": "d", "type": "delay", "for": "-1 hour", "label": "pause"},
    {"id": "w", "type": "wait", "key": "k-{{payload.n}}", "events": ["e"], "timeout": "1000 years"}],
  "edges": [{"from": "t", "to": "d"}, {"from": "d", "to": "w"}]}');
SELECT notiflow.trigger('legacy', '{"n": 1}', '"ann"') AS _id \gset
SELECT is((SELECT status FROM notiflow.execution_steps WHERE execution_id = :_id AND node_id = 'd'), 'completed',
          'a stored negative delay runs as zero');
SELECT ok((SELECT wake_at BETWEEN now() + interval '99 years' AND now() + interval '101 years'
             FROM notiflow.executions WHERE id = :_id),
          'a stored wait timeout of 1000 years runs as 100 years');

-- partials and the execution context --------------------------------------------
SELECT notiflow.put_workflow('part', '{"partials": {"sig": "-- {{payload.shop}} #{{execution.id}}"},
  "nodes": [{"id": "t", "type": "trigger"}, {"id": "m", "type": "sms", "text": "Hi{{#payload.items}} {{.}}{{/payload.items}} {{> sig}}"}],
  "edges": [{"from": "t", "to": "m"}]}');
SELECT notiflow.trigger('part', '{"shop": "Acme", "items": ["a", "b"]}', '"ann"') AS part \gset
SELECT is((SELECT content ->> 'text' FROM notiflow.deliveries WHERE execution_id = :part),
          'Hi a b -- Acme #' || :part, 'partials, sections and execution.id render');

-- recipient taken from the payload by the trigger node ----------------------------
SELECT notiflow.put_workflow('rp', '{"nodes": [{"id": "t", "type": "trigger", "recipient": "$.payload.customer"},
    {"id": "m", "type": "email", "subject": "s", "text": "x"}], "edges": [{"from": "t", "to": "m"}]}');
SELECT notiflow.trigger('rp', '{"customer": {"email": "c@example.com"}}') AS _id \gset
SELECT is((SELECT recipient FROM notiflow.deliveries WHERE execution_id = :_id),
          'c@example.com', 'the trigger node can take an inline recipient from the payload');
SELECT notiflow.trigger('rp', '{"customer": "ann"}') AS _id \gset
SELECT is((SELECT subscriber_id FROM notiflow.executions WHERE id = :_id),
          'ann', 'or a subscriber id');
SELECT throws_ok($$SELECT notiflow.trigger('rp', '{}')$$, '22023', 'invalid recipient',
                 'a payload without the recipient is rejected');
SELECT notiflow.trigger('solo', '{}') AS _id \gset
SELECT is((SELECT recipient FROM notiflow.executions WHERE id = :_id), NULL,
          'a workflow can run without a recipient');

-- version pinning --------------------------------------------------------------
SELECT notiflow.put_workflow('pin', '{"nodes": [{"id": "t", "type": "trigger"},
    {"id": "a", "type": "sms", "text": "v1 first"}, {"id": "b", "type": "sms", "text": "v1 second"}],
  "edges": [{"from": "t", "to": "a"}, {"from": "a", "to": "b"}]}');
SELECT notiflow.trigger('pin', '{}', '"ann"') AS pin \gset
SELECT is(notiflow.put_workflow('pin', '{"nodes": [{"id": "t", "type": "trigger"},
    {"id": "a", "type": "sms", "text": "v2 first"}, {"id": "b", "type": "sms", "text": "v2 second"}],
  "edges": [{"from": "t", "to": "a"}, {"from": "a", "to": "b"}]}'), 2, 'a changed definition is version 2');
SELECT notiflow.finish_delivery(id, 'sent') FROM notiflow.deliveries WHERE execution_id = :pin;
SELECT is((SELECT content ->> 'text' FROM notiflow.deliveries WHERE execution_id = :pin AND node_id = 'b'),
          'v1 second', 'a running execution finishes on the version it started with');
SELECT notiflow.trigger('pin', '{}', '"ann"') AS _id \gset
SELECT is((SELECT content ->> 'text' FROM notiflow.deliveries WHERE execution_id = :_id),
          'v2 first', 'new executions use the new version');

-- a definition small enough to be stored with a short varlena header
SELECT notiflow.put_workflow('tiny', '{"nodes": [{"id": "t", "type": "trigger"}]}');
SELECT notiflow.trigger('tiny', '{}') AS tiny \gset
SELECT is((SELECT status FROM notiflow.executions WHERE id = :tiny), 'completed', 'a one-node workflow runs');

-- the caller's transaction --------------------------------------------------------
SELECT count(*) AS executions_before FROM notiflow.executions \gset
SELECT count(*) AS deliveries_before FROM notiflow.deliveries \gset
SAVEPOINT business_change;
SELECT notiflow.trigger('solo', '{}', '"ann"');
SELECT notiflow.trigger_many('solo', '["ann", "quiet"]');
ROLLBACK TO SAVEPOINT business_change;
SELECT is((SELECT count(*) FROM notiflow.executions), :executions_before::bigint,
          'when the caller rolls back, no execution exists');
SELECT is((SELECT count(*) FROM notiflow.deliveries), :deliveries_before::bigint,
          'and no delivery exists');

-- cancellation --------------------------------------------------------------------
SELECT notiflow.trigger('solo', '{}', '"ann"') AS cx \gset
SELECT ok(notiflow.cancel_execution(:cx), 'a waiting execution can be cancelled');
SELECT is((SELECT status FROM notiflow.deliveries WHERE execution_id = :cx), 'cancelled', 'its queued deliveries are cancelled');
SELECT ok(NOT notiflow.cancel_execution(:cx), 'cancelling twice does nothing');

-- timeline view --------------------------------------------------------------------
SELECT is((SELECT array_agg(kind || ':' || node_id ORDER BY seq NULLS LAST, kind) FROM notiflow.execution_timeline WHERE execution_id = :fb1),
          '{step:t,step:mail,step:sms,delivery:mail,delivery:sms}', 'the timeline lists steps and deliveries');

-- trigger errors that depend on the definition ------------------------------------
SELECT throws_ok($$SELECT notiflow.finish_delivery(1, 'lost')$$, '22023', 'invalid delivery status "lost"',
                 'finish_delivery rejects an unknown status');
SELECT ok(NOT notiflow.finish_delivery(-1, 'sent'), 'finish_delivery of an unknown delivery returns false');
SELECT is(notiflow.resume_execution(-1), NULL, 'resume_execution of an unknown execution returns NULL');
SELECT is(notiflow.resume_execution(:fb1), 'completed', 'resuming a finished execution changes nothing');
SELECT throws_ok($$SELECT notiflow.resume_due_executions(0)$$, '22023', 'limit must be positive',
                 'resume_due_executions needs a positive limit');

-- a transform that sets the recipient's address: checked as a subscriber's is (one address)
SELECT notiflow.put_workflow('tf-addr', '{"nodes": [
    {"id": "t", "type": "trigger"},
    {"id": "f", "type": "transform", "set": {"recipient.email": "{{payload.email}}"}},
    {"id": "m", "type": "email", "subject": "s", "text": "x"}],
  "edges": [{"from": "t", "to": "f"}, {"from": "f", "to": "m"}]}');
SELECT notiflow.trigger('tf-addr', '{"email": "a@example.com, b@example.com"}', '"ann"') AS tfa \gset
SELECT is((SELECT status || ':' || (output ->> 'reason') FROM notiflow.execution_steps WHERE execution_id = :tfa AND node_id = 'm'),
          'skipped:the recipient''s email "a@example.com, b@example.com" is not one email address',
          'a transform that sets recipient.email to a list skips the email with the reason');
SELECT is((SELECT count(*) FROM notiflow.deliveries WHERE execution_id = :tfa), 0::bigint, 'and queues no delivery');

-- a retry with an idempotency key after the workflow was deactivated gets the first execution
SELECT notiflow.put_workflow('idem-off', '{"nodes": [{"id": "t", "type": "trigger"}, {"id": "m", "type": "email", "subject": "s", "text": "x"}],
  "edges": [{"from": "t", "to": "m"}]}');
SELECT notiflow.trigger('idem-off', '{}', '"ann"', 'order-1') AS idem1 \gset
SELECT notiflow.deactivate_workflow('idem-off');
SELECT is(notiflow.trigger('idem-off', '{}', '"ann"', 'order-1'), :idem1::bigint,
          'a deactivated workflow still answers a retry of an accepted trigger with its execution');
SELECT throws_ok($$SELECT notiflow.trigger('idem-off', '{}', '"ann"', 'order-2')$$, '55000', 'workflow "idem-off" is not active',
                 'and refuses a new one');

-- trigger_many names the recipient an error is about
CREATE FUNCTION pg_temp.detail_of(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE d text;
BEGIN
    EXECUTE q;
    RETURN NULL;
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS d = PG_EXCEPTION_DETAIL;
    RETURN d;
END $$;
SELECT throws_ok($$SELECT notiflow.trigger_many('cond', '["ann", {"emial": "x@example.com"}]', '{}')$$, '22023', NULL,
                 'trigger_many refuses a bad recipient');
SELECT pg_temp.detail_of($$SELECT notiflow.trigger_many('cond', '["ann", {"emial": "x@example.com"}]', '{}')$$) AS tm_detail \gset
SELECT ok(:'tm_detail' LIKE 'recipients[1].emial: unknown field%', 'with its place in the array: ' || :'tm_detail');

-- versions are not numbered again after the newest was deleted
SELECT notiflow.put_workflow('renum', '{"nodes": [{"id": "t", "type": "trigger"}, {"id": "m", "type": "email", "subject": "s", "text": "v1"}],
  "edges": [{"from": "t", "to": "m"}]}');
SELECT notiflow.put_workflow('renum', '{"nodes": [{"id": "t", "type": "trigger"}, {"id": "m", "type": "email", "subject": "s", "text": "v2"}],
  "edges": [{"from": "t", "to": "m"}]}');
SELECT notiflow.trigger('renum', '{}', '"ann"') AS renum_e \gset
DELETE FROM notiflow.workflow_versions WHERE workflow_key = 'renum' AND version = 2;
SELECT is(notiflow.put_workflow('renum', '{"nodes": [{"id": "t", "type": "trigger"}, {"id": "m", "type": "delay", "for": "1 hour"}],
  "edges": [{"from": "t", "to": "m"}]}'), 3, 'a version deleted is not numbered again');
-- an execution waiting at a node that another version of the same number made another type
INSERT INTO notiflow.workflow_versions (workflow_key, version, definition)
SELECT workflow_key, 2, definition FROM notiflow.workflow_versions WHERE workflow_key = 'renum' AND version = 3;
SELECT ok(notiflow.finish_delivery((SELECT id FROM notiflow.deliveries WHERE execution_id = :renum_e), 'sent', 'r1'),
          'a delivery of an execution whose version number now names another graph is recorded');
SELECT is((SELECT status || ':' || (error LIKE '%waits at node "m" of type email, which has type delay in workflow "renum" version 2 now%')
             FROM notiflow.executions WHERE id = :renum_e),
          'failed:true', 'the execution fails with the reason instead of reading the node as the other type');

-- the output bound holds inside a node: a partial indented on each of its lines
SELECT throws_ok($$SELECT notiflow.render_template(repeat(' ', 100000) || '{{>p}}', '{}', jsonb_build_object('p', repeat(E'a\n', 1000)))$$,
                 '54000', 'a template renders more than 67108864 bytes',
                 'a partial indented on each line stops at the output bound (not at memory''s end)');

-- a fan-out larger than one chunk (requests are run and written 1,000 at a time): every recipient
-- gets the execution and delivery of its own, a subscriber named twice (in two chunks) one, and a
-- repeated call with the same key the same executions
CREATE TEMP TABLE big_fan_recipients AS
SELECT jsonb_agg(CASE WHEN g IN (1, 1500) THEN '"ann"'::jsonb
                      ELSE jsonb_build_object('email', 'fan' || g || '@example.com') END ORDER BY g) AS r
  FROM generate_series(1, 1600) g;
CREATE TEMP TABLE big_fan AS
SELECT row_number() OVER () AS n, t.execution_id
  FROM notiflow.trigger_many('solo', (SELECT r FROM big_fan_recipients), '{}', 'big-fan') t;
SELECT is((SELECT count(*) || '/' || count(DISTINCT execution_id) FROM big_fan), '1600/1599',
          'a fan-out over two chunks: 1,600 rows, 1,599 executions');
SELECT is((SELECT count(DISTINCT execution_id) FROM big_fan WHERE n IN (1, 1500)), 1::bigint,
          'the subscriber named in two chunks has one execution');
SELECT is((SELECT count(*) FILTER (WHERE d.recipient = CASE WHEN b.n IN (1, 1500) THEN 'ann@example.com'
                                                            ELSE 'fan' || b.n || '@example.com' END)
             FROM big_fan b JOIN notiflow.deliveries d ON d.execution_id = b.execution_id),
          1600::bigint, 'each execution''s delivery goes to its own recipient, across the chunks');
SELECT is((SELECT count(*) FROM big_fan b
             JOIN (SELECT row_number() OVER () AS n, t.execution_id
                     FROM notiflow.trigger_many('solo', (SELECT r FROM big_fan_recipients), '{}', 'big-fan') t) again
               ON again.n = b.n AND again.execution_id = b.execution_id),
          1600::bigint, 'the same call again returns the same executions and creates none');

SELECT * FROM finish();
ROLLBACK;
