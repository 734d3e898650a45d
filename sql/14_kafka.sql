-- Kafka subscriptions: subscribe_kafka / unsubscribe_kafka and their validation
-- (no broker needed: nothing connects while subscribing).
\set VERBOSITY default
\set SHOW_CONTEXT never
SET client_min_messages = warning;

SELECT notiflow.put_workflow('kafka_order', '{"nodes": [{"id": "t", "type": "trigger"},
  {"id": "big", "type": "condition", "if": "$.payload.total > 100"}], "edges": [{"from": "t", "to": "big"}]}');

-- a subscription with every trigger option
SELECT notiflow.subscribe_kafka('orders', 'kafka-1:9092,kafka-2:9092', '{orders, orders.retry}', 'kafka_order',
  '{"group_id": "shop", "filter": "$.type == \"order\" && $topic starts with \"orders\"",
    "payload": "$.order", "recipient": "$.customer_id", "idempotency_key": "$.order.id",
    "start": "latest", "max_message_bytes": 65536, "batch_size": 100, "batch_time_ms": 20,
    "rdkafka": {"session.timeout.ms": "6000", "fetch.wait.max.ms": 100, "check.crcs": true}}');
-- defaults: group notiflow-<name>, trigger mode
SELECT notiflow.subscribe_kafka('plain', 'localhost:9092', '{events}', 'kafka_order');
SELECT name, brokers, topics, workflow_key, mode, group_id, revision
  FROM notiflow.kafka_subscriptions ORDER BY name;

-- subscribing again with the same settings changes nothing; other settings make a new revision
SELECT notiflow.subscribe_kafka('plain', 'localhost:9092', '{events}', 'kafka_order');
SELECT revision FROM notiflow.kafka_subscriptions WHERE name = 'plain';
SELECT notiflow.subscribe_kafka('plain', 'localhost:9092', '{events}', 'kafka_order', '{"idempotency_key": null}');
SELECT revision, options FROM notiflow.kafka_subscriptions WHERE name = 'plain';

-- event mode feeds wait nodes through notiflow.emit_event()
SELECT notiflow.subscribe_kafka('payments', 'localhost:9092', '{payments}', NULL,
  '{"mode": "event", "event_name": "$.kind", "correlation_key": "$.order_id", "payload": "$.data"}');
SELECT name, workflow_key, mode FROM notiflow.kafka_subscriptions WHERE name = 'payments';

-- names, brokers, topics
SELECT notiflow.subscribe_kafka('bad name!', 'localhost:9092', '{t}', 'kafka_order');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT notiflow.subscribe_kafka(NULL, 'localhost:9092', '{t}', 'kafka_order');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT notiflow.subscribe_kafka('x', '', '{t}', 'kafka_order');
SELECT notiflow.subscribe_kafka('x', 'host one:9092', '{t}', 'kafka_order');
SELECT notiflow.subscribe_kafka('x', 'a:9092,,b:9092', '{t}', 'kafka_order');
SELECT notiflow.subscribe_kafka('x', 'localhost:9092', '{}', 'kafka_order');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT notiflow.subscribe_kafka('x', 'localhost:9092', NULL, 'kafka_order');
SELECT notiflow.subscribe_kafka('x', 'localhost:9092', '{a, NULL}', 'kafka_order');
SELECT notiflow.subscribe_kafka('x', 'localhost:9092', '{a, "b c"}', 'kafka_order');
SELECT notiflow.subscribe_kafka('x', 'localhost:9092', '{a, b, a}', 'kafka_order');
SELECT notiflow.subscribe_kafka('x', 'localhost:9092', '{{a}, {b}}', 'kafka_order');

-- the workflow
SELECT notiflow.subscribe_kafka('x', 'localhost:9092', '{t}', 'no_such_workflow');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT notiflow.subscribe_kafka('x', 'localhost:9092', '{t}', NULL);
\echo SQLSTATE :LAST_ERROR_SQLSTATE

