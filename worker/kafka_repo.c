/*
 * kafka_repo.c — the SQL of the Kafka consumer: offsets per consumer group
 * and partition (notiflow.kafka_offsets), the consumer's published state
 * (kafka_consumer_state, kafka_partition_state) and Kafka dead letters.
 *
 * Offsets are stored with a compare-and-set on the value the consumer read
 * when it was assigned the partition: if another consumer (a zombie whose
 * session expired, or the next owner after a rebalance) stored offsets in
 * between, the store fails, the batch rolls back with its executions, and
 * the consumer starts again from what is stored.  So two consumers never
 * both commit the same message.  The caller is SPI-connected in a
 * transaction.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

#include "kafka.h"
#include "spi_util.h"

static SpiStatement offset_stmt = {
	"SELECT next_offset FROM notiflow.kafka_offsets WHERE group_id = $1 AND topic = $2 AND partition = $3",
	3, {TEXTOID, TEXTOID, INT4OID}
};

static SpiStatement offset_update_stmt = {
	"UPDATE notiflow.kafka_offsets SET next_offset = $4, subscription = $5, updated_at = now()"
	" WHERE group_id = $1 AND topic = $2 AND partition = $3 AND next_offset = $6",
	6, {TEXTOID, TEXTOID, INT4OID, INT8OID, TEXTOID, INT8OID}
};

static SpiStatement offset_insert_stmt = {
	"INSERT INTO notiflow.kafka_offsets (group_id, topic, partition, next_offset, subscription)"
	" VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
	5, {TEXTOID, TEXTOID, INT4OID, INT8OID, TEXTOID}
};

static SpiStatement dead_letter_stmt = {
	"INSERT INTO notiflow.dead_letters (source, reference, payload, details, error)"
	" VALUES ('kafka', $1, $2, $3, $4)",
	4, {TEXTOID, BYTEAOID, JSONBOID, TEXTOID}
};

static SpiStatement state_stmt = {
	"INSERT INTO notiflow.kafka_consumer_state AS c"
	"       (subscription, pid, status, assigned, paused, error, last_error, last_error_at,"
	"        messages, executions, events, filtered, dead_letters, batches_split, started_at, updated_at)"
	" SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $15, $14, now()"
	"  WHERE EXISTS (SELECT 1 FROM notiflow.kafka_subscriptions s WHERE s.name = $1)"
	" ON CONFLICT (subscription) DO UPDATE"
	"   SET pid = excluded.pid, status = excluded.status, assigned = excluded.assigned,"
	"       paused = excluded.paused, error = excluded.error, last_error = excluded.last_error,"
	"       last_error_at = excluded.last_error_at, messages = excluded.messages,"
	"       executions = excluded.executions, events = excluded.events, filtered = excluded.filtered,"
	"       dead_letters = excluded.dead_letters, batches_split = excluded.batches_split,"
	"       started_at = excluded.started_at, updated_at = now()",
	15, {TEXTOID, INT4OID, TEXTOID, INT4OID, INT4OID, TEXTOID, TEXTOID, TIMESTAMPTZOID,
		INT8OID, INT8OID, INT8OID, INT8OID, INT8OID, TIMESTAMPTZOID, INT8OID}
};

static SpiStatement partitions_stmt = {
	"WITH cur AS ("
	"  SELECT * FROM unnest($2::text[], $3::int[], $4::bool[], $5::bigint[], $6::bigint[])"
	"         AS c(topic, partition, paused, low_watermark, high_watermark)),"
	" held AS ("
	"  INSERT INTO notiflow.kafka_partition_state AS p"
	"         (subscription, topic, partition, assigned, paused, low_watermark, high_watermark, updated_at)"
	"  SELECT $1, topic, partition, true, paused, low_watermark, high_watermark, now() FROM cur"
	"   WHERE EXISTS (SELECT 1 FROM notiflow.kafka_subscriptions s WHERE s.name = $1)"
	"  ON CONFLICT (subscription, topic, partition) DO UPDATE"
	"     SET assigned = true, paused = excluded.paused,"
	"         low_watermark = coalesce(excluded.low_watermark, p.low_watermark),"
	"         high_watermark = coalesce(excluded.high_watermark, p.high_watermark), updated_at = now())"
	" UPDATE notiflow.kafka_partition_state p SET assigned = false, paused = false, updated_at = now()"
	"  WHERE p.subscription = $1 AND p.assigned"
	"    AND (p.topic, p.partition) NOT IN (SELECT topic, partition FROM cur)",
	6, {TEXTOID, TEXTARRAYOID, INT4ARRAYOID, BOOLARRAYOID, INT8ARRAYOID, INT8ARRAYOID}
};

/*
 * Returns the stored next offset of a partition for a group, or -1.  Read
 * with a fresh snapshot (not read-only), which sees what this transaction
 * stored just before (pin_offsets) and what others committed since it began.
 */
int64
kafka_repo_offset(const char *group_id, const char *topic, int32 partition)
{
	Datum		args[3] = {CStringGetTextDatum(group_id), CStringGetTextDatum(topic), Int32GetDatum(partition)};

	return spi_first_int8(&offset_stmt, args, false, -1);
}

