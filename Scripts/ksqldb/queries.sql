-- ksqlDB statements for ORDER_AGGREGATES: the seed's "working solution", made
-- idempotent (IF NOT EXISTS) so that a restart re-running them is a no-op.
--
-- Settings that make the table correct for the command handler (set them
-- before running these statements; orders-server --ksqldb-url sends them as
-- streamsProperties with every statement):
--
--   SET 'auto.offset.reset'='earliest';
--       ksqlDB's default is 'latest': records written to
--       order-commands-and-events before the persistent query starts would
--       never be aggregated, and their commands never handled.
--
--   SET 'cache.max.bytes.buffering'='0';
--       (REST: "ksql.streams.cache.max.bytes.buffering": "0"; or server-wide
--       ksql.streams.cache.max.bytes.buffering=0 in ksql-server.properties.)
--       The Kafka Streams record cache coalesces successive updates of one
--       key; the command handler reacts to the changelog record whose latest
--       entry is a command, so a coalesced update can skip a command.
--
-- Sink topic cleanup policy: ksqlDB creates a CTAS sink topic with
-- cleanup.policy=compact, and the CTAS WITH clause takes no cleanup.policy.
-- The command handler and the projector read order-aggregates as a log, so it
-- must not be compacted past records they have not processed. Therefore the
-- topics are created FIRST (by orders-server, with cleanup.policy=delete and
-- unlimited retention, or by hand: see README.md), and these statements
-- reference the existing topics; ksqlDB uses an existing topic as is when its
-- partition count matches PARTITIONS.
--
-- Topic names, object names and PARTITIONS: orders-server substitutes its
-- --kafka-topic-prefix and --kafka-partitions; this file shows the defaults
-- (no prefix, 10 partitions). With a prefix, the stream and the table carry it
-- too, upper-cased, every character but a letter, digit or _ made _:
-- --kafka-topic-prefix staging- gives STAGING_ORDER_COMMANDS_AND_EVENTS and
-- STAGING_ORDER_AGGREGATES, so deployments with different prefixes on one
-- ksqlDB do not share objects.

CREATE STREAM IF NOT EXISTS ORDER_COMMANDS_AND_EVENTS (
  ORDER_ID STRING KEY,
  TYPE STRING,
  SUB_TYPE STRING,
  DETAILS STRING
) WITH (
  KAFKA_TOPIC='order-commands-and-events',
  PARTITIONS=10,
  VALUE_FORMAT='JSON'
);

CREATE TABLE IF NOT EXISTS ORDER_AGGREGATES WITH (
  KAFKA_TOPIC='order-aggregates',
  PARTITIONS=10,
  VALUE_FORMAT='JSON'
) AS SELECT
  ORDER_ID,
  LATEST_BY_OFFSET(TYPE) AS LATEST_TYPE,
  LATEST_BY_OFFSET(SUB_TYPE) AS LATEST_SUB_TYPE,
  LATEST_BY_OFFSET(DETAILS) AS LATEST_DETAILS,
  COLLECT_LIST(TYPE) AS TYPE_LIST,
  COLLECT_LIST(SUB_TYPE) AS SUB_TYPE_LIST,
  COLLECT_LIST(DETAILS) AS DETAILS_LIST
FROM ORDER_COMMANDS_AND_EVENTS
GROUP BY ORDER_ID
EMIT CHANGES;
