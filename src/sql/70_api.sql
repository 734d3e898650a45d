-- notiflow 0.1 — the REST API: schema notiflow_api, served by PostgREST 12
-- (api/postgrest.conf; docs/api.md).
--
-- PostgREST connects as notiflow_authenticator and, per request, switches to
-- the role of a valid JWT's role claim, else to notiflow_anon.  It then calls
-- notiflow_api.check_api_key(): a request carrying X-API-Key switches to that
-- key's role (notiflow_reader, notiflow_writer or notiflow_admin), and a
-- request whose role may not use the endpoint ends there: 401 without
-- credentials, 403 with them (and 405 for a write to a view or a GET of a
-- function that changes data).  Each role of the chain anon < reader < writer
-- < admin has the privileges of the one before; the grants at the end of this
-- file are the one list of who may do what.
--
-- notiflow_api holds only views and functions; notiflow's tables stay
-- private.  The views are security_invoker, so the caller's SELECT grants on
-- notiflow's tables apply (secrets are never granted: providers come from
-- providers_redacted).  Changes go through functions that keep the SQL
-- contract's names and turn the core's SQLSTATEs into HTTP statuses, keeping
-- the SQLSTATE as the error's code:
--   22xxx invalid input, 23502/23514 not null/check → 422; 42704 unknown → 404;
--   class 55 wrong state, 23505 duplicate → 409; class 54 too large → 413.
-- Parent and child rows without a foreign key between them (executions →
-- steps, deliveries → attempts, ...) are joined by computed relationships:
-- functions taking a row of the parent view, named as the embedded resource.
--
-- Roles are cluster-wide and outlive DROP EXTENSION, so they are created and
-- joined only when missing.

-- Roles --------------------------------------------------------------------------

DO $$
DECLARE
    r       text;
    grantee text;
    granted text;
BEGIN
    FOREACH r IN ARRAY ARRAY['notiflow_anon', 'notiflow_reader', 'notiflow_writer', 'notiflow_admin'] LOOP
        IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = r) THEN
            EXECUTE format('CREATE ROLE %I NOLOGIN', r);
        END IF;
    END LOOP;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'notiflow_authenticator') THEN
        CREATE ROLE notiflow_authenticator LOGIN NOINHERIT;
    END IF;
    FOR grantee, granted IN
        VALUES ('notiflow_reader', 'notiflow_anon'), ('notiflow_writer', 'notiflow_reader'),
               ('notiflow_admin', 'notiflow_writer'),
               ('notiflow_authenticator', 'notiflow_anon'), ('notiflow_authenticator', 'notiflow_reader'),
               ('notiflow_authenticator', 'notiflow_writer'), ('notiflow_authenticator', 'notiflow_admin')
    LOOP
        IF NOT EXISTS (SELECT FROM pg_catalog.pg_auth_members m
                        WHERE m.roleid = granted::regrole AND m.member = grantee::regrole) THEN
            EXECUTE format('GRANT %I TO %I', granted, grantee);
        END IF;
    END LOOP;
END;
$$;

-- API keys -----------------------------------------------------------------------

CREATE TABLE notiflow.api_keys (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name       text NOT NULL CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$'),
    role       text NOT NULL CHECK (role IN ('notiflow_reader', 'notiflow_writer', 'notiflow_admin')),
    key_hash   bytea NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);
CREATE UNIQUE INDEX api_keys_active_name ON notiflow.api_keys (name) WHERE revoked_at IS NULL;
COMMENT ON TABLE notiflow.api_keys IS
    'Keys of the REST API: the role a key acts as and the SHA-256 of the key (the key itself is never stored).';

-- Creates an API key acting as role (reader, writer or admin) and returns it; only its hash is kept.
CREATE FUNCTION notiflow.create_api_key(name text, role text) RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    full_role text := CASE WHEN role LIKE 'notiflow\_%' THEN role ELSE 'notiflow_' || role END;
    key       text := 'nf_' || replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', '');
BEGIN
    IF name IS NULL OR name !~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$' THEN
        RAISE EXCEPTION 'invalid API key name' USING ERRCODE = '22023',
            DETAIL = format('name: %s is not 1-64 letters, digits or _.:- starting with a letter or digit',
                            coalesce(quote_literal(name), 'NULL'));
    END IF;
    IF full_role IS NULL OR full_role NOT IN ('notiflow_reader', 'notiflow_writer', 'notiflow_admin') THEN
        RAISE EXCEPTION 'invalid API key role' USING ERRCODE = '22023',
            DETAIL = format('role: expected reader, writer or admin, got %s', coalesce(quote_literal(role), 'NULL'));
    END IF;
    IF EXISTS (SELECT FROM notiflow.api_keys k WHERE k.name = name AND k.revoked_at IS NULL) THEN
        RAISE EXCEPTION 'API key "%" already exists', name USING ERRCODE = '23505',
            DETAIL = 'name: an active key has this name',
            HINT = 'Revoke it first with notiflow.revoke_api_key(name), or choose another name.';
    END IF;
    INSERT INTO notiflow.api_keys (name, role, key_hash)
    VALUES (name, full_role, sha256(convert_to(key, 'UTF8')));
    RETURN key;
END;
$$;
COMMENT ON FUNCTION notiflow.create_api_key(text, text) IS
    'Creates a REST API key acting as notiflow_reader, notiflow_writer or notiflow_admin (role reader, writer or admin) '
    'and returns it: it is shown only this once, only its SHA-256 is stored.';

-- Revokes the active API key of that name.
CREATE FUNCTION notiflow.revoke_api_key(name text) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
BEGIN
    UPDATE notiflow.api_keys k SET revoked_at = now() WHERE k.name = name AND k.revoked_at IS NULL;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown API key "%"', name USING ERRCODE = '42704',
            DETAIL = 'name: no active key has this name';
    END IF;
END;
$$;
COMMENT ON FUNCTION notiflow.revoke_api_key(text) IS 'Revokes the active REST API key of that name; requests with it get 401 at once.';
REVOKE ALL ON FUNCTION notiflow.create_api_key(text, text), notiflow.revoke_api_key(text) FROM PUBLIC;

-- Returns the role of an active API key; NULL when no active key matches.
CREATE FUNCTION notiflow.api_key_role(key text) RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT k.role FROM notiflow.api_keys k
     WHERE k.key_hash = sha256(convert_to(key, 'UTF8')) AND k.revoked_at IS NULL
