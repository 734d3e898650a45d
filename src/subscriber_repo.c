/*
 * subscriber_repo.c — data access for subscribers.
 *
 * Callers are connected to SPI.  A subscriber is read as the recipient object
 * that templates and jsonpaths see, plus its preferences and the addresses
 * providers reported invalid.
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/relscan.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/pg_am.h"
#include "catalog/pg_type.h"
#include "executor/tuptable.h"
#include "miscadmin.h"
#include "parser/parse_relation.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/jsonb.h"
#include "utils/rel.h"
#include "utils/rls.h"
#include "utils/snapmgr.h"

#include "jsonb_util.h"
#include "notiflow.h"
#include "spi_util.h"
#include "subscriber_repo.h"

static SpiStatement load_stmt = {
	"SELECT jsonb_strip_nulls(jsonb_build_object("
	"           'subscriber_id', id, 'name', name, 'email', email, 'phone', phone,"
	"           'locale', locale, 'timezone', timezone, 'data', data, 'push', push,"
	"           'chat', chat)),"
	"       preferences, invalid_addresses"
	"  FROM notiflow.subscribers WHERE id = $1",
	1, {TEXTOID}
};

static SpiStatement load_many_stmt = {
	"SELECT id, jsonb_strip_nulls(jsonb_build_object("
	"           'subscriber_id', id, 'name', name, 'email', email, 'phone', phone,"
	"           'locale', locale, 'timezone', timezone, 'data', data, 'push', push,"
	"           'chat', chat)),"
	"       preferences, invalid_addresses"
	"  FROM unnest($1::text[]) AS k(wanted) JOIN notiflow.subscribers s ON s.id = k.wanted",
	1, {TEXTARRAYOID}
};

/* The non-null elements of a text[] (invalid_addresses) as a List of C strings. */
static List *
text_array_list(Datum array)
{
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	List	   *list = NIL;

	deconstruct_array(DatumGetArrayTypeP(array), TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	for (int i = 0; i < n; i++)
		if (!nulls[i])
			list = lappend(list, TextDatumGetCString(elems[i]));
	return list;
}

/* Reads the row at index r of a subscriber query (columns from 'first'). */
static void
read_subscriber(uint64 r, int first, SubscriberInfo *out)
{
	bool		isnull;

	out->recipient = DatumGetJsonbPCopy(spi_value(r, first, &isnull));
	out->preferences = DatumGetJsonbPCopy(spi_value(r, first + 1, &isnull));
	out->invalid_addresses = text_array_list(spi_value(r, first + 2, &isnull));
}

/* The recipient object's keys and the columns they come from (load_stmt's jsonb_build_object). */
static const char *const recipient_keys[] = {
	"subscriber_id", "name", "email", "phone", "locale", "timezone", "data", "push", "chat"
};
static const char *const recipient_columns[] = {
	"id", "name", "email", "phone", "locale", "timezone", "data", "push", "chat"
};

/* The attribute number of rel's column when it is of one of the two types, else 0. */
static AttrNumber
column_att(Relation rel, const char *column, Oid type1, Oid type2)
{
	AttrNumber	a = attnameAttNum(rel, column, true);
	Oid			type;

	if (a <= 0)
		return 0;
	type = TupleDescAttr(RelationGetDescr(rel), a - 1)->atttypid;
	return (type == type1 || type == type2) ? a : 0;
}

/* An open scan of the subscribers' primary key index, with the columns it reads. */
typedef struct SubscriberScan
{
	Relation	rel;
	Relation	index;
	TupleTableSlot *slot;
	IndexScanDesc scan;
	AttrNumber	recipient_att[lengthof(recipient_columns)];
	bool		recipient_jsonb[lengthof(recipient_columns)];
	AttrNumber	preferences_att;
	AttrNumber	invalid_att;
} SubscriberScan;

/* Fills out from the subscriber in the scan's slot, as read_subscriber does from load_stmt's row. */
static void
read_slot(SubscriberScan *s, SubscriberInfo *out)
{
	Jsonb	   *values[lengthof(recipient_columns)];
	bool		isnull;
	Datum		d;

	/*
	 * jsonb_strip_nulls of the whole object, done per value: a null column is
	 * left out, a jsonb column has its own nested nulls stripped.
	 */
	for (int i = 0; i < (int) lengthof(recipient_columns); i++)
	{
		d = slot_getattr(s->slot, s->recipient_att[i], &isnull);
		values[i] = NULL;
		if (isnull)
			continue;
		if (s->recipient_jsonb[i])
		{
			Jsonb	   *v = DatumGetJsonbP(DirectFunctionCall1(jsonb_strip_nulls, d));
			JsonbValue	scalar;

			/* a JSON null is stripped like an SQL one */
			if (!(JB_ROOT_IS_SCALAR(v) && JsonbExtractScalar(&v->root, &scalar) && scalar.type == jbvNull))
				values[i] = v;
		}
		else
			values[i] = jsonb_make_string(TextDatumGetCString(d));
	}
	out->recipient = jsonb_make_object_present(lengthof(recipient_keys), recipient_keys, values);
	out->preferences = DatumGetJsonbPCopy(slot_getattr(s->slot, s->preferences_att, &isnull));
	out->invalid_addresses = text_array_list(slot_getattr(s->slot, s->invalid_att, &isnull));
}

/*
 * Opens a scan of the primary key index to read subscribers without a
 * statement (the statement's executor start cost as much as a fifth of a
 * trigger).  Returns false when it cannot (no SELECT privilege, row-level
 * security, an unexpected table shape), so that the statement runs and
 * raises what it should.
 */
static bool
scan_open(SubscriberScan *s)
{
	Oid			relid;
	Oid			pk;
	AttrNumber	id_att;
	bool		usable;

	if (!ActiveSnapshotSet())
		return false;
	relid = notiflow_relid("subscribers");
	if (!OidIsValid(relid) ||
		pg_class_aclcheck(relid, GetUserId(), ACL_SELECT) != ACLCHECK_OK ||
		check_enable_rls(relid, InvalidOid, true) == RLS_ENABLED)
		return false;
	s->rel = table_open(relid, AccessShareLock);
	pk = RelationGetPrimaryKeyIndex(s->rel);
	id_att = column_att(s->rel, "id", TEXTOID, TEXTOID);
	if (!OidIsValid(pk) || id_att == 0)
	{
		table_close(s->rel, NoLock);
		return false;
	}
	s->index = index_open(pk, AccessShareLock);
	usable = s->index->rd_index->indnatts == 1 && s->index->rd_index->indkey.values[0] == id_att &&
		s->index->rd_rel->relam == BTREE_AM_OID &&
		(s->preferences_att = column_att(s->rel, "preferences", JSONBOID, JSONBOID)) != 0 &&
		(s->invalid_att = column_att(s->rel, "invalid_addresses", TEXTARRAYOID, TEXTARRAYOID)) != 0;
	for (int i = 0; usable && i < (int) lengthof(recipient_columns); i++)
	{
		s->recipient_att[i] = column_att(s->rel, recipient_columns[i], TEXTOID, JSONBOID);
		usable = s->recipient_att[i] != 0;
		if (usable)
			s->recipient_jsonb[i] =
				TupleDescAttr(RelationGetDescr(s->rel), s->recipient_att[i] - 1)->atttypid == JSONBOID;
	}
	if (!usable)
	{
		index_close(s->index, NoLock);
		table_close(s->rel, NoLock);
		return false;
	}
	s->slot = table_slot_create(s->rel, NULL);
	s->scan = index_beginscan(s->rel, s->index, GetActiveSnapshot(), 1, 0);
	return true;
}

/* Reads one subscriber through the scan; false when there is none with this id. */
static bool
scan_fetch(SubscriberScan *s, const char *id, SubscriberInfo *out)
{
	ScanKeyData key;

	ScanKeyEntryInitialize(&key, 0, 1, BTEqualStrategyNumber, InvalidOid,
						   s->index->rd_indcollation[0], F_TEXTEQ, CStringGetTextDatum(id));
	index_rescan(s->scan, &key, 1, NULL, 0);
	if (!index_getnext_slot(s->scan, ForwardScanDirection, s->slot))
		return false;
	out->id = pstrdup(id);
	read_slot(s, out);
	return true;
}

static void
scan_close(SubscriberScan *s)
{
	index_endscan(s->scan);
	ExecDropSingleTupleTableSlot(s->slot);
	index_close(s->index, NoLock);
	table_close(s->rel, NoLock);
}

/* Loads one subscriber. */
bool
subscriber_repo_load(const char *id, SubscriberInfo *out)
{
	Datum		args[1] = {CStringGetTextDatum(id)};
	SubscriberScan scan;

	if (scan_open(&scan))
	{
		bool		found = scan_fetch(&scan, id, out);

		scan_close(&scan);
		return found;
	}

	spi_run(&load_stmt, args, NULL, true, 1, SPI_OK_SELECT);
	if (SPI_processed == 0)
		return false;
	out->id = pstrdup(id);
	read_subscriber(0, 1, out);
	return true;
}

/* Loads many subscribers (one index scan, or one query); returns a List of SubscriberInfo * (found ones). */
List *
subscriber_repo_load_many(List *ids)
{
	Datum	   *elems = palloc(sizeof(Datum) * Max(list_length(ids), 1));
	Datum		args[1];
	ListCell   *lc;
	int			i = 0;
	List	   *found = NIL;
	SubscriberScan scan;

	if (scan_open(&scan))
	{
		foreach(lc, ids)
		{
			SubscriberInfo *info = palloc0(sizeof(SubscriberInfo));

			if (scan_fetch(&scan, (char *) lfirst(lc), info))
				found = lappend(found, info);
			else
				pfree(info);
		}
		scan_close(&scan);
		return found;
	}
	foreach(lc, ids)
		elems[i++] = CStringGetTextDatum((char *) lfirst(lc));
	args[0] = spi_array(elems, NULL, i, TEXTOID);
	spi_run(&load_many_stmt, args, NULL, true, 0, SPI_OK_SELECT);
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		SubscriberInfo *info = palloc0(sizeof(SubscriberInfo));

		info->id = spi_text(r, 1);
		read_subscriber(r, 2, info);
		found = lappend(found, info);
	}
	return found;
}