-- options
SELECT notiflow.subscribe_kafka('x', 'localhost:9092', '{t}', 'kafka_order', '[]');
SELECT notiflow.subscribe_kafka('x', 'localhost:9092', '{t}', 'kafka_order', '{"groupid": "g"}');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT notiflow.subscribe_kafka('x', 'localhost:9092', '{t}', 'kafka_order', '{"group_id": ""}');
SELECT notiflow.subscribe_kafka('x', 'localhost:9092', '{t}', 'kafka_order', '{"filter": "$.a ==="}');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT notiflow.subscribe_kafka('x', 'localhost:9092', '{t}', 'kafka_order', '{"filter": "$.type"}');
SELECT notiflow.subscribe_kafka('x', 'localhost:9092', '{t}', 'kafka_order', '{"filter": "$.a ? (@ > $limit) == 1"}');
SELECT notiflow.subscribe_kafka('x', 'localhost:9092', '{t}', 'kafka_order', '{"payload": 42}');
SELECT notiflow.subscribe_kafka('x', 'localhost:9092', '{t}', 'kafka_order', '{"recipient": "$.user["}');
SELECT notiflow.subscribe_kafka('x', 'localhost:9092', '{t}', 'kafka_order', '{"idempotency_key": "$keys"}');
SELECT notiflow.subscribe_kafka('x', 'localhost:9092', '{t}', 'kafka_order', '{"mode": "batch"}');
SELECT notiflow.subscribe_kafka('x', 'localhost:9092', '{t}', 'kafka_order', '{"start": "beginning"}');
SELECT notiflow.subscribe_kafka('x', 'localhost:9092', '{t}', 'kafka_order', '{"batch_size": 0}');
SELECT notiflow.subscribe_kafka('x', 'localhost:9092', '{t}', 'kafka_order', '{"batch_size": 1e400}');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT notiflow.subscribe_kafka('x', 'localhost:9092', '{t}', 'kafka_order', '{"batch_size": 1e-400}');
SELECT notiflow.subscribe_kafka('x', 'localhost:9092', '{t}', 'kafka_order', '{"batch_time_ms": 1.5}');
SELECT notiflow.subscribe_kafka('x', 'localhost:9092', '{t}', 'kafka_order', '{"max_message_bytes": "1MB"}');
SELECT notiflow.subscribe_kafka('x', 'localhost:9092', '{t}', 'kafka_order', '{"event_name": "$.kind"}');

-- librdkafka properties are checked by librdkafka (without connecting)
SELECT notiflow.subscribe_kafka('x', 'localhost:9092', '{t}', 'kafka_order', '{"rdkafka": "fast"}');
SELECT notiflow.subscribe_kafka('x', 'localhost:9092', '{t}', 'kafka_order', '{"rdkafka": {"no.such.property": "1"}}');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT notiflow.subscribe_kafka('x', 'localhost:9092', '{t}', 'kafka_order', '{"rdkafka": {"session.timeout.ms": "soon"}}');
-- and together, as the consumer will set them (a consumer that cannot start would restart for ever)
SELECT notiflow.subscribe_kafka('x', 'localhost:9092', '{t}', 'kafka_order', '{"rdkafka": {"session.timeout.ms": "400000"}}');
SELECT notiflow.subscribe_kafka('x', 'localhost:9092', '{t}', 'kafka_order', '{"rdkafka": {"group.id": "g"}}');
SELECT notiflow.subscribe_kafka('x', 'localhost:9092', '{t}', 'kafka_order', '{"rdkafka": {"statistics.interval.ms": "0"}}');
SELECT notiflow.subscribe_kafka('x', 'localhost:9092', '{t}', 'kafka_order', '{"rdkafka": {"enable.auto.commit": "true"}}');
-- librdkafka takes a topic property with a "topic." prefix: "latest" would skip a backlog
SELECT notiflow.subscribe_kafka('x', 'localhost:9092', '{t}', 'kafka_order', '{"rdkafka": {"topic.auto.offset.reset": "latest"}}');
SELECT notiflow.subscribe_kafka('x', 'localhost:9092', '{t}', 'kafka_order', '{"rdkafka": {"group.instance.id": "node-1"}}');
SELECT notiflow.subscribe_kafka('x', 'localhost:9092', '{t}', 'kafka_order',
  '{"rdkafka": {"partition.assignment.strategy": "cooperative-sticky"}}');
SELECT notiflow.subscribe_kafka('x', 'localhost:9092', '{t}', 'kafka_order', '{"rdkafka": {"debug": ["cgrp"]}}');

-- event mode
SELECT notiflow.subscribe_kafka('x', 'localhost:9092', '{t}', NULL, '{"mode": "event", "correlation_key": "$.id"}');
SELECT notiflow.subscribe_kafka('x', 'localhost:9092', '{t}', NULL, '{"mode": "event", "event_name": "$.kind"}');
SELECT notiflow.subscribe_kafka('x', 'localhost:9092', '{t}', 'kafka_order',
  '{"mode": "event", "event_name": "$.kind", "correlation_key": "$.id"}');
SELECT notiflow.subscribe_kafka('x', 'localhost:9092', '{t}', NULL,
  '{"mode": "event", "event_name": "$.kind", "correlation_key": "$.id", "recipient": "$.user"}');
SELECT notiflow.subscribe_kafka('x', 'localhost:9092', '{t}', NULL,
  '{"mode": "event", "event_name": "$.kind", "correlation_key": "$.id", "idempotency_key": null}');
