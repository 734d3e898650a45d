-- notiflow 0.1 — Kafka triggers: subscriptions, the offsets stored with the
-- executions they produced, consumer state and lag.  The consumers are
-- background workers (worker/kafka_consumer.c); see docs/kafka.md.

CREATE TABLE notiflow.kafka_subscriptions (
    id           bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    name         text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$'),
    brokers      text NOT NULL,
    topics       text[] NOT NULL CHECK (cardinality(topics) > 0),
    workflow_key text,
    mode         text NOT NULL CHECK (mode IN ('trigger', 'event')),
    group_id     text NOT NULL,
    options      jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(options) = 'object'),
    revision     integer NOT NULL DEFAULT 1,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CHECK ((mode = 'trigger') = (workflow_key IS NOT NULL))
);
COMMENT ON TABLE notiflow.kafka_subscriptions IS
    'Kafka topics consumed into workflow triggers or events; each row runs one "notiflow kafka consumer" worker.  Change through subscribe_kafka()/unsubscribe_kafka().';

-- Offsets belong to the consumer group, as in Kafka: when a partition moves
-- between two subscriptions of one group, the new owner goes on from here.
CREATE TABLE notiflow.kafka_offsets (
    subscription text NOT NULL,
    group_id     text NOT NULL,
    topic        text NOT NULL,
    partition    integer NOT NULL,
    next_offset  bigint NOT NULL CHECK (next_offset >= 0),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, topic, partition)
);
COMMENT ON TABLE notiflow.kafka_offsets IS
    'The next offset to process per consumer group and partition, stored in the transaction of the executions it produced (subscription: the one that stored it last).';

