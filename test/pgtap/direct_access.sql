-- The engine writes executions (with their steps) and deliveries without the executor
-- (src/row_writer.c) and reads a trigger's subscriber with an index scan
-- (src/subscriber_repo.c).  These tests hold both to what the SQL statements
-- would do: column defaults, CHECK and NOT NULL constraints (NOT VALID ones
-- too), changes to the table definition, triggers (the statement is used
-- then), idempotency keys repeated in one batch; the recipient object
-- exactly as jsonb_strip_nulls(jsonb_build_object(...)) builds it.
\set ON_ERROR_STOP 1
\set QUIET 1
SET client_min_messages = warning;
BEGIN;
SELECT plan(35);

SELECT notiflow.put_provider('mail', 'email', 'sendgrid', '{"api_key": "k", "from": "shop@example.com"}');
SELECT notiflow.put_subscriber('ann', '{"name": "Ann", "email": "ann@example.com"}');
SELECT notiflow.put_subscriber('bob', '{"name": "Bob", "email": "bob@example.com"}');
SELECT notiflow.put_workflow('rw', '{"nodes": [
    {"id": "t", "type": "trigger"},
    {"id": "m", "type": "email", "subject": "Order {{payload.order_id}}", "text": "Hi {{recipient.name}}"}],
  "edges": [{"from": "t", "to": "m"}]}');

-- defaults of the columns the engine does not give -----------------------------
SELECT notiflow.trigger('rw', '{"order_id": "A1"}', '"ann"') AS e1 \gset
SELECT is((SELECT (created_at, updated_at) = (now(), now()) FROM notiflow.executions WHERE id = :e1),
          true, 'executions: created_at and updated_at take their default, now()');
SELECT results_eq(
    $$SELECT attempts, provider_attempts, tried_providers, next_attempt_at = now(), created_at = now(),
             status, recipient, content->>'subject'
        FROM notiflow.deliveries WHERE execution_id = $$ || :e1,
    $$VALUES (0, 0, '{}'::text[], true, true, 'queued', 'ann@example.com', 'Order A1')$$,
    'deliveries: defaults (attempts, tried_providers, next_attempt_at, created_at) and the given columns');
SELECT is((SELECT count(*)::int FROM notiflow.deliveries d
            WHERE d.execution_id = :e1 AND d.id IS NOT NULL
              AND d.id = (SELECT max(id) FROM notiflow.deliveries)),
          1, 'deliveries: the id comes from the identity sequence');
SELECT results_eq(
    $$SELECT node_id, status FROM notiflow.execution_steps WHERE execution_id = $$ || :e1 || $$ ORDER BY seq$$,
    $$VALUES ('t', 'completed'), ('m', 'waiting')$$,
    'execution_steps: one row per node run (from executions.steps)');
SELECT throws_ok($$UPDATE notiflow.executions SET steps = '{}' WHERE id = $$ || :e1, '23514', NULL,
                 'executions.steps must be an array');
-- the indexes have the new rows (an index scan finds them)
SET LOCAL enable_seqscan = off;
SELECT is((SELECT count(*)::int FROM notiflow.deliveries WHERE status = 'queued' AND next_attempt_at <= now()
            AND execution_id = :e1), 1, 'the partial index of due deliveries has the new delivery');
SELECT is((SELECT count(*)::int FROM notiflow.executions WHERE id = :e1),
          1, 'the executions primary key has the new execution');
RESET enable_seqscan;

-- partial indexes: opened only for a row that enters them ------------------------
SELECT notiflow.put_workflow('rw_delay', '{"nodes": [
    {"id": "t", "type": "trigger"}, {"id": "d", "type": "delay", "for": "1 hour"},
    {"id": "m", "type": "email", "subject": "Later", "text": "Hi"}],
  "edges": [{"from": "t", "to": "d"}, {"from": "d", "to": "m"}]}');
