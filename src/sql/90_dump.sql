-- notiflow 0.1 — pg_dump keeps the data of the extension's tables and the
-- positions of their sequences (catalogue rows such as provider_kinds are
-- created by the extension itself and are not dumped).

DO $$
DECLARE
    t   text;
    seq text;
BEGIN
    FOREACH t IN ARRAY ARRAY[
        'notiflow.workflows', 'notiflow.workflow_versions', 'notiflow.subscribers', 'notiflow.providers',
        'notiflow.executions', 'notiflow.deliveries',
        'notiflow.delivery_attempts', 'notiflow.delivery_events', 'notiflow.delivery_events_early',
        'notiflow.provider_circuits',
        'notiflow.dead_letters', 'notiflow.execution_waits', 'notiflow.event_inbox',
        'notiflow.api_keys', 'notiflow.kafka_subscriptions', 'notiflow.kafka_offsets', 'notiflow.alerts',
        -- how long each open alert's condition has held: without it, a restored open alert was
        -- resolved at the first check and raised again as a new one
        'notiflow.alert_samples']
    LOOP
        CONTINUE WHEN to_regclass(t) IS NULL;
        PERFORM pg_catalog.pg_extension_config_dump(t::regclass, '');
        IF EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = t::regclass AND attname = 'id' AND NOT attisdropped) THEN
            seq := pg_get_serial_sequence(t, 'id');
            IF seq IS NOT NULL THEN
                PERFORM pg_catalog.pg_extension_config_dump(seq::regclass, '');
            END IF;
        END IF;
    END LOOP;
END;
$$;
