-- Workflows: put_workflow versions, validate_workflow problems, immutability.
\set VERBOSITY default
\set SHOW_CONTEXT never
SET client_min_messages = warning;

SELECT notiflow.put_workflow('welcome', '{
  "name": "Welcome",
  "nodes": [{"id": "start", "type": "trigger"},
            {"id": "hello", "type": "email", "subject": "Welcome {{recipient.name}}", "text": "Hi!"}],
  "edges": [{"from": "start", "to": "hello"}]}');

-- the same definition again: no new version
SELECT notiflow.put_workflow('welcome', '{
  "name": "Welcome",
  "nodes": [{"id": "start", "type": "trigger"},
            {"id": "hello", "type": "email", "subject": "Welcome {{recipient.name}}", "text": "Hi!"}],
  "edges": [{"from": "start", "to": "hello"}]}');

-- a change: version 2
SELECT notiflow.put_workflow('welcome', '{
  "name": "Welcome",
  "nodes": [{"id": "start", "type": "trigger"},
            {"id": "hello", "type": "email", "subject": "Welcome, {{recipient.name}}!", "text": "Hi!"}],
  "edges": [{"from": "start", "to": "hello"}]}');

SELECT key, name, active, current_version FROM notiflow.workflows;
SELECT workflow_key, version, definition #>> '{nodes,1,subject}' AS subject
  FROM notiflow.workflow_versions ORDER BY version;

-- versions are immutable
UPDATE notiflow.workflow_versions SET definition = '{}' WHERE version = 1;

-- a valid definition has no problem
SELECT count(*) AS problems FROM notiflow.validate_workflow('{
  "nodes": [{"id": "t", "type": "trigger"}], "edges": []}');

-- every kind of problem, all at once, each with its path
SELECT * FROM notiflow.validate_workflow('{
  "nodes": [
    {"id": "t", "type": "trigger", "required": "order_id", "recipient": "$.payload.("},
    {"id": "t", "type": "sms", "text": "x"},
    {"id": "x", "type": "fax"},
    {"id": "c", "type": "condition"},
    {"id": "s", "type": "switch", "value": "$.payload.kind"},
    {"id": "m", "type": "email", "subject": "{{#open}}"},
    {"id": "d", "type": "delay", "for": "soon"},
    {"id": "d2", "type": "delay"},
    {"id": "f", "type": "transform", "set": {"steps.x": "1", "vars.y": "$.("}},
    {"id": "w", "type": "wait"},
    {"type": "push"},
    {"id": "orphan", "type": "chat", "text": "lonely"},
    {"id": "second", "type": "trigger"}],
  "edges": [
    {"from": "t", "to": "c"},
    {"from": "c", "to": "m", "on": "maybe"},
    {"from": "c", "to": "s", "on": "true"},
    {"from": "s", "to": "d", "on": "gold"},
    {"from": "d", "to": "f", "on": "done"},
    {"from": "f", "to": "c"},
    {"from": "m", "to": "nowhere"},
    {"from": "m", "to": "t"},
    "not an edge"]}');

-- bounds that keep a run's cost in proportion to the definition: a transform target of more than
-- 32 parts (140,000 crashed the backend's stack), more than 256 assignments, a wait for more
-- than 64 events; and a target that starts with a dot
SELECT * FROM notiflow.validate_workflow(jsonb_build_object('nodes', jsonb_build_array(
    '{"id": "t", "type": "trigger"}'::jsonb,
    jsonb_build_object('id', 'deep', 'type', 'transform',
                       'set', jsonb_build_object('vars' || repeat('.a', 32), 1, '.vars.x', 2)),
    jsonb_build_object('id', 'wide', 'type', 'transform',
                       'set', (SELECT jsonb_object_agg('vars.k' || g, g) FROM generate_series(1, 257) g)),
    jsonb_build_object('id', 'many', 'type', 'wait', 'key', 'k',
                       'events', (SELECT jsonb_agg('e' || g) FROM generate_series(1, 65) g))),
  'edges', '[{"from": "t", "to": "deep"}, {"from": "t", "to": "wide"}, {"from": "t", "to": "many"}]'::jsonb));

-- a delay or a wait timeout is between zero and 100 years (now() plus a million years is no timestamp)
SELECT * FROM notiflow.validate_workflow('{
  "nodes": [
    {"id": "t", "type": "trigger"},
    {"id": "back", "type": "delay", "for": "-1 day"},
    {"id": "mixed", "type": "delay", "for": "1 month -31 days"},
    {"id": "long", "type": "delay", "for": "1000000 years"},
    {"id": "ok", "type": "delay", "for": "100 years"},
    {"id": "w", "type": "wait", "key": "k", "events": ["e"], "timeout": "101 years"},
    {"id": "parts", "type": "delay", "for": "300000 years -108000000 days"}],
  "edges": [{"from": "t", "to": "back"}, {"from": "t", "to": "mixed"}, {"from": "t", "to": "long"},
            {"from": "t", "to": "ok"}, {"from": "t", "to": "w"}, {"from": "t", "to": "parts"}]}');

-- a webhook url that starts with {{name}}: the value would be percent-encoded ({{{name}}} is not)
SELECT * FROM notiflow.validate_workflow('{
  "nodes": [{"id": "t", "type": "trigger"},
    {"id": "h", "type": "webhook", "url": "{{payload.callback}}"},
    {"id": "ok", "type": "webhook", "url": "{{{payload.callback}}}?id={{payload.id}}"}],
  "edges": [{"from": "t", "to": "h"}, {"from": "t", "to": "ok"}]}');

-- not an object at all
SELECT * FROM notiflow.validate_workflow('[]');
SELECT * FROM notiflow.validate_workflow('{"nodes": [], "edges": []}');

-- put_workflow refuses an invalid definition with SQLSTATE 22023 and every problem in DETAIL
SELECT notiflow.put_workflow('broken', '{"nodes": [{"id": "a", "type": "email"}], "edges": []}');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT notiflow.put_workflow('bad key!', '{"nodes": [{"id": "t", "type": "trigger"}]}');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT count(*) AS broken_workflows FROM notiflow.workflows WHERE key = 'broken';

-- activation
SELECT notiflow.deactivate_workflow('welcome');
SELECT notiflow.trigger('welcome', '{}', '{"email": "a@example.com"}');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT notiflow.activate_workflow('welcome');
SELECT notiflow.activate_workflow('missing');