$$;
REVOKE ALL ON FUNCTION notiflow.api_key_role(text) FROM PUBLIC;

-- HTTP errors --------------------------------------------------------------------

-- Raises the error PostgREST answers with this HTTP status, headers and body {code, message, details, hint}.
CREATE FUNCTION notiflow.api_error(status integer, code text, message text, details text DEFAULT NULL,
                                   hint text DEFAULT NULL, headers jsonb DEFAULT '{}')
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE SQLSTATE 'PGRST'
        USING MESSAGE = json_build_object('code', code, 'message', message, 'details', details, 'hint', hint)::text,
              DETAIL = json_build_object('status', status, 'headers', coalesce(headers, '{}'))::text;
END;
$$;
COMMENT ON FUNCTION notiflow.api_error(integer, text, text, text, text, jsonb) IS
    'Raises an error that PostgREST answers with this HTTP status and headers and the body {code, message, details, hint}.';

-- Raises a core error again with the HTTP status its SQLSTATE means (see the top of this file).
CREATE FUNCTION notiflow.api_reraise(code text, message text, details text, hint text) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM notiflow.api_error(CASE WHEN code LIKE '22%' OR code IN ('23502', '23514') THEN 422
                                    WHEN code = '42704' THEN 404
                                    WHEN code LIKE '54%' THEN 413
                                    WHEN code LIKE '55%' OR code LIKE '23%' THEN 409
                                    ELSE 400 END,
                               code, message, nullif(details, ''), nullif(hint, ''));
END;
$$;
COMMENT ON FUNCTION notiflow.api_reraise(text, text, text, text) IS
    'Raises a caught core error again for PostgREST: class 22, not-null and check violations 422; 42704 404; class 54 413; class 55 and other class 23 409.';

-- Authorization ------------------------------------------------------------------

-- Ends a request whose role may not use its endpoint (401 anonymous, 403 otherwise), or that
-- writes to a view or GETs a function that changes data (405).
CREATE FUNCTION notiflow.api_authorize(method text, path text) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    api    oid := 'notiflow_api'::regnamespace;
    roles  text[] := ARRAY['notiflow_anon', 'notiflow_reader', 'notiflow_writer', 'notiflow_admin'];
    target text;
    oids   oid[];
    needs  text;
BEGIN
    IF path ~ '^/rpc/[^/]+$' THEN
        target := format('function %s', substr(path, 6));
        oids := ARRAY(SELECT p.oid FROM pg_proc p WHERE p.pronamespace = api AND p.proname = substr(path, 6));
    ELSIF path ~ '^/[^/]+$' THEN
        target := format('resource %s', substr(path, 2));
        oids := ARRAY(SELECT c.oid FROM pg_class c WHERE c.relnamespace = api AND c.relname = substr(path, 2));
    END IF;
    IF coalesce(cardinality(oids), 0) = 0 THEN
        RETURN;     -- the OpenAPI description (it follows privileges), or a name PostgREST answers 404 for
    END IF;
    -- the first role of the chain anon < reader < writer < admin that may use it
    SELECT x.r INTO needs
      FROM unnest(roles) WITH ORDINALITY AS x(r, n)
     WHERE EXISTS (SELECT FROM unnest(oids) o
                    WHERE CASE WHEN target LIKE 'function %' THEN has_function_privilege(x.r, o, 'EXECUTE')
                               ELSE has_table_privilege(x.r, o, 'SELECT') END)
     ORDER BY x.n LIMIT 1;
    IF needs IS NULL OR NOT pg_has_role(needs, 'USAGE') THEN
        IF current_user = 'notiflow_anon' THEN
            PERFORM notiflow.api_error(401, '28000', 'API key required',
                                       format('%s needs the role %s', target, coalesce(needs, 'of a superuser')),
                                       'Send a key from notiflow.create_api_key() in the X-API-Key header, or a bearer JWT.',
                                       '{"WWW-Authenticate": "Bearer"}');
        END IF;
        PERFORM notiflow.api_error(403, '42501', format('role %s may not use %s', current_user, target),
                                   format('%s needs the role %s', target, coalesce(needs, 'of a superuser')),
                                   'Use an API key or token of a role that may.');
    END IF;
    IF target LIKE 'resource %' AND method NOT IN ('GET', 'HEAD') THEN
        PERFORM notiflow.api_error(405, '25006', format('%s is read-only', target),
                                   format('method: %s is not allowed, only GET and HEAD', method),
                                   'Change things through the /rpc/ functions (put_workflow, put_subscriber, put_provider, ...).',
                                   '{"Allow": "GET, HEAD"}');
    ELSIF target LIKE 'function %' AND method IN ('GET', 'HEAD')
          AND NOT EXISTS (SELECT FROM pg_proc p WHERE p.oid = ANY (oids) AND p.provolatile <> 'v') THEN
        PERFORM notiflow.api_error(405, '25006', format('%s changes data', target),
                                   format('method: %s is not allowed, only POST', method),
                                   'Call it with POST and the arguments as a JSON object.',
                                   '{"Allow": "POST"}');
    END IF;
END;
$$;
COMMENT ON FUNCTION notiflow.api_authorize(text, text) IS
    'Checks that the current role may use the REST endpoint of a request (its method and path); raises 401, 403 or 405 otherwise.';

-- The API schema -----------------------------------------------------------------

CREATE SCHEMA notiflow_api;
COMMENT ON SCHEMA notiflow_api IS
$$notiflow REST API
Notification workflows inside PostgreSQL. Send an API key in the X-API-Key header (or a bearer JWT). Resources are read-only views with PostgREST's filters, ordering, pagination and embedding; changes go through /rpc/ functions. Errors are {code, message, details, hint}: 401 no or bad key, 403 role not allowed, 404 unknown, 409 conflict, 413 too large, 422 invalid input (every problem in details).$$;

-- Called by PostgREST before every request (db-pre-request): X-API-Key → role, then authorization.
-- It must not be SECURITY DEFINER nor have a SET clause, or the role it sets would not outlive it.
CREATE FUNCTION notiflow_api.check_api_key() RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    key  text := nullif(pg_catalog.current_setting('request.headers', true), '')::json ->> 'x-api-key';
    role text;
