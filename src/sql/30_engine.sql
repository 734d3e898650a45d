-- notiflow 0.1 — the SQL contract of the workflow engine (C functions) and small helpers.

-- Workflow versions are immutable: a change is a new version.
CREATE FUNCTION notiflow.forbid_version_update() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'workflow versions are immutable'
        USING ERRCODE = '55000',
              DETAIL = format('workflow %s version %s', OLD.workflow_key, OLD.version),
              HINT = 'Store a new version with notiflow.put_workflow().';
END;
$$;
CREATE TRIGGER workflow_versions_immutable BEFORE UPDATE ON notiflow.workflow_versions
    FOR EACH ROW EXECUTE FUNCTION notiflow.forbid_version_update();

CREATE FUNCTION notiflow.put_workflow(key text, definition jsonb) RETURNS integer
    AS 'MODULE_PATHNAME', 'put_workflow' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION notiflow.put_workflow(text, jsonb) IS
    'Validates a workflow definition and stores it as the new current version; returns the version number.';

CREATE FUNCTION notiflow.validate_workflow(definition jsonb)
    RETURNS TABLE (path text, message text)
    AS 'MODULE_PATHNAME', 'validate_workflow' LANGUAGE C STABLE;
COMMENT ON FUNCTION notiflow.validate_workflow(jsonb) IS
    'Lists every problem of a workflow definition (no rows when it is valid).';

CREATE FUNCTION notiflow.trigger(workflow_key text, payload jsonb DEFAULT '{}',
                                 recipient jsonb DEFAULT NULL, idempotency_key text DEFAULT NULL)
    RETURNS bigint
    AS 'MODULE_PATHNAME', 'trigger' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION notiflow.trigger(text, jsonb, jsonb, text) IS
    'Starts an execution of a workflow in the caller''s transaction; returns the execution id.';

CREATE FUNCTION notiflow.trigger_many(workflow_key text, recipients jsonb, payload jsonb DEFAULT '{}',
                                      idempotency_key text DEFAULT NULL)
    RETURNS TABLE (recipient jsonb, execution_id bigint)
    AS 'MODULE_PATHNAME', 'trigger_many' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION notiflow.trigger_many(text, jsonb, jsonb, text) IS
    'Fans one payload out to an array of recipients in one set-based call; one execution each.';

CREATE FUNCTION notiflow.resume_execution(execution_id bigint) RETURNS text
    AS 'MODULE_PATHNAME', 'resume_execution' LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION notiflow.resume_execution(bigint) IS
    'Completes the waiting steps of an execution that are done and runs on; returns its status.';

CREATE FUNCTION notiflow.resume_due_executions(max_executions integer DEFAULT 100) RETURNS integer
    AS 'MODULE_PATHNAME', 'resume_due_executions' LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION notiflow.resume_due_executions(integer) IS
    'Resumes waiting executions whose delay is over; returns how many.';

CREATE FUNCTION notiflow.finish_delivery(delivery_id bigint, status text,
                                         provider_message_id text DEFAULT NULL, error text DEFAULT NULL)
    RETURNS boolean
    AS 'MODULE_PATHNAME', 'finish_delivery' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION notiflow.finish_delivery(bigint, text, text, text) IS
    'Records a delivery status (sending, sent, delivered, failed, cancelled) and resumes the execution when its action node is done.';

CREATE FUNCTION notiflow.activate_workflow(key text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    UPDATE notiflow.workflows w SET active = true, updated_at = now() WHERE w.key = activate_workflow.key;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown workflow "%"', key USING ERRCODE = '42704', DETAIL = 'key: no workflow has this key';
    END IF;
END;
$$;

CREATE FUNCTION notiflow.deactivate_workflow(key text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    UPDATE notiflow.workflows w SET active = false, updated_at = now() WHERE w.key = deactivate_workflow.key;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown workflow "%"', key USING ERRCODE = '42704', DETAIL = 'key: no workflow has this key';
    END IF;
END;
$$;

-- Cancels a running or waiting execution and its deliveries not yet sent.
CREATE FUNCTION notiflow.cancel_execution(execution_id bigint) RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- its queued deliveries first, then the execution: the order finish_delivery and the
    -- dispatcher lock them in (the other way round, the two could deadlock)
    PERFORM 1 FROM notiflow.deliveries d
      WHERE d.execution_id = cancel_execution.execution_id AND d.status = 'queued'
      ORDER BY d.id FOR UPDATE;
    UPDATE notiflow.executions e
       SET status = 'cancelled', finished_at = now(), updated_at = now(), wake_at = NULL
     WHERE e.id = cancel_execution.execution_id AND e.status IN ('running', 'waiting');
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    UPDATE notiflow.deliveries d
       SET status = 'cancelled', finished_at = now(), updated_at = now()
     WHERE d.execution_id = cancel_execution.execution_id AND d.status = 'queued';
    RETURN true;
END;
$$;

-- The timeline of one execution: its steps and deliveries in order.
CREATE VIEW notiflow.execution_timeline AS
SELECT s.execution_id, s.seq, s.started_at AS at, 'step' AS kind, s.node_id, s.node_type AS type,
       s.status, s.outcome, s.output AS detail, s.error
  FROM notiflow.execution_steps s
UNION ALL
SELECT d.execution_id, NULL, d.created_at, 'delivery', d.node_id, d.channel,
       d.status, d.provider, jsonb_build_object('id', d.id, 'recipient', d.recipient, 'content', d.content,
                                                'attempts', d.attempts), d.last_error
  FROM notiflow.deliveries d;
COMMENT ON VIEW notiflow.execution_timeline IS 'Steps and deliveries of executions, for a timeline per execution.';

-- Every backend caches workflows, versions and providers; a change to them
-- invalidates those caches everywhere once it commits.
CREATE FUNCTION notiflow.config_changed() RETURNS trigger
    AS 'MODULE_PATHNAME', 'config_changed' LANGUAGE C;
CREATE TRIGGER workflows_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON notiflow.workflows
    FOR EACH STATEMENT EXECUTE FUNCTION notiflow.config_changed();
CREATE TRIGGER workflow_versions_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON notiflow.workflow_versions
    FOR EACH STATEMENT EXECUTE FUNCTION notiflow.config_changed();
CREATE TRIGGER providers_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON notiflow.providers
    FOR EACH STATEMENT EXECUTE FUNCTION notiflow.config_changed();
