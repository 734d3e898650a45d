-- Workflow validation: each kind of problem is found, with its path, and
-- put_workflow refuses the definition with SQLSTATE 22023 listing them all.
\set ON_ERROR_STOP 1
\set QUIET 1
SET client_min_messages = warning;
BEGIN;
SELECT plan(44);

CREATE FUNCTION pg_temp.problems(nodes text, edges text DEFAULT '[]')
RETURNS SETOF text LANGUAGE sql AS $$
    SELECT path || ': ' || message
      FROM notiflow.validate_workflow(format('{"nodes": %s, "edges": %s}', nodes, edges)::jsonb)
$$;

SELECT is_empty($$SELECT pg_temp.problems('[{"id": "t", "type": "trigger"}, {"id": "m", "type": "sms", "text": "hi"}]',
                                         '[{"from": "t", "to": "m"}]')$$, 'a valid definition has no problem');
SELECT results_eq($$SELECT pg_temp.problems('[{"id": "t", "type": "trigger"}, {"id": "x", "type": "pager"}]', '[{"from": "t", "to": "x"}]')$$,
    ARRAY['nodes[1].type: unknown node type "pager"; expected one of trigger, email, sms, push, chat, webhook, condition, switch, delay, transform, wait'],
    'unknown node type');
SELECT results_eq($$SELECT pg_temp.problems('[{"id": "t", "type": "trigger"}, {"id": "m", "type": "sms"}]', '[{"from": "t", "to": "m"}]')$$,
    ARRAY['nodes[1].text: required field is missing'], 'missing required field (sms text)');
SELECT results_eq($$SELECT pg_temp.problems('[{"id": "t", "type": "trigger"}, {"id": "m", "type": "email", "text": "x"}]', '[{"from": "t", "to": "m"}]')$$,
    ARRAY['nodes[1].subject: required field is missing'], 'missing required field (email subject)');
SELECT results_eq($$SELECT pg_temp.problems('[{"id": "t", "type": "trigger"}, {"id": "c", "type": "condition"}]', '[{"from": "t", "to": "c"}]')$$,
    ARRAY['nodes[1].if: required field is missing'], 'missing required field (condition if)');
SELECT results_eq($$SELECT pg_temp.problems('[{"id": "t", "type": "trigger"}, {"id": "s", "type": "switch"}]', '[{"from": "t", "to": "s"}]')$$,
    ARRAY['nodes[1].value: required field is missing'], 'missing required field (switch value)');
SELECT results_eq($$SELECT pg_temp.problems('[{"id": "t", "type": "trigger"}, {"type": "sms", "text": "x"}]')$$,
    ARRAY['nodes[1].id: required field is missing'], 'missing node id');
SELECT results_eq($$SELECT pg_temp.problems('[{"id": "t", "type": "trigger"}, {"id": "t", "type": "sms", "text": "x"}]')$$,
    ARRAY['nodes[1].id: duplicate node id "t" (also nodes[0])'], 'duplicate node id');
SELECT results_eq($$SELECT pg_temp.problems('[{"id": "t", "type": "trigger"}]', '[{"from": "t", "to": "ghost"}]')$$,
    ARRAY['edges[0].to: no node has id "ghost"'], 'edge to a missing node');
SELECT results_eq($$SELECT pg_temp.problems('[{"id": "t", "type": "trigger"}]', '[{"from": "ghost", "to": "t"}]')$$,
    ARRAY['edges[0].from: no node has id "ghost"', 'edges[0].to: an edge cannot lead into the trigger node'], 'edge from a missing node');
SELECT results_eq($$SELECT pg_temp.problems('[{"id": "m", "type": "sms", "text": "x"}]')$$,
    ARRAY['nodes: a workflow needs exactly one trigger node, found 0'], 'no trigger');
SELECT results_eq($$SELECT pg_temp.problems('[{"id": "a", "type": "trigger"}, {"id": "b", "type": "trigger"}]', '[{"from": "a", "to": "b"}]')$$,
    ARRAY['nodes: a workflow needs exactly one trigger node, found 2', 'edges[0].to: an edge cannot lead into the trigger node'], 'two triggers');