/* Stores a partition's next offset if the stored one is still the expected one. */
bool
kafka_repo_store_offset(const char *group_id, const char *topic, int32 partition,
						int64 expected, int64 next_offset, const char *subscription)
{
	Datum		args[6] = {CStringGetTextDatum(group_id), CStringGetTextDatum(topic), Int32GetDatum(partition),
	Int64GetDatum(next_offset), CStringGetTextDatum(subscription), Int64GetDatum(expected)};

	if (expected < 0)
		spi_run(&offset_insert_stmt, args, NULL, false, 0, SPI_OK_INSERT);
	else
		spi_run(&offset_update_stmt, args, NULL, false, 0, SPI_OK_UPDATE);
	return SPI_processed == 1;
}

/* Files a Kafka dead letter with the raw message. */
void
kafka_repo_dead_letter(const char *reference, const char *data, size_t len, Jsonb *details, const char *error)
{
	Datum		args[4];
	char		nulls[4] = "    ";
	bytea	   *raw;

	if (data != NULL)
	{
		raw = palloc(VARHDRSZ + len);
		SET_VARSIZE(raw, VARHDRSZ + len);
		memcpy(VARDATA(raw), data, len);
		args[1] = PointerGetDatum(raw);
	}
	else
	{
		args[1] = (Datum) 0;
		nulls[1] = 'n';
	}
	args[0] = CStringGetTextDatum(reference);
	args[2] = JsonbPGetDatum(details);
	args[3] = CStringGetTextDatum(error);
	spi_run(&dead_letter_stmt, args, nulls, false, 0, SPI_OK_INSERT);
}

/*
 * A text datum, or a null.  The texts are errors copied into fixed buffers,
 * which can cut a character in two (a translated message, an error quoting
 * data): the text ends before the first byte that is not a whole character.
 */
static Datum
text_or_null(const char *s, char *null)
{
	*null = s ? ' ' : 'n';
	if (s == NULL)
		return (Datum) 0;
	return PointerGetDatum(cstring_to_text_with_len(s, pg_encoding_verifymbstr(GetDatabaseEncoding(), s,
																				 (int) strlen(s))));
}

/* Writes the consumer's state row and its partitions' rows. */
void
kafka_repo_publish_state(const char *subscription, const KafkaConsumerState *state)
{
	Datum		args[15];
	char		nulls[16] = "               ";
	int			n = state->npartitions;
	Datum	   *topics = palloc(sizeof(Datum) * Max(n, 1));
	Datum	   *partitions = palloc(sizeof(Datum) * Max(n, 1));
	Datum	   *paused = palloc(sizeof(Datum) * Max(n, 1));
	Datum	   *lows = palloc(sizeof(Datum) * Max(n, 1));
	Datum	   *highs = palloc(sizeof(Datum) * Max(n, 1));
	bool	   *low_nulls = palloc(sizeof(bool) * Max(n, 1));
	bool	   *high_nulls = palloc(sizeof(bool) * Max(n, 1));
	int			npaused = 0;

	for (int i = 0; i < n; i++)
	{
		const KafkaPartitionState *p = &state->partitions[i];

		topics[i] = CStringGetTextDatum(p->topic);
		partitions[i] = Int32GetDatum(p->partition);
		paused[i] = BoolGetDatum(p->paused);
		lows[i] = Int64GetDatum(p->low_watermark);
		low_nulls[i] = p->low_watermark < 0;
		highs[i] = Int64GetDatum(p->high_watermark);
		high_nulls[i] = p->high_watermark < 0;
		npaused += p->paused ? 1 : 0;
	}

	args[0] = CStringGetTextDatum(subscription);
	args[1] = Int32GetDatum(MyProcPid);
	args[2] = CStringGetTextDatum(state->status);
	args[3] = Int32GetDatum(n);
	args[4] = Int32GetDatum(npaused);
	args[5] = text_or_null(state->error, &nulls[5]);
	args[6] = text_or_null(state->last_error, &nulls[6]);
	args[7] = TimestampTzGetDatum(state->last_error_at);
	nulls[7] = state->last_error_at ? ' ' : 'n';
	args[8] = Int64GetDatum(state->counters.messages);
	args[9] = Int64GetDatum(state->counters.executions);
	args[10] = Int64GetDatum(state->counters.events);
	args[11] = Int64GetDatum(state->counters.filtered);
	args[12] = Int64GetDatum(state->counters.dead_letters);
	args[13] = TimestampTzGetDatum(state->started_at);
	args[14] = Int64GetDatum(state->counters.batches_split);
	spi_run(&state_stmt, args, nulls, false, 0, SPI_OK_INSERT);

	args[1] = spi_array(topics, NULL, n, TEXTOID);
	args[2] = spi_array(partitions, NULL, n, INT4OID);
	args[3] = spi_array(paused, NULL, n, BOOLOID);
	args[4] = spi_array(lows, low_nulls, n, INT8OID);
	args[5] = spi_array(highs, high_nulls, n, INT8OID);
	spi_run(&partitions_stmt, args, NULL, false, 0, SPI_OK_UPDATE);
}