SELECT notiflow.trigger('rw_delay', '{}', '"ann"') AS ed \gset
SET LOCAL enable_seqscan = off;
SET LOCAL enable_bitmapscan = off;
SELECT is((SELECT count(*)::int FROM notiflow.executions WHERE wake_at > now() AND id + 0 = :ed), 1,
          'the partial index of due executions has an execution that waits for a time');
RESET enable_seqscan;
RESET enable_bitmapscan;
CREATE UNIQUE INDEX rw_unique_order ON notiflow.executions ((payload->>'order_id'))
    WHERE payload ? 'unique';  -- rolled back at the end
SELECT lives_ok($$SELECT notiflow.trigger('rw', '{"order_id": "U1", "unique": true}', '"ann"')$$,
                'a row that enters a unique partial index');
SELECT throws_ok($$SELECT notiflow.trigger('rw', '{"order_id": "U1", "unique": true}', '"ann"')$$, '23505',
                 NULL, 'a second one with the same key violates it');
SELECT lives_ok($$SELECT notiflow.trigger('rw', '{"order_id": "U1"}', '"ann"')$$,
                'a row outside the predicate does not conflict');
SELECT is((SELECT count(*)::int FROM notiflow.executions WHERE payload->>'order_id' = 'U1'), 2,
          'the first row and the one outside the predicate are stored');
DROP INDEX notiflow.rw_unique_order;

-- a changed default is used from the next trigger on ---------------------------
ALTER TABLE notiflow.deliveries ALTER COLUMN attempts SET DEFAULT 3;
SELECT notiflow.trigger('rw', '{"order_id": "A2"}', '"ann"') AS e2 \gset
SELECT is((SELECT attempts FROM notiflow.deliveries WHERE execution_id = :e2), 3,
          'ALTER COLUMN ... SET DEFAULT is seen by the next trigger');
ALTER TABLE notiflow.deliveries ALTER COLUMN attempts SET DEFAULT 0;

-- CHECK constraints, NOT VALID ones too, and NOT NULL ----------------------------
ALTER TABLE notiflow.executions ADD CONSTRAINT no_bad_orders CHECK (payload->>'order_id' <> 'BAD') NOT VALID;
SELECT throws_ok($$SELECT notiflow.trigger('rw', '{"order_id": "BAD"}', '"ann"')$$, '23514',
                 NULL, 'a CHECK constraint added NOT VALID holds for new executions');
SELECT lives_ok($$SELECT notiflow.trigger('rw', '{"order_id": "GOOD"}', '"ann"')$$,
                'a row that satisfies it is written');
ALTER TABLE notiflow.executions DROP CONSTRAINT no_bad_orders;
SELECT lives_ok($$SELECT notiflow.trigger('rw', '{"order_id": "BAD"}', '"ann"')$$,
                'a dropped CHECK constraint no longer applies');
ALTER TABLE notiflow.deliveries ADD CONSTRAINT short_nodes CHECK (length(node_id) < 2);
SELECT lives_ok($$SELECT notiflow.trigger('rw', '{"order_id": "A3"}', '"ann"')$$,
                'deliveries: a CHECK constraint the rows satisfy');
ALTER TABLE notiflow.deliveries DROP CONSTRAINT short_nodes;
ALTER TABLE notiflow.deliveries ADD CONSTRAINT no_queued CHECK (status <> 'queued') NOT VALID;
SELECT throws_ok($$SELECT notiflow.trigger('rw', '{"order_id": "A4"}', '"ann"')$$, '23514',
                 NULL, 'deliveries: a CHECK constraint the rows break');
ALTER TABLE notiflow.deliveries DROP CONSTRAINT no_queued;
-- a CHECK that calls a function of the database's own: its state is built for each writer
CREATE FUNCTION public.rw_not_bad(text) RETURNS boolean LANGUAGE plpgsql IMMUTABLE AS
$$BEGIN RETURN $1 NOT LIKE '%bad%'; END$$;
ALTER TABLE notiflow.deliveries ADD CONSTRAINT not_bad CHECK (public.rw_not_bad(recipient));
SELECT lives_ok($$SELECT notiflow.trigger('rw', '{"order_id": "U1"}', '"ann"')$$,
                'a CHECK calling a PL/pgSQL function passes for a good row');