SELECT results_eq($$SELECT pg_temp.problems('[{"id": "t", "type": "trigger"}, {"id": "a", "type": "sms", "text": "x"}, {"id": "b", "type": "sms", "text": "y"}]',
                                           '[{"from": "t", "to": "a"}, {"from": "a", "to": "b"}, {"from": "b", "to": "a"}]')$$,
    ARRAY['nodes[1]: node "a" is part of a cycle; workflows must be acyclic'], 'cycle');
SELECT results_eq($$SELECT pg_temp.problems('[{"id": "t", "type": "trigger"}, {"id": "a", "type": "sms", "text": "x"}]')$$,
    ARRAY['nodes[1]: node "a" is unreachable from the trigger'], 'unreachable node');
SELECT results_eq($$SELECT pg_temp.problems('[{"id": "t", "type": "trigger"}, {"id": "c", "type": "condition", "if": "$.payload.total >"}]', '[{"from": "t", "to": "c"}]')$$,
    ARRAY['nodes[1].if: invalid jsonpath: syntax error at end of jsonpath input'], 'jsonpath that does not compile');
SELECT results_eq($$SELECT pg_temp.problems('[{"id": "t", "type": "trigger", "recipient": "@@"}]')$$,
    ARRAY['nodes[0].recipient: invalid jsonpath: syntax error at or near "@" of jsonpath input'], 'trigger recipient jsonpath that does not compile');
SELECT results_eq($$SELECT pg_temp.problems('[{"id": "t", "type": "trigger"}, {"id": "m", "type": "sms", "text": "{{#items}}x"}]', '[{"from": "t", "to": "m"}]')$$,
    ARRAY['nodes[1].text: invalid template: unclosed section "items" opened at line 1, column 1'], 'template that does not parse');
SELECT results_eq($$SELECT pg_temp.problems('[{"id": "t", "type": "trigger"}, {"id": "m", "type": "sms", "text": "{{#a}}x{{/b}}"}]', '[{"from": "t", "to": "m"}]')$$,
    $$SELECT path || ': ' || message FROM notiflow.validate_workflow('{"nodes": [{"id": "t", "type": "trigger"}, {"id": "m", "type": "sms", "text": "{{#a}}x{{/b}}"}], "edges": [{"from": "t", "to": "m"}]}') WHERE path = 'nodes[1].text'$$,
    'mismatched section close is a template problem');
SELECT results_eq($$SELECT pg_temp.problems('[{"id": "t", "type": "trigger"}, {"id": "c", "type": "condition", "if": "$.x"}, {"id": "m", "type": "sms", "text": "x"}]',
                                           '[{"from": "t", "to": "c"}, {"from": "c", "to": "m", "on": "maybe"}]')$$,
    ARRAY['edges[1].on: node "c" (condition) cannot produce "maybe"; expected one of true, false'], 'condition outcome that cannot happen');
SELECT results_eq($$SELECT pg_temp.problems('[{"id": "t", "type": "trigger"}, {"id": "m", "type": "sms", "text": "x"}, {"id": "n", "type": "sms", "text": "y"}]',
                                           '[{"from": "t", "to": "m"}, {"from": "m", "to": "n", "on": "opened"}]')$$,
    ARRAY['edges[1].on: node "m" (sms) cannot produce "opened"; expected one of sent, failed, skipped'], 'action outcome that cannot happen');
SELECT results_eq($$SELECT pg_temp.problems('[{"id": "t", "type": "trigger"}, {"id": "m", "type": "sms", "text": "x"}]', '[{"from": "t", "to": "m", "on": "true"}]')$$,
    ARRAY['edges[0].on: node "t" (trigger) has a single outcome; remove "on"'], 'outcome on a node with a single outcome');
SELECT results_eq($$SELECT pg_temp.problems('[{"id": "t", "type": "trigger"}, {"id": "d", "type": "delay", "for": "whenever"}]', '[{"from": "t", "to": "d"}]')$$,
    ARRAY['nodes[1].for: invalid interval: invalid input syntax for type interval: "whenever"'], 'delay with an invalid interval');
SELECT results_eq($$SELECT pg_temp.problems('[{"id": "t", "type": "trigger"}, {"id": "f", "type": "transform", "set": {"total": "1"}}]', '[{"from": "t", "to": "f"}]')$$,
    ARRAY['nodes[1].set.total: target must be a dotted path under payload, recipient or vars, like "vars.total"'], 'transform target outside the context');