BEGIN
    -- the request's own statements run after this one: they get the API's timeout
    -- (an unloaded library's setting is not defined yet: then its default)
    PERFORM pg_catalog.set_config('statement_timeout',
                                  coalesce(pg_catalog.current_setting('notiflow.api_statement_timeout', true), '30s'), true);
    IF key IS NOT NULL THEN
        role := notiflow.api_key_role(key);
        IF role IS NULL THEN
            PERFORM notiflow.api_error(401, '28P01', 'invalid API key', 'X-API-Key: no active key matches',
                                       'Create a key with notiflow.create_api_key(name, role).',
                                       '{"WWW-Authenticate": "Bearer"}');
        END IF;
        PERFORM pg_catalog.set_config('role', role, true);
    END IF;
    PERFORM notiflow.api_authorize(pg_catalog.current_setting('request.method', true),
                                   pg_catalog.current_setting('request.path', true));
END;
$$;
COMMENT ON FUNCTION notiflow_api.check_api_key() IS
$$PostgREST's pre-request check (not meant to be called)
Verifies X-API-Key, switches to the key's role and refuses endpoints the role may not use.$$;

-- Views --------------------------------------------------------------------------

CREATE VIEW notiflow_api.workflows WITH (security_invoker = true) AS
SELECT w.key, w.name, w.active, w.current_version, v.definition, w.created_at, w.updated_at
  FROM notiflow.workflows w
  JOIN notiflow.workflow_versions v ON v.workflow_key = w.key AND v.version = w.current_version;
COMMENT ON VIEW notiflow_api.workflows IS
$$Workflows with their current definition
Embed versions(*) for every version. A workflow whose active is false refuses triggers (409).$$;

CREATE VIEW notiflow_api.workflow_versions WITH (security_invoker = true) AS
SELECT v.workflow_key, v.version, v.definition, v.created_at
  FROM notiflow.workflow_versions v;
COMMENT ON VIEW notiflow_api.workflow_versions IS
    'Immutable workflow versions; executions pin the version they started with.';

CREATE VIEW notiflow_api.executions WITH (security_invoker = true) AS
SELECT e.id, e.workflow_key, e.workflow_version, e.status, e.payload, e.recipient, e.subscriber_id,
       e.idempotency_key, e.error, e.context, e.wake_at, e.created_at, e.updated_at, e.finished_at
  FROM notiflow.executions e;
COMMENT ON VIEW notiflow_api.executions IS
$$Executions: one run of a workflow version for one recipient
Filter by workflow_key, status and created_at; embed steps(*), deliveries(*), timeline(*) and workflow(*).$$;

CREATE VIEW notiflow_api.execution_steps WITH (security_invoker = true) AS
SELECT s.execution_id, s.node_id, s.node_type, s.seq, s.status, s.outcome, s.output, s.error,
       s.started_at, s.finished_at
  FROM notiflow.execution_steps s;
COMMENT ON VIEW notiflow_api.execution_steps IS
$$The nodes executions ran
Status, the outcome that chose the next edges, output and timings. Embed execution(*).$$;

CREATE VIEW notiflow_api.deliveries WITH (security_invoker = true) AS
SELECT d.id, d.execution_id, d.node_id, d.channel, d.provider, d.recipient, d.content, d.status,
       d.attempts AS attempt_count,
       d.tried_providers, d.left_providers, d.next_attempt_at, d.provider_message_id, d.last_error, d.created_at, d.updated_at,
       d.sent_at, d.finished_at
  FROM notiflow.deliveries d;
COMMENT ON VIEW notiflow_api.deliveries IS
$$Messages to one address through one provider
Rendered content and delivery status; attempt_count counts the attempts, attempts(*) embeds them, as events(*) and execution(*) do. tried_providers: the providers this round left (a replay starts again); left_providers: every provider it fell back from. A test message (send_test) has execution_id 0 and node_id send_test.$$;

CREATE VIEW notiflow_api.delivery_attempts WITH (security_invoker = true) AS
SELECT a.id, a.delivery_id, a.attempt, a.provider, a.status_code, a.curl_code, a.latency_ms, a.error_class,
       a.error, a.response_excerpt, a.created_at
  FROM notiflow.delivery_attempts a;
COMMENT ON VIEW notiflow_api.delivery_attempts IS
$$Every attempt to hand a delivery to a provider
HTTP status or curl error, latency, error class and an excerpt of the response. Embed delivery(*).$$;

CREATE VIEW notiflow_api.delivery_events WITH (security_invoker = true) AS
SELECT ev.id, ev.delivery_id, ev.provider, ev.provider_event, ev.event, ev.status_applied, ev.reason, ev.raw,
       ev.occurred_at, ev.received_at
  FROM notiflow.delivery_events ev;
COMMENT ON VIEW notiflow_api.delivery_events IS
    'What providers reported about deliveries after accepting them (delivered, bounced, opened, ...).';

CREATE VIEW notiflow_api.execution_timeline WITH (security_invoker = true) AS
SELECT t.execution_id, t.seq, t.at, t.kind, t.node_id, t.type, t.status, t.outcome, t.detail, t.error
  FROM notiflow.execution_timeline t;
COMMENT ON VIEW notiflow_api.execution_timeline IS 'Steps and deliveries of executions in one list, for a timeline.';

CREATE VIEW notiflow_api.subscribers WITH (security_invoker = true) AS
SELECT s.id, s.name, s.email, s.phone, s.locale, s.timezone, s.data, s.push, s.chat, s.preferences,
       s.invalid_addresses, s.created_at, s.updated_at
  FROM notiflow.subscribers s;
COMMENT ON VIEW notiflow_api.subscribers IS
$$Recipients
Contact addresses per channel, free data and notification preferences; invalid_addresses are those providers reported invalid.$$;

CREATE VIEW notiflow_api.providers WITH (security_invoker = true) AS
SELECT p.name, p.channel, p.kind, p.config, p.priority, p.enabled, c.state AS circuit_state,
       c.consecutive_failures, c.opened_at AS circuit_opened_at, c.last_error, p.created_at, p.updated_at
  FROM notiflow.providers_redacted p
  JOIN notiflow.provider_circuit_state c ON c.provider = p.name;
COMMENT ON VIEW notiflow_api.providers IS
$$Configured providers, secrets shown as ********
A lower priority is tried first; circuit_state is closed, open or half_open.$$;

CREATE VIEW notiflow_api.provider_kinds WITH (security_invoker = true) AS
SELECT k.kind, k.channel, k.required_config, k.secret_config
  FROM notiflow.provider_kinds k;
COMMENT ON VIEW notiflow_api.provider_kinds IS
$$The provider adapters notiflow knows
Their channel, required config keys (alternatives: an array of key sets) and the keys that are secret.$$;

CREATE VIEW notiflow_api.dead_letters WITH (security_invoker = true) AS
SELECT l.id, l.source, CASE WHEN l.source = 'delivery' AND l.reference ~ '^[0-9]{1,18}$' THEN l.reference::bigint END AS delivery_id,
       l.reference, translate(encode(l.payload, 'base64'), E'\n', '') AS payload_base64, l.details, l.error, l.created_at, l.replayed_at
  FROM notiflow.dead_letters l;
COMMENT ON VIEW notiflow_api.dead_letters IS
$$What could not be delivered or processed, kept whole
payload_base64 is the request body (or raw message) in base64. Replay a delivery's with /rpc/replay_dead_letter.$$;

CREATE VIEW notiflow_api.api_keys WITH (security_invoker = true) AS
SELECT k.id, k.name, k.role, k.created_at, k.revoked_at
  FROM notiflow.api_keys k;
COMMENT ON VIEW notiflow_api.api_keys IS 'REST API keys: name, role and when they were created and revoked (admin).';

-- Computed relationships ---------------------------------------------------------
-- Plain SQL, no SET clause: PostgreSQL inlines them into PostgREST's query.

CREATE FUNCTION notiflow_api.versions(notiflow_api.workflows) RETURNS SETOF notiflow_api.workflow_versions
LANGUAGE sql STABLE AS $$
    SELECT * FROM notiflow_api.workflow_versions v WHERE v.workflow_key = $1.key ORDER BY v.version
$$;
COMMENT ON FUNCTION notiflow_api.versions(notiflow_api.workflows) IS 'Embeds the versions of a workflow: select=*,versions(*)';

CREATE FUNCTION notiflow_api.workflow(notiflow_api.executions) RETURNS SETOF notiflow_api.workflows ROWS 1
LANGUAGE sql STABLE AS $$
    SELECT * FROM notiflow_api.workflows w WHERE w.key = $1.workflow_key
$$;
COMMENT ON FUNCTION notiflow_api.workflow(notiflow_api.executions) IS 'Embeds the workflow of an execution: select=*,workflow(*)';

CREATE FUNCTION notiflow_api.steps(notiflow_api.executions) RETURNS SETOF notiflow_api.execution_steps
LANGUAGE sql STABLE AS $$
    SELECT * FROM notiflow_api.execution_steps s WHERE s.execution_id = $1.id ORDER BY s.seq
$$;
COMMENT ON FUNCTION notiflow_api.steps(notiflow_api.executions) IS 'Embeds the steps of an execution: select=*,steps(*)';

CREATE FUNCTION notiflow_api.deliveries(notiflow_api.executions) RETURNS SETOF notiflow_api.deliveries
LANGUAGE sql STABLE AS $$
    SELECT * FROM notiflow_api.deliveries d WHERE d.execution_id = $1.id ORDER BY d.id
$$;
COMMENT ON FUNCTION notiflow_api.deliveries(notiflow_api.executions) IS 'Embeds the deliveries of an execution: select=*,deliveries(*)';

CREATE FUNCTION notiflow_api.timeline(notiflow_api.executions) RETURNS SETOF notiflow_api.execution_timeline
LANGUAGE sql STABLE AS $$
    SELECT * FROM notiflow_api.execution_timeline t WHERE t.execution_id = $1.id ORDER BY t.at, t.seq
$$;
COMMENT ON FUNCTION notiflow_api.timeline(notiflow_api.executions) IS 'Embeds the timeline of an execution: select=*,timeline(*)';

CREATE FUNCTION notiflow_api.execution(notiflow_api.execution_steps) RETURNS SETOF notiflow_api.executions ROWS 1
LANGUAGE sql STABLE AS $$
    SELECT * FROM notiflow_api.executions e WHERE e.id = $1.execution_id
$$;
COMMENT ON FUNCTION notiflow_api.execution(notiflow_api.execution_steps) IS 'Embeds the execution of a step: select=*,execution(*)';

CREATE FUNCTION notiflow_api.execution(notiflow_api.deliveries) RETURNS SETOF notiflow_api.executions ROWS 1
LANGUAGE sql STABLE AS $$
    SELECT * FROM notiflow_api.executions e WHERE e.id = $1.execution_id
$$;
COMMENT ON FUNCTION notiflow_api.execution(notiflow_api.deliveries) IS 'Embeds the execution of a delivery: select=*,execution(*)';

CREATE FUNCTION notiflow_api.attempts(notiflow_api.deliveries) RETURNS SETOF notiflow_api.delivery_attempts
LANGUAGE sql STABLE AS $$
    SELECT * FROM notiflow_api.delivery_attempts a WHERE a.delivery_id = $1.id ORDER BY a.id
$$;
COMMENT ON FUNCTION notiflow_api.attempts(notiflow_api.deliveries) IS 'Embeds the attempts of a delivery: select=*,attempts(*)';

CREATE FUNCTION notiflow_api.events(notiflow_api.deliveries) RETURNS SETOF notiflow_api.delivery_events
LANGUAGE sql STABLE AS $$
    SELECT * FROM notiflow_api.delivery_events ev WHERE ev.delivery_id = $1.id ORDER BY ev.id
$$;
COMMENT ON FUNCTION notiflow_api.events(notiflow_api.deliveries) IS 'Embeds the provider status events of a delivery: select=*,events(*)';

CREATE FUNCTION notiflow_api.delivery(notiflow_api.delivery_attempts) RETURNS SETOF notiflow_api.deliveries ROWS 1
LANGUAGE sql STABLE AS $$
    SELECT * FROM notiflow_api.deliveries d WHERE d.id = $1.delivery_id
$$;
COMMENT ON FUNCTION notiflow_api.delivery(notiflow_api.delivery_attempts) IS 'Embeds the delivery of an attempt: select=*,delivery(*)';

-- Test messages ------------------------------------------------------------------

-- Queues a one-off delivery through one provider, without a workflow; returns the delivery id.
CREATE FUNCTION notiflow.send_test(provider text, recipient text DEFAULT NULL, content jsonb DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    p     notiflow.providers;
    words text := format('This is a test message from notiflow through provider %s.', provider);
    id    bigint;
BEGIN
    IF provider IS NULL THEN
        RAISE EXCEPTION 'provider must not be NULL' USING ERRCODE = '22023', DETAIL = 'provider: required';
    END IF;
    SELECT * INTO p FROM notiflow.providers x WHERE x.name = provider;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown provider "%"', provider USING ERRCODE = '42704',
            DETAIL = 'provider: no provider has this name';
    END IF;
    IF NOT p.enabled THEN
        RAISE EXCEPTION 'provider "%" is disabled', provider USING ERRCODE = '55000',
            HINT = 'Enable it with notiflow.put_provider(..., enabled => true) first.';
    END IF;
    IF coalesce(recipient, '') = '' AND p.channel IN ('email', 'sms', 'push') THEN
        RAISE EXCEPTION 'test messages through % providers need a recipient', p.channel USING ERRCODE = '22023',
            DETAIL = format('recipient: the %s to send the test message to',
                            CASE p.channel WHEN 'email' THEN 'email address' WHEN 'sms' THEN 'phone number'
                                           ELSE 'device token' END);
    END IF;
    -- one address, as a workflow's: a list would reach everyone in it
    IF p.channel = 'email' AND coalesce(recipient, '') <> '' AND NOT notiflow.email_address_valid(recipient) THEN
        RAISE EXCEPTION 'invalid test message recipient' USING ERRCODE = '22023',
            DETAIL = format('recipient: "%s" is not one email address', recipient);
    ELSIF p.channel = 'sms' AND coalesce(recipient, '') <> '' AND recipient !~ '^[+][1-9][0-9]{6,14}$' THEN
        RAISE EXCEPTION 'invalid test message recipient' USING ERRCODE = '22023',
            DETAIL = format('recipient: "%s" is not an E.164 number like +15551234567', recipient);
    END IF;
    content := coalesce(content, CASE p.channel
        WHEN 'email' THEN jsonb_build_object('subject', 'notiflow test message', 'text', words)
        WHEN 'push' THEN jsonb_build_object('title', 'notiflow test message', 'body', words)
        WHEN 'webhook' THEN jsonb_build_object('body', jsonb_build_object('test', true, 'provider', provider))
        ELSE jsonb_build_object('text', words) END);
    IF jsonb_typeof(content) <> 'object' THEN
        RAISE EXCEPTION 'test message content must be a JSON object' USING ERRCODE = '22023',
            DETAIL = 'content: expected an object such as {"subject": "...", "text": "..."}';
    END IF;
    -- every other provider of the channel counts as tried: the message never falls back
    INSERT INTO notiflow.deliveries (execution_id, node_id, channel, provider, recipient, content, tried_providers)
    VALUES (0, 'send_test', p.channel, p.name, nullif(recipient, ''), content,
            ARRAY(SELECT o.name FROM notiflow.providers o WHERE o.channel = p.channel AND o.name <> p.name ORDER BY o.name))
    RETURNING deliveries.id INTO id;
    PERFORM notiflow.wake_dispatchers();
    RETURN id;
END;
$$;
COMMENT ON FUNCTION notiflow.send_test(text, text, jsonb) IS
    'Queues a test message through one provider (no fallback to others) to recipient, with content or a default text; '
    'returns the delivery id.  The delivery has execution_id 0 and node_id send_test.';
REVOKE ALL ON FUNCTION notiflow.send_test(text, text, jsonb) FROM PUBLIC;

-- Functions ----------------------------------------------------------------------
-- Those that change things call the core as the extension's owner (SECURITY
-- DEFINER: the API roles hold no write privilege on notiflow's tables); every
-- one maps the core's errors with notiflow.api_reraise().

CREATE FUNCTION notiflow_api.put_workflow(key text, definition jsonb) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    e_code text; e_message text; e_detail text; e_hint text;
BEGIN
    RETURN notiflow.put_workflow(key, definition);
EXCEPTION WHEN data_exception OR integrity_constraint_violation OR undefined_object OR object_not_in_prerequisite_state
          OR program_limit_exceeded THEN
    GET STACKED DIAGNOSTICS e_code = RETURNED_SQLSTATE, e_message = MESSAGE_TEXT, e_detail = PG_EXCEPTION_DETAIL, e_hint = PG_EXCEPTION_HINT;
    PERFORM notiflow.api_reraise(e_code, e_message, e_detail, e_hint);
END;
$$;
COMMENT ON FUNCTION notiflow_api.put_workflow(text, jsonb) IS
$$Stores a workflow definition as its new current version
Returns the version number (an unchanged definition returns the current one). An invalid definition is 422 with every problem in details, one "path: message" per line.$$;

CREATE FUNCTION notiflow_api.validate_workflow(definition jsonb) RETURNS TABLE (path text, message text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    e_code text; e_message text; e_detail text; e_hint text;
BEGIN
    RETURN QUERY SELECT * FROM notiflow.validate_workflow(definition);
EXCEPTION WHEN data_exception OR integrity_constraint_violation OR undefined_object OR object_not_in_prerequisite_state
          OR program_limit_exceeded THEN
    GET STACKED DIAGNOSTICS e_code = RETURNED_SQLSTATE, e_message = MESSAGE_TEXT, e_detail = PG_EXCEPTION_DETAIL, e_hint = PG_EXCEPTION_HINT;
    PERFORM notiflow.api_reraise(e_code, e_message, e_detail, e_hint);
END;
$$;
COMMENT ON FUNCTION notiflow_api.validate_workflow(jsonb) IS
$$Lists every problem of a workflow definition
One {path, message} per problem; an empty list when it is valid. Nothing is stored.$$;

CREATE FUNCTION notiflow_api.get_workflow(key text) RETURNS SETOF notiflow_api.workflows ROWS 1
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
BEGIN
    RETURN QUERY SELECT * FROM notiflow_api.workflows w WHERE w.key = key;
    IF NOT FOUND THEN
        PERFORM notiflow.api_error(404, '42704', format('unknown workflow "%s"', key), 'key: no workflow has this key');
    END IF;
END;
$$;
COMMENT ON FUNCTION notiflow_api.get_workflow(text) IS
$$One workflow, 404 when there is none
GET /rpc/get_workflow?key=...&select=*,versions(*) with Accept: application/vnd.pgrst.object+json.$$;

CREATE FUNCTION notiflow_api.activate_workflow(key text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    e_code text; e_message text; e_detail text; e_hint text;
BEGIN
    PERFORM notiflow.activate_workflow(key);
EXCEPTION WHEN data_exception OR integrity_constraint_violation OR undefined_object OR object_not_in_prerequisite_state
          OR program_limit_exceeded THEN
    GET STACKED DIAGNOSTICS e_code = RETURNED_SQLSTATE, e_message = MESSAGE_TEXT, e_detail = PG_EXCEPTION_DETAIL, e_hint = PG_EXCEPTION_HINT;
    PERFORM notiflow.api_reraise(e_code, e_message, e_detail, e_hint);
END;
$$;
COMMENT ON FUNCTION notiflow_api.activate_workflow(text) IS 'Lets a workflow accept triggers again';

CREATE FUNCTION notiflow_api.deactivate_workflow(key text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    e_code text; e_message text; e_detail text; e_hint text;
BEGIN
    PERFORM notiflow.deactivate_workflow(key);
EXCEPTION WHEN data_exception OR integrity_constraint_violation OR undefined_object OR object_not_in_prerequisite_state
          OR program_limit_exceeded THEN
    GET STACKED DIAGNOSTICS e_code = RETURNED_SQLSTATE, e_message = MESSAGE_TEXT, e_detail = PG_EXCEPTION_DETAIL, e_hint = PG_EXCEPTION_HINT;
    PERFORM notiflow.api_reraise(e_code, e_message, e_detail, e_hint);
END;
$$;
COMMENT ON FUNCTION notiflow_api.deactivate_workflow(text) IS
$$Stops a workflow accepting triggers
Triggers of an inactive workflow are 409; running executions go on.$$;

CREATE FUNCTION notiflow_api.trigger(workflow_key text, payload jsonb DEFAULT '{}', recipient jsonb DEFAULT NULL,
                                     idempotency_key text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    e_code text; e_message text; e_detail text; e_hint text;
BEGIN
    RETURN notiflow.trigger(workflow_key, payload, recipient, idempotency_key);
EXCEPTION WHEN data_exception OR integrity_constraint_violation OR undefined_object OR object_not_in_prerequisite_state
          OR program_limit_exceeded THEN
    GET STACKED DIAGNOSTICS e_code = RETURNED_SQLSTATE, e_message = MESSAGE_TEXT, e_detail = PG_EXCEPTION_DETAIL, e_hint = PG_EXCEPTION_HINT;
    PERFORM notiflow.api_reraise(e_code, e_message, e_detail, e_hint);
END;
$$;
COMMENT ON FUNCTION notiflow_api.trigger(text, jsonb, jsonb, text) IS
$$Starts an execution of a workflow; returns its id
recipient is a subscriber id, {"subscriber_id": ...}, an inline contact, or both. The same idempotency_key returns the first execution's id. 404 unknown workflow, 409 inactive workflow, 413 payload too large, 422 invalid payload or recipient.$$;

CREATE FUNCTION notiflow_api.trigger_many(workflow_key text, recipients jsonb, payload jsonb DEFAULT '{}',
                                          idempotency_key text DEFAULT NULL)
RETURNS TABLE (recipient jsonb, execution_id bigint)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    e_code text; e_message text; e_detail text; e_hint text;
BEGIN
    -- PostgREST answers at most db-max-rows (1000) rows: more recipients would start executions
    -- whose ids the caller never sees
    IF jsonb_typeof(recipients) = 'array' AND jsonb_array_length(recipients) > 1000 THEN
        PERFORM notiflow.api_error(413, '54000', 'too many recipients for one call',
                                   format('recipients: at most 1000 in one call, got %s', jsonb_array_length(recipients)),
                                   'Split them into calls of at most 1000 (with an idempotency key, each call its own).');
    END IF;
    RETURN QUERY SELECT * FROM notiflow.trigger_many(workflow_key, recipients, payload, idempotency_key);
EXCEPTION WHEN data_exception OR integrity_constraint_violation OR undefined_object OR object_not_in_prerequisite_state
          OR program_limit_exceeded THEN
    GET STACKED DIAGNOSTICS e_code = RETURNED_SQLSTATE, e_message = MESSAGE_TEXT, e_detail = PG_EXCEPTION_DETAIL, e_hint = PG_EXCEPTION_HINT;
    PERFORM notiflow.api_reraise(e_code, e_message, e_detail, e_hint);
END;
$$;
COMMENT ON FUNCTION notiflow_api.trigger_many(text, jsonb, jsonb, text) IS
$$Starts one execution per recipient of an array, all or none
Returns {recipient, execution_id} per recipient; idempotency keys are derived per recipient (<key>/<subscriber_id>, <key>/#<position>). At most 1000 recipients per call (413).$$;

CREATE FUNCTION notiflow_api.cancel_execution(execution_id bigint) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    e_code text; e_message text; e_detail text; e_hint text;
BEGIN
    RETURN notiflow.cancel_execution(execution_id);
EXCEPTION WHEN data_exception OR integrity_constraint_violation OR undefined_object OR object_not_in_prerequisite_state
          OR program_limit_exceeded THEN
    GET STACKED DIAGNOSTICS e_code = RETURNED_SQLSTATE, e_message = MESSAGE_TEXT, e_detail = PG_EXCEPTION_DETAIL, e_hint = PG_EXCEPTION_HINT;
    PERFORM notiflow.api_reraise(e_code, e_message, e_detail, e_hint);
END;
$$;
COMMENT ON FUNCTION notiflow_api.cancel_execution(bigint) IS
$$Cancels a running or waiting execution and its queued deliveries
Returns false when the execution is not running or waiting.$$;

CREATE FUNCTION notiflow_api.put_subscriber(id text, attributes jsonb) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    e_code text; e_message text; e_detail text; e_hint text;
BEGIN
    PERFORM notiflow.put_subscriber(id, attributes);
EXCEPTION WHEN data_exception OR integrity_constraint_violation OR undefined_object OR object_not_in_prerequisite_state
          OR program_limit_exceeded THEN
    GET STACKED DIAGNOSTICS e_code = RETURNED_SQLSTATE, e_message = MESSAGE_TEXT, e_detail = PG_EXCEPTION_DETAIL, e_hint = PG_EXCEPTION_HINT;
    PERFORM notiflow.api_reraise(e_code, e_message, e_detail, e_hint);
END;
$$;
COMMENT ON FUNCTION notiflow_api.put_subscriber(text, jsonb) IS
$$Creates or updates a subscriber
Attributes not given keep their value; preferences are the attribute preferences: {"channels": {...}, "workflows": {...}}. An invalid attribute is 422 naming it in details.$$;

CREATE FUNCTION notiflow_api.replay_dead_letter(id bigint) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    e_code text; e_message text; e_detail text; e_hint text;
BEGIN
    RETURN notiflow.replay_dead_letter(id);
EXCEPTION WHEN data_exception OR integrity_constraint_violation OR undefined_object OR object_not_in_prerequisite_state
          OR program_limit_exceeded THEN
    GET STACKED DIAGNOSTICS e_code = RETURNED_SQLSTATE, e_message = MESSAGE_TEXT, e_detail = PG_EXCEPTION_DETAIL, e_hint = PG_EXCEPTION_HINT;
    PERFORM notiflow.api_reraise(e_code, e_message, e_detail, e_hint);
END;
$$;
COMMENT ON FUNCTION notiflow_api.replay_dead_letter(bigint) IS
$$Queues a dead-lettered delivery again
From its channel's first enabled provider; returns the delivery id. 404 unknown dead letter, 409 when it cannot be replayed.$$;

CREATE FUNCTION notiflow_api.record_delivery_event(provider text, event jsonb) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    e_code text; e_message text; e_detail text; e_hint text;
BEGIN
    RETURN notiflow.record_delivery_event(provider, event);
EXCEPTION WHEN data_exception OR integrity_constraint_violation OR undefined_object OR object_not_in_prerequisite_state
          OR program_limit_exceeded THEN
    GET STACKED DIAGNOSTICS e_code = RETURNED_SQLSTATE, e_message = MESSAGE_TEXT, e_detail = PG_EXCEPTION_DETAIL, e_hint = PG_EXCEPTION_HINT;
    PERFORM notiflow.api_reraise(e_code, e_message, e_detail, e_hint);
END;
$$;
COMMENT ON FUNCTION notiflow_api.record_delivery_event(text, jsonb) IS
$$Records a provider's status callback
event is the callback body of SendGrid, Twilio, Mailgun or SES; returns how many events matched deliveries.$$;

CREATE FUNCTION notiflow_api.render_template(template text, context jsonb, partials jsonb DEFAULT NULL) RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    e_code text; e_message text; e_detail text; e_hint text;
BEGIN
    RETURN notiflow.render_template(template, context, partials);
EXCEPTION WHEN data_exception OR integrity_constraint_violation OR undefined_object OR object_not_in_prerequisite_state
          OR program_limit_exceeded THEN
    GET STACKED DIAGNOSTICS e_code = RETURNED_SQLSTATE, e_message = MESSAGE_TEXT, e_detail = PG_EXCEPTION_DETAIL, e_hint = PG_EXCEPTION_HINT;
    PERFORM notiflow.api_reraise(e_code, e_message, e_detail, e_hint);
END;
$$;
COMMENT ON FUNCTION notiflow_api.render_template(text, jsonb, jsonb) IS
$$Renders a Mustache template against a context
As workflows render theirs; partials is {"name": "template"}.$$;

-- A secret shown as ******** (as the providers view shows it) keeps its stored value,
-- so a provider read from the API can be changed and put back.
CREATE FUNCTION notiflow_api.put_provider(name text, channel text, kind text, config jsonb,
                                          priority integer DEFAULT 0, enabled boolean DEFAULT true)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    stored jsonb;
    kept text[];
    moved text;
    e_code text; e_message text; e_detail text; e_hint text;
BEGIN
    SELECT p.config INTO stored FROM notiflow.providers p WHERE p.name = name AND p.kind = kind;
    IF stored IS NOT NULL AND jsonb_typeof(config) = 'object' THEN
        -- a kept secret goes only where it went: else an admin could send it to a server of theirs
        kept := ARRAY(SELECT e.key FROM jsonb_each(config) e, notiflow.provider_kinds k
                       WHERE k.kind = kind AND e.key = ANY (k.secret_config)
                         AND e.value = to_jsonb('********'::text) AND stored ? e.key ORDER BY e.key);
        SELECT d INTO moved
          FROM unnest(ARRAY['base_url', 'url', 'webhook_url', 'region', 'domain', 'token_uri', 'ca_file', 'starttls']) d
         WHERE cardinality(kept) > 0 AND NOT d = ANY (kept)  -- a destination kept as ******** stays
           AND (config -> d) IS DISTINCT FROM (stored -> d)
         ORDER BY d LIMIT 1;
        IF moved IS NOT NULL THEN
            RAISE EXCEPTION 'a secret kept as ******** cannot go to a new destination'
                USING ERRCODE = '22023',
                      DETAIL = format('config.%s: changed while %s %s sent as ********', moved,
                                      array_to_string(kept, ', '), CASE WHEN cardinality(kept) = 1 THEN 'is' ELSE 'are' END),
                      HINT = 'Send the secret itself with the new destination.';
        END IF;
        SELECT coalesce(jsonb_object_agg(e.key, CASE WHEN e.value = to_jsonb('********'::text) AND stored ? e.key
                                                          AND e.key = ANY (k.secret_config)
                                                     THEN stored -> e.key ELSE e.value END), '{}')
          INTO config
          FROM jsonb_each(config) e, notiflow.provider_kinds k
         WHERE k.kind = kind;
    END IF;
    PERFORM notiflow.put_provider(name, channel, kind, config, priority, enabled);
EXCEPTION WHEN data_exception OR integrity_constraint_violation OR undefined_object OR object_not_in_prerequisite_state
          OR program_limit_exceeded THEN
    GET STACKED DIAGNOSTICS e_code = RETURNED_SQLSTATE, e_message = MESSAGE_TEXT, e_detail = PG_EXCEPTION_DETAIL, e_hint = PG_EXCEPTION_HINT;
    PERFORM notiflow.api_reraise(e_code, e_message, e_detail, e_hint);
END;
$$;
COMMENT ON FUNCTION notiflow_api.put_provider(text, text, text, jsonb, integer, boolean) IS
$$Creates or replaces a provider (admin)
The config is checked against the kind (422 naming the missing or invalid key). A secret sent as ******** keeps its stored value, unless the destination (base_url, url, webhook_url, region, domain, token_uri, ca_file, starttls) changes with it (422).$$;

CREATE FUNCTION notiflow_api.send_test(provider text, recipient text DEFAULT NULL, content jsonb DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    e_code text; e_message text; e_detail text; e_hint text;
BEGIN
    RETURN notiflow.send_test(provider, recipient, content);
EXCEPTION WHEN data_exception OR integrity_constraint_violation OR undefined_object OR object_not_in_prerequisite_state
          OR program_limit_exceeded THEN
    GET STACKED DIAGNOSTICS e_code = RETURNED_SQLSTATE, e_message = MESSAGE_TEXT, e_detail = PG_EXCEPTION_DETAIL, e_hint = PG_EXCEPTION_HINT;
    PERFORM notiflow.api_reraise(e_code, e_message, e_detail, e_hint);
END;
$$;
COMMENT ON FUNCTION notiflow_api.send_test(text, text, jsonb) IS
$$Sends a test message through one provider (admin)
Returns the delivery id: follow it at /deliveries?id=eq.<id>&select=*,attempts(*). No fallback to other providers.$$;

CREATE FUNCTION notiflow_api.create_api_key(name text, role text) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    e_code text; e_message text; e_detail text; e_hint text;
BEGIN
    RETURN notiflow.create_api_key(name, role);
EXCEPTION WHEN data_exception OR integrity_constraint_violation OR undefined_object OR object_not_in_prerequisite_state
          OR program_limit_exceeded THEN
    GET STACKED DIAGNOSTICS e_code = RETURNED_SQLSTATE, e_message = MESSAGE_TEXT, e_detail = PG_EXCEPTION_DETAIL, e_hint = PG_EXCEPTION_HINT;
    PERFORM notiflow.api_reraise(e_code, e_message, e_detail, e_hint);
END;
$$;
COMMENT ON FUNCTION notiflow_api.create_api_key(text, text) IS
$$Creates an API key and returns it, once (admin)
role is reader, writer or admin. 409 when an active key has the name.$$;

CREATE FUNCTION notiflow_api.revoke_api_key(name text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    e_code text; e_message text; e_detail text; e_hint text;
BEGIN
    PERFORM notiflow.revoke_api_key(name);
EXCEPTION WHEN data_exception OR integrity_constraint_violation OR undefined_object OR object_not_in_prerequisite_state
          OR program_limit_exceeded THEN
    GET STACKED DIAGNOSTICS e_code = RETURNED_SQLSTATE, e_message = MESSAGE_TEXT, e_detail = PG_EXCEPTION_DETAIL, e_hint = PG_EXCEPTION_HINT;
    PERFORM notiflow.api_reraise(e_code, e_message, e_detail, e_hint);
END;
$$;
COMMENT ON FUNCTION notiflow_api.revoke_api_key(text) IS 'Revokes an API key (admin); 404 when no active key has the name';

-- Grants -------------------------------------------------------------------------
-- Who may do what: notiflow_anon nothing but the pre-request check; notiflow_reader
-- reads everything but API keys; notiflow_writer changes workflows and subscribers,
-- triggers and replays; notiflow_admin configures providers and API keys.

GRANT USAGE ON SCHEMA notiflow, notiflow_api TO notiflow_anon;
GRANT EXECUTE ON FUNCTION notiflow.api_key_role(text) TO notiflow_anon;

GRANT SELECT ON notiflow.workflows, notiflow.workflow_versions, notiflow.executions, notiflow.execution_steps,
                notiflow.deliveries, notiflow.delivery_attempts, notiflow.delivery_events, notiflow.execution_timeline,
                notiflow.subscribers, notiflow.providers_redacted, notiflow.provider_circuit_state,
                notiflow.provider_kinds, notiflow.dead_letters
             TO notiflow_reader;
GRANT SELECT (id, name, role, created_at, revoked_at) ON notiflow.api_keys TO notiflow_admin;

GRANT SELECT ON notiflow_api.workflows, notiflow_api.workflow_versions, notiflow_api.executions,
                notiflow_api.execution_steps, notiflow_api.deliveries, notiflow_api.delivery_attempts,
                notiflow_api.delivery_events, notiflow_api.execution_timeline, notiflow_api.subscribers,
                notiflow_api.providers, notiflow_api.provider_kinds, notiflow_api.dead_letters
             TO notiflow_reader;
GRANT SELECT ON notiflow_api.api_keys TO notiflow_admin;

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA notiflow_api FROM PUBLIC;
GRANT EXECUTE ON FUNCTION notiflow_api.check_api_key() TO notiflow_anon;
GRANT EXECUTE ON FUNCTION
    notiflow_api.versions(notiflow_api.workflows), notiflow_api.workflow(notiflow_api.executions),
    notiflow_api.steps(notiflow_api.executions), notiflow_api.deliveries(notiflow_api.executions),
    notiflow_api.timeline(notiflow_api.executions), notiflow_api.execution(notiflow_api.execution_steps),
    notiflow_api.execution(notiflow_api.deliveries), notiflow_api.attempts(notiflow_api.deliveries),
    notiflow_api.events(notiflow_api.deliveries), notiflow_api.delivery(notiflow_api.delivery_attempts),
    notiflow_api.validate_workflow(jsonb), notiflow_api.get_workflow(text),
    notiflow_api.render_template(text, jsonb, jsonb)
    TO notiflow_reader;
GRANT EXECUTE ON FUNCTION
    notiflow_api.put_workflow(text, jsonb), notiflow_api.activate_workflow(text),
    notiflow_api.deactivate_workflow(text), notiflow_api.trigger(text, jsonb, jsonb, text),
    notiflow_api.trigger_many(text, jsonb, jsonb, text), notiflow_api.cancel_execution(bigint),
    notiflow_api.put_subscriber(text, jsonb), notiflow_api.replay_dead_letter(bigint),
    notiflow_api.record_delivery_event(text, jsonb)
    TO notiflow_writer;
GRANT EXECUTE ON FUNCTION
    notiflow_api.put_provider(text, text, text, jsonb, integer, boolean),
    notiflow_api.send_test(text, text, jsonb), notiflow_api.create_api_key(text, text),
    notiflow_api.revoke_api_key(text)
    TO notiflow_admin;