CREATE TABLE notiflow.kafka_consumer_state (
    subscription  text PRIMARY KEY REFERENCES notiflow.kafka_subscriptions (name) ON DELETE CASCADE,
    pid           integer NOT NULL,
    status        text NOT NULL CHECK (status IN ('starting', 'running', 'broker_down', 'backoff')),
    assigned      integer NOT NULL DEFAULT 0,
    paused        integer NOT NULL DEFAULT 0,
    error         text,
    last_error    text,
    last_error_at timestamptz,
    messages      bigint NOT NULL DEFAULT 0,
    executions    bigint NOT NULL DEFAULT 0,
    events        bigint NOT NULL DEFAULT 0,
    filtered      bigint NOT NULL DEFAULT 0,
    dead_letters  bigint NOT NULL DEFAULT 0,
    batches_split bigint NOT NULL DEFAULT 0,
    started_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE notiflow.kafka_consumer_state IS
    'What each consumer worker last published (about once a second): status, partitions assigned and paused, the current and the last error, counters since it started.';

CREATE TABLE notiflow.kafka_partition_state (
    subscription   text NOT NULL REFERENCES notiflow.kafka_subscriptions (name) ON DELETE CASCADE,
    topic          text NOT NULL,
    partition      integer NOT NULL,
    assigned       boolean NOT NULL,
    paused         boolean NOT NULL DEFAULT false,
    low_watermark  bigint,
    high_watermark bigint,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (subscription, topic, partition)
);
COMMENT ON TABLE notiflow.kafka_partition_state IS
    'Partitions a consumer holds or held, with the watermarks it last saw (published about once a second).';

-- A change of a subscription is a new revision: its consumer restarts with it.
CREATE FUNCTION notiflow.kafka_subscription_revise() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    NEW.revision := OLD.revision + 1;
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;
CREATE TRIGGER kafka_subscriptions_revise BEFORE UPDATE ON notiflow.kafka_subscriptions
    FOR EACH ROW EXECUTE FUNCTION notiflow.kafka_subscription_revise();

-- Tells the launcher, at commit, to start and stop consumers.
CREATE FUNCTION notiflow.kafka_subscriptions_changed() RETURNS trigger
    AS 'MODULE_PATHNAME', 'kafka_subscriptions_changed' LANGUAGE C;
CREATE TRIGGER kafka_subscriptions_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON notiflow.kafka_subscriptions
    FOR EACH STATEMENT EXECUTE FUNCTION notiflow.kafka_subscriptions_changed();

CREATE FUNCTION notiflow.subscribe_kafka(name text, brokers text, topics text[], workflow_key text,
                                         options jsonb DEFAULT '{}') RETURNS void
    AS 'MODULE_PATHNAME', 'subscribe_kafka' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION notiflow.subscribe_kafka(text, text, text[], text, jsonb) IS
    'Consumes Kafka topics into triggers of a workflow (or events, options.mode); replaces the subscription of that name.  Its consumer starts when the transaction commits.';
REVOKE ALL ON FUNCTION notiflow.subscribe_kafka(text, text, text[], text, jsonb) FROM PUBLIC;

CREATE FUNCTION notiflow.unsubscribe_kafka(name text) RETURNS void
    AS 'MODULE_PATHNAME', 'unsubscribe_kafka' LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION notiflow.unsubscribe_kafka(text) IS
    'Removes a Kafka subscription; its consumer stops when the transaction commits.  The group''s offsets are kept.';
REVOKE ALL ON FUNCTION notiflow.unsubscribe_kafka(text) FROM PUBLIC;

CREATE VIEW notiflow.kafka_lag AS
SELECT s.name AS subscription, s.group_id, p.topic, p.partition, p.assigned, p.paused,
       o.next_offset AS committed_offset, p.low_watermark, p.high_watermark,
       -- a partition held, or, when nobody holds it for the moment (a restart, a rebalance,
       -- brokers unreachable), in one subscription of the group that reads its topic: the one
       -- that stored its offset last, else the one that saw it last.  Not in the others: their
       -- watermark no longer moves, and the partition would count twice
       -- before notiflow stored an offset, a subscription that starts at the earliest message
       -- lags by everything the partition holds (a first batch that never commits raises the alert)
       CASE WHEN p.high_watermark IS NOT NULL
                 AND (o.next_offset IS NOT NULL
                      OR (p.low_watermark IS NOT NULL AND coalesce(s.options ->> 'start', 'earliest') = 'earliest'))
                 AND (p.assigned
                      OR s.name = (SELECT hs.name FROM notiflow.kafka_partition_state h
                                     JOIN notiflow.kafka_subscriptions hs ON hs.name = h.subscription
                                    WHERE hs.group_id = s.group_id AND h.topic = p.topic
                                      AND h.partition = p.partition AND h.topic = ANY (hs.topics)
                                    ORDER BY h.assigned DESC, (hs.name = o.subscription) IS TRUE DESC,
                                             h.updated_at DESC, hs.name
                                    LIMIT 1))
            THEN greatest(p.high_watermark - coalesce(o.next_offset, p.low_watermark), 0) END AS lag,
       c.status, c.error, c.last_error, c.last_error_at,
       c.pid IS NOT NULL AND EXISTS (SELECT 1 FROM pg_catalog.pg_stat_activity a WHERE a.pid = c.pid
                                     AND a.backend_type = 'notiflow kafka consumer') AS consumer_alive,
       p.updated_at
  FROM notiflow.kafka_subscriptions s
  JOIN notiflow.kafka_partition_state p ON p.subscription = s.name
  LEFT JOIN notiflow.kafka_offsets o ON o.group_id = s.group_id AND o.topic = p.topic AND o.partition = p.partition
  LEFT JOIN notiflow.kafka_consumer_state c ON c.subscription = s.name;
COMMENT ON VIEW notiflow.kafka_lag IS
    'Per subscription and partition: the committed offset (kafka_offsets), the high watermark the consumer last saw, the lag between them (for a partition nobody holds for the moment, in one subscription of the group only; NULL in the others, and for a topic no longer subscribed), and the consumer''s state.';