SELECT throws_ok($$SELECT notiflow.put_workflow('w', '{"nodes": [{"id": "m", "type": "sms"}]}')$$,
    '22023', 'invalid workflow definition for "w": 2 problems', 'put_workflow raises 22023 naming the count');
SELECT throws_like($$SELECT notiflow.put_workflow('w', '{"nodes": [{"id": "m", "type": "sms"}]}')$$,
    'invalid workflow definition%', 'put_workflow refuses an invalid definition');
SELECT is((SELECT count(*)::int FROM notiflow.workflows WHERE key = 'w'), 0, 'an invalid definition stores nothing');

-- the DETAIL lists every problem, one per line
CREATE FUNCTION pg_temp.detail_of(def jsonb) RETURNS text LANGUAGE plpgsql AS $$
DECLARE d text;
BEGIN
    PERFORM notiflow.put_workflow('w', def);
    RETURN NULL;
EXCEPTION WHEN invalid_parameter_value THEN
    GET STACKED DIAGNOSTICS d = PG_EXCEPTION_DETAIL;
    RETURN d;
END $$;
SELECT is(pg_temp.detail_of('{"nodes": [{"id": "m", "type": "sms"}]}'),
          E'nodes[0].text: required field is missing\nnodes: a workflow needs exactly one trigger node, found 0',
          'DETAIL lists every problem with its path');

-- jsonpath variables: evaluated with none, PostgreSQL raises for any (even in silent mode)
SELECT results_eq($$SELECT pg_temp.problems('[{"id": "t", "type": "trigger"}, {"id": "c", "type": "condition", "if": "$.payload.total > $limit"}]', '[{"from": "t", "to": "c"}]')$$,
    ARRAY['nodes[1].if: invalid jsonpath: variable $"limit" is not defined (workflow jsonpaths have no variables: read values from $.payload, $.vars, $.steps or $.recipient)'],
    'a jsonpath variable is refused (it would fail every execution)');
SELECT is_empty($$SELECT pg_temp.problems('[{"id": "t", "type": "trigger"}, {"id": "c", "type": "condition", "if": "$.payload.s == \"$limit\" && $.payload.\"$k\" == 1"}]', '[{"from": "t", "to": "c"}]')$$,
    'a $ inside a string or a key is no variable');
-- the size of a graph: a chain of 1000 nodes is checked (depth first), 1001 nodes or 4001 edges are refused
CREATE FUNCTION pg_temp.chain(n integer, extra_edges integer DEFAULT 0) RETURNS jsonb LANGUAGE sql AS $$
    SELECT jsonb_build_object(
        'nodes', jsonb_build_array(jsonb_build_object('id', 'n0', 'type', 'trigger'))
                 || (SELECT jsonb_agg(jsonb_build_object('id', 'n' || i, 'type', 'transform', 'set', '{"vars.x": 1}'::jsonb) ORDER BY i)
                       FROM generate_series(1, n - 1) i),
        'edges', (SELECT jsonb_agg(jsonb_build_object('from', 'n' || (i - 1), 'to', 'n' || i) ORDER BY i) FROM generate_series(1, n - 1) i)
                 || coalesce((SELECT jsonb_agg(jsonb_build_object('from', 'n0', 'to', 'n1')) FROM generate_series(1, extra_edges)), '[]'))
$$;
SELECT is_empty($$SELECT * FROM notiflow.validate_workflow(pg_temp.chain(1000))$$, 'a chain of 1000 nodes is valid');
SELECT results_eq($$SELECT path || ': ' || message FROM notiflow.validate_workflow(pg_temp.chain(1001))$$,
    ARRAY['nodes: at most 1000 nodes, got 1001'], 'more than 1000 nodes are refused');
SELECT results_eq($$SELECT path || ': ' || message FROM notiflow.validate_workflow(pg_temp.chain(10, 3992))$$,
    ARRAY['edges: at most 4000 edges, got 4001'], 'more than 4000 edges are refused');
-- a null field counts as missing
SELECT results_eq($$SELECT pg_temp.problems('[{"id": "t", "type": "trigger"}, {"id": "m", "type": "email", "subject": "Hi", "text": null}]', '[{"from": "t", "to": "m"}]')$$,
    ARRAY['nodes[1].text: an email node needs "text" or "html"'], 'an email node with a null text has no body');