-- without notiflow.emit_event() event mode is refused, after the options were checked
BEGIN;
ALTER EXTENSION notiflow DROP FUNCTION notiflow.emit_event(text, text, jsonb);
DROP FUNCTION notiflow.emit_event(text, text, jsonb);
SAVEPOINT without_emit_event;
SELECT notiflow.subscribe_kafka('x', 'localhost:9092', '{t}', NULL, '{"mode": "event", "event_name": "$.kind"}');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
ROLLBACK TO SAVEPOINT without_emit_event;
SELECT notiflow.subscribe_kafka('x', 'localhost:9092', '{t}', NULL,
  '{"mode": "event", "event_name": "$.kind", "correlation_key": "$.id"}');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
ROLLBACK;

-- nothing was stored by the refused calls
SELECT name FROM notiflow.kafka_subscriptions ORDER BY name;

-- position keys (topic/partition/offset): a subscription that starts the same workflow from one of
-- the same topics in another group or on another cluster would read the same positions, and its
-- messages would be taken for repeats
SELECT notiflow.subscribe_kafka('twin_a', 'localhost:9092', '{twins}', 'kafka_order');
SELECT notiflow.subscribe_kafka('twin_b', 'localhost:9092', '{other, twins}', 'kafka_order');
SELECT notiflow.subscribe_kafka('twin_b', 'localhost:9092', '{twins}', 'kafka_order', '{"group_id": "notiflow-twin_a"}');
SELECT notiflow.subscribe_kafka('twin_c', 'kafka-9:9092', '{twins}', 'kafka_order', '{"group_id": "notiflow-twin_a"}');
SELECT notiflow.subscribe_kafka('twin_c', 'localhost:9092', '{twins}', 'kafka_order', '{"idempotency_key": "$.id"}');
SELECT name, group_id FROM notiflow.kafka_subscriptions WHERE name LIKE 'twin%' ORDER BY name;
SELECT notiflow.unsubscribe_kafka(n) FROM unnest('{twin_a,twin_b,twin_c}'::text[]) n;

-- unsubscribe
SELECT notiflow.unsubscribe_kafka('plain');
SELECT notiflow.unsubscribe_kafka('plain');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT name FROM notiflow.kafka_subscriptions ORDER BY name;

-- without workers nothing is consumed: no state, no lag rows
SELECT count(*) AS state_rows FROM notiflow.kafka_consumer_state;
SELECT count(*) AS lag_rows FROM notiflow.kafka_lag;

-- kafka_lag counts a partition in one subscription of its group (rows as the consumers write them):
-- the one holding it; when nobody holds it for the moment, the one that stored its offset last,
-- else the one that saw it last; never for a topic the subscription no longer reads
BEGIN;
SELECT notiflow.subscribe_kafka('lag_a', 'localhost:9092', '{lagt}', 'kafka_order', '{"group_id": "lag-group", "idempotency_key": "$.id"}');
SELECT notiflow.subscribe_kafka('lag_b', 'localhost:9092', '{lagt}', 'kafka_order', '{"group_id": "lag-group", "idempotency_key": "$.id"}');
INSERT INTO notiflow.kafka_partition_state (subscription, topic, partition, assigned, low_watermark, high_watermark, updated_at)
VALUES ('lag_a', 'lagt', 0, true,  0, 100, now()),                      -- a holds 0
       ('lag_b', 'lagt', 0, false, 0, 40,  now() - interval '1 hour'),  -- b held it before
       ('lag_a', 'lagt', 1, false, 0, 50,  now() - interval '1 hour'),  -- nobody holds 1: b stored its offset last
       ('lag_b', 'lagt', 1, false, 0, 60,  now() - interval '2 hours'),
       ('lag_a', 'lagt', 2, false, 0, 70,  now() - interval '1 hour'),  -- nobody holds 2, whose offset a removed
       ('lag_b', 'lagt', 2, false, 0, 80,  now() - interval '2 hours'), -- subscription stored: a saw it last
       ('lag_a', 'old_topic', 0, false, 0, 90, now()),                  -- a topic a no longer reads
       ('lag_a', 'lagt', 3, true,  5, 25,  now());                      -- no offset stored yet: from the low watermark
INSERT INTO notiflow.kafka_offsets (subscription, group_id, topic, partition, next_offset)
VALUES ('lag_a', 'lag-group', 'lagt', 0, 90), ('lag_b', 'lag-group', 'lagt', 1, 30),
       ('lag_gone', 'lag-group', 'lagt', 2, 20), ('lag_a', 'lag-group', 'old_topic', 0, 10);
SELECT subscription, topic, partition, assigned, committed_offset, high_watermark, lag
  FROM notiflow.kafka_lag WHERE group_id = 'lag-group' ORDER BY topic, partition, subscription;
ROLLBACK;

SELECT notiflow.unsubscribe_kafka(name) FROM notiflow.kafka_subscriptions;