SELECT notiflow.put_subscriber('badly', '{"email": "badly@example.com"}');
SELECT throws_ok($$SELECT notiflow.trigger('rw', '{"order_id": "U2"}', '"badly"')$$, '23514',
                 NULL, 'and holds for a bad one');
ALTER TABLE notiflow.deliveries DROP CONSTRAINT not_bad;
DROP FUNCTION public.rw_not_bad(text);
-- a long IN list in a CHECK (planned as expression_planner does: not hashed)
ALTER TABLE notiflow.deliveries ADD CONSTRAINT known_nodes
    CHECK (node_id IN ('a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k', 'm'));
SELECT lives_ok($$SELECT notiflow.trigger('rw', '{"order_id": "U3"}', '"ann"'),
                         notiflow.trigger('rw', '{"order_id": "U4"}', '"bob"')$$,
                'a CHECK with a long IN list, twice');
ALTER TABLE notiflow.deliveries DROP CONSTRAINT known_nodes;
-- a CHECK over the whole row (its state keeps the row's descriptor: built per writer)
ALTER TABLE notiflow.deliveries ADD CONSTRAINT whole_row CHECK (length(deliveries::text) > 0);
SELECT lives_ok($$SELECT notiflow.trigger('rw', '{"order_id": "U5"}', '"ann"'),
                         notiflow.trigger('rw', '{"order_id": "U6"}', '"bob"'),
                         notiflow.trigger('rw', '{"order_id": "U7"}', '"ann"')$$,
                'a CHECK over the whole row, three writers');
ALTER TABLE notiflow.deliveries DROP CONSTRAINT whole_row;
ALTER TABLE notiflow.deliveries ADD COLUMN note text NOT NULL DEFAULT 'n';
SELECT notiflow.trigger('rw', '{"order_id": "A5"}', '"ann"') AS e5 \gset
SELECT is((SELECT note FROM notiflow.deliveries WHERE execution_id = :e5), 'n',
          'a column added later gets its default');
ALTER TABLE notiflow.deliveries ALTER COLUMN note DROP DEFAULT;
SELECT throws_ok($$SELECT notiflow.trigger('rw', '{"order_id": "A6"}', '"ann"')$$, '23502',
                 NULL, 'NOT NULL holds for a column the engine does not give');
ALTER TABLE notiflow.deliveries DROP COLUMN note;

-- a trigger on the table: the statement runs and the trigger fires ---------------
CREATE TEMP TABLE fired (execution_id bigint, node_id text);
CREATE FUNCTION pg_temp.log_execution() RETURNS trigger LANGUAGE plpgsql AS
$$BEGIN INSERT INTO fired SELECT NEW.id, s ->> 1 FROM jsonb_array_elements(NEW.steps) s; RETURN NEW; END$$;
CREATE TRIGGER log_execution BEFORE INSERT ON notiflow.executions
    FOR EACH ROW EXECUTE FUNCTION pg_temp.log_execution();
SELECT notiflow.trigger('rw', '{"order_id": "A7"}', '"ann"') AS e7 \gset
SELECT results_eq($$SELECT node_id FROM fired WHERE execution_id = $$ || :e7 || $$ ORDER BY node_id$$,
                  $$VALUES ('m'), ('t')$$, 'a BEFORE INSERT trigger on executions fires, and sees the steps');
SELECT results_eq(
    $$SELECT node_id, status FROM notiflow.execution_steps WHERE execution_id = $$ || :e7 || $$ ORDER BY seq$$,
    $$VALUES ('t', 'completed'), ('m', 'waiting')$$,
    'the statement writes the steps as the direct insert does');
DROP TRIGGER log_execution ON notiflow.executions;
-- a rule: not ignored; the statement refuses it (rules do not apply to WITH ... INSERT)
CREATE RULE log_delivery AS ON INSERT TO notiflow.deliveries
    DO ALSO INSERT INTO fired VALUES (NEW.execution_id, 'rule:' || NEW.node_id);
SELECT throws_ok($$SELECT notiflow.trigger('rw', '{"order_id": "A8"}', '"ann"')$$, '0A000',
                 NULL, 'an INSERT rule on deliveries is refused, not silently skipped');
DROP RULE log_delivery ON notiflow.deliveries;

-- one idempotency key twice in one batch: one execution -------------------------
SELECT results_eq(
    $$SELECT count(DISTINCT execution_id)::int, count(*)::int
        FROM notiflow.trigger_many('rw', '["ann", "bob", "ann"]', '{"order_id": "B1"}', 'batch-1')$$,
    $$VALUES (2, 3)$$,
    'trigger_many with a recipient twice and a key: two executions for three rows');
SELECT is((SELECT count(*)::int FROM notiflow.executions WHERE idempotency_key LIKE 'batch-1/%'), 2,
          'and two executions stored');

-- the subscriber read by index scan ------------------------------------------
-- what the load statement (src/subscriber_repo.c, load_stmt) builds for a subscriber
CREATE FUNCTION pg_temp.recipient_sql(sid text) RETURNS jsonb LANGUAGE sql AS $$
    SELECT jsonb_strip_nulls(jsonb_build_object(
               'subscriber_id', id, 'name', name, 'email', email, 'phone', phone,
               'locale', locale, 'timezone', timezone, 'data', data, 'push', push, 'chat', chat))
      FROM notiflow.subscribers WHERE id = sid
$$;
SELECT notiflow.put_subscriber('nul', '{"email": "nul@example.com", "locale": "de",
    "data": {"a": null, "b": {"c": null, "d": 1}, "e": [null, 1]}, "chat": {"slack": "U-1"}}');
SELECT notiflow.trigger('rw', '{"order_id": "C1"}', '"nul"') AS c1 \gset
SELECT is((SELECT recipient FROM notiflow.executions WHERE id = :c1),
          pg_temp.recipient_sql('nul'),
          'the recipient object is what the SQL expression builds, nested nulls stripped');
ALTER TABLE notiflow.subscribers DROP CONSTRAINT subscribers_push_check;  -- rolled back at the end
UPDATE notiflow.subscribers SET push = 'null', chat = '{"x": null, "y": [null]}' WHERE id = 'nul';
SELECT notiflow.trigger('rw', '{"order_id": "C1b"}', '"nul"') AS c1b \gset
SELECT is((SELECT recipient FROM notiflow.executions WHERE id = :c1b),
          pg_temp.recipient_sql('nul'),
          'a column holding a JSON null, and an object of nulls, as the SQL expression strips them');
SELECT is((SELECT recipient->'data' FROM notiflow.executions WHERE id = :c1),
          '{"b": {"d": 1}, "e": [null, 1]}'::jsonb, 'nulls in objects stripped, in arrays kept');
SELECT throws_ok($$SELECT notiflow.trigger('rw', '{"order_id": "C2"}', '"nobody"')$$, '22023',
                 'unknown subscriber "nobody"', 'an unknown subscriber is an error');
UPDATE notiflow.subscribers SET invalid_addresses = '{nul@example.com}' WHERE id = 'nul';
SELECT notiflow.trigger('rw', '{"order_id": "C3"}', '"nul"') AS c3 \gset
SELECT is((SELECT status FROM notiflow.execution_steps WHERE execution_id = :c3 AND node_id = 'm'),
          'skipped', 'the addresses a provider reported invalid are read too');

-- last: a read-only transaction cannot go back
SET LOCAL transaction_read_only = on;
SELECT throws_ok($$SELECT notiflow.trigger('rw', '{"order_id": "R1"}', '"ann"')$$, '25006',
                 NULL, 'a read-only transaction cannot trigger');

SELECT * FROM finish();
ROLLBACK;