SELECT results_eq($$SELECT pg_temp.problems('[{"id": "t", "type": "trigger"}, {"id": "p", "type": "push", "title": null}]', '[{"from": "t", "to": "p"}]')$$,
    ARRAY['nodes[1].body: a push node needs "title" or "body"'], 'a push node with a null title has no content');
-- a key no node of its type reads is refused, not ignored (a misspelt "html" sent mail without it)
SELECT results_eq($$SELECT pg_temp.problems('[{"id": "t", "type": "trigger"}, {"id": "m", "type": "email", "subject": "Hi", "text": "x", "htlm": "<p>x</p>"}]', '[{"from": "t", "to": "m"}]')$$,
    ARRAY['nodes[1].htlm: an email node has no key "htlm"; expected to, subject, text, html, id, type, name, description'],
    'a misspelt key of an email node');
SELECT results_eq($$SELECT pg_temp.problems('[{"id": "t", "type": "trigger"}, {"id": "p", "type": "push", "body": "x", "to": "{{payload.token}}"}]', '[{"from": "t", "to": "p"}]')$$,
    ARRAY['nodes[1].to: a push node has no key "to"; expected title, body, data, id, type, name, description (a push goes to the recipient''s devices, recipient.push)'],
    'a push node has no "to"');
SELECT results_eq($$SELECT pg_temp.problems('[{"id": "t", "type": "trigger"}, {"id": "h", "type": "webhook", "to": "https://example.com/h"}]', '[{"from": "t", "to": "h"}]')$$,
    ARRAY['nodes[1].to: a webhook node has no key "to"; expected url, body, id, type, name, description (a webhook node''s address is its "url")'],
    'a webhook node has no "to"');
-- "{{ #x }}" outside any section is a variable named "#x", which the context never has: refused
-- where "{{#x}}" was meant; inside a section it may name a key of the data, as in render_template
SELECT results_eq($$SELECT pg_temp.problems('[{"id": "t", "type": "trigger"}, {"id": "s", "type": "sms", "text": "Hi{{ #payload.vip }} dear{{ /payload.vip }}"}]', '[{"from": "t", "to": "s"}]')$$,
    ARRAY['nodes[1].text: invalid template: the tag of "#payload.vip" is a variable of that name, always empty here; a tag''s "#" goes right after its opening delimiter'],
    'a section tag with a space before its "#"');
SELECT is_empty($$SELECT pg_temp.problems('[{"id": "t", "type": "trigger"}, {"id": "s", "type": "sms", "text": "{{#payload.node}}{{ #text }}{{/payload.node}}"}]', '[{"from": "t", "to": "s"}]')$$,
    'inside a section such a name may be a key of the data');
SELECT is(notiflow.render_template('{{ #x }}', '{"#x": "v"}'), 'v', 'render_template looks such a name up in its data');
SELECT results_eq($$SELECT pg_temp.problems('[{"id": "t", "type": "trigger"}, {"id": "s", "type": "sms", "text": "x", "body": "y"}]', '[{"from": "t", "to": "s"}]')$$,
    ARRAY['nodes[1].body: an sms node has no key "body"; expected to, text, id, type, name, description'],
    'an sms node''s text is "text"');
SELECT results_eq($$SELECT pg_temp.problems('[{"id": "t", "type": "trigger"}, {"id": "w", "type": "wait", "key": "k", "events": ["e"], "timout": "1 hour"}]', '[{"from": "t", "to": "w"}]')$$,
    ARRAY['nodes[1].timout: a wait node has no key "timout"; expected events, key, timeout, id, type, name, description'],
    'a misspelt timeout of a wait node');
SELECT results_eq($$SELECT pg_temp.problems('[{"id": "t", "type": "trigger", "name": "Order placed", "description": "from the shop"}, {"id": "c", "type": "condition", "if": "$.payload.x", "name": "big?"}]',
                                            '[{"from": "t", "to": "c", "when": "true"}]')$$,
    ARRAY['edges[0].when: an edge has no key "when"; expected from, to, on'],
    'nodes may have a name and a description; an edge has from, to and on');
SELECT results_eq($$SELECT path || ': ' || message FROM notiflow.validate_workflow('{"nodes": [{"id": "t", "type": "trigger"}], "edge": []}')$$,
    ARRAY['edge: a workflow definition has no key "edge"; expected name, description, nodes, edges, partials'],
    'a definition''s own keys are checked too');
SELECT * FROM finish();
ROLLBACK;
