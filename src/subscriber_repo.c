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
#include "catalog/namespace.h"
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
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/rls.h"
#include "utils/snapmgr.h"

#include "jsonb_util.h"
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

/* Reads the row at index r of a subscriber query (columns from 'first'). */
static void
read_subscriber(uint64 r, int first, SubscriberInfo *out)
{
	bool		isnull;
	ArrayType  *invalid;
	Datum	   *elems;
	bool	   *nulls;
	int			n;

	out->recipient = DatumGetJsonbPCopy(spi_value(r, first, &isnull));
	out->preferences = DatumGetJsonbPCopy(spi_value(r, first + 1, &isnull));
	out->invalid_addresses = NIL;
	invalid = DatumGetArrayTypeP(spi_value(r, first + 2, &isnull));
	deconstruct_array(invalid, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	for (int i = 0; i < n; i++)
		if (!nulls[i])
			out->invalid_addresses = lappend(out->invalid_addresses, TextDatumGetCString(elems[i]));
}

/* Loads many subscribers with one query; returns a List of SubscriberInfo * (found ones). */
List *
subscriber_repo_load_many(List *ids)
{
	Datum	   *elems = palloc(sizeof(Datum) * Max(list_length(ids), 1));
	Datum		args[1];
	ListCell   *lc;
	int			i = 0;
	List	   *found = NIL;

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

/* The recipient object's keys and the columns they come from (load_stmt's jsonb_build_object). */
static const char *const recipient_keys[] = {
	"subscriber_id", "name", "email", "phone", "locale", "timezone", "data", "push", "chat"
};
static const char *const recipient_columns[] = {
	"id", "name", "email", "phone", "locale", "timezone", "data", "push", "chat"
};

/* Fills out from the subscriber in slot, as read_subscriber does from load_stmt's row. */
static void
read_slot(Relation rel, TupleTableSlot *slot, SubscriberInfo *out)
{
	Jsonb	   *values[lengthof(recipient_columns)];
	bool		isnull;
	Datum		d;
	Datum	   *elems;
	bool	   *nulls;
	int			n;

	for (int i = 0; i < (int) lengthof(recipient_columns); i++)
	{
		AttrNumber	a = attnameAttNum(rel, recipient_columns[i], false);
		Oid			type = TupleDescAttr(RelationGetDescr(rel), a - 1)->atttypid;

		d = slot_getattr(slot, a, &isnull);
		if (isnull)
			values[i] = NULL;
		else if (type == JSONBOID)
			values[i] = DatumGetJsonbPCopy(d);
		else
			values[i] = jsonb_make_string(TextDatumGetCString(d));
	}
	out->recipient = DatumGetJsonbP(DirectFunctionCall1(jsonb_strip_nulls, JsonbPGetDatum(
		jsonb_make_object(lengthof(recipient_keys), recipient_keys, values))));
	d = slot_getattr(slot, attnameAttNum(rel, "preferences", false), &isnull);
	out->preferences = DatumGetJsonbPCopy(d);
	out->invalid_addresses = NIL;
	d = slot_getattr(slot, attnameAttNum(rel, "invalid_addresses", false), &isnull);
	deconstruct_array(DatumGetArrayTypeP(d), TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	for (int i = 0; i < n; i++)
		if (!nulls[i])
			out->invalid_addresses = lappend(out->invalid_addresses, TextDatumGetCString(elems[i]));
}

/* True when rel has the column, of one of the two types. */
static bool
column_is(Relation rel, const char *column, Oid type1, Oid type2)
{
	AttrNumber	a = attnameAttNum(rel, column, true);
	Oid			type;

	if (a <= 0)
		return false;
	type = TupleDescAttr(RelationGetDescr(rel), a - 1)->atttypid;
	return type == type1 || type == type2;
}

/*
 * Loads one subscriber with a scan of the primary key index instead of a
 * statement (the statement's executor start cost as much as a fifth of a
 * trigger).  Returns false when it cannot (no SELECT privilege, row-level
 * security, an unexpected table shape), so that the statement runs and
 * raises what it should; *found tells whether the subscriber exists.
 */
static bool
load_direct(const char *id, SubscriberInfo *out, bool *found)
{
	Oid			nsp = get_namespace_oid("notiflow", true);
	Oid			relid;
	Oid			pk;
	Relation	rel;
	Relation	index;
	IndexScanDesc scan;
	ScanKeyData key;
	TupleTableSlot *slot;
	AttrNumber	id_att;
	bool		usable;

	if (!OidIsValid(nsp) || !ActiveSnapshotSet())
		return false;
	relid = get_relname_relid("subscribers", nsp);
	if (!OidIsValid(relid) ||
		pg_class_aclcheck(relid, GetUserId(), ACL_SELECT) != ACLCHECK_OK ||
		check_enable_rls(relid, InvalidOid, true) == RLS_ENABLED)
		return false;
	rel = table_open(relid, AccessShareLock);
	pk = RelationGetPrimaryKeyIndex(rel);
	id_att = attnameAttNum(rel, "id", true);
	if (!OidIsValid(pk) || id_att <= 0)
	{
		table_close(rel, NoLock);
		return false;
	}
	index = index_open(pk, AccessShareLock);
	usable = index->rd_index->indnatts == 1 && index->rd_index->indkey.values[0] == id_att &&
		index->rd_rel->relam == BTREE_AM_OID &&
		column_is(rel, "id", TEXTOID, TEXTOID) &&
		column_is(rel, "preferences", JSONBOID, JSONBOID) &&
		column_is(rel, "invalid_addresses", TEXTARRAYOID, TEXTARRAYOID);
	for (int i = 0; usable && i < (int) lengthof(recipient_columns); i++)
		usable = column_is(rel, recipient_columns[i], TEXTOID, JSONBOID);
	if (!usable)
	{
		index_close(index, NoLock);
		table_close(rel, NoLock);
		return false;
	}

	ScanKeyEntryInitialize(&key, 0, 1, BTEqualStrategyNumber, InvalidOid,
						   index->rd_indcollation[0], F_TEXTEQ, CStringGetTextDatum(id));
	slot = table_slot_create(rel, NULL);
	scan = index_beginscan(rel, index, GetActiveSnapshot(), 1, 0);
	index_rescan(scan, &key, 1, NULL, 0);
	*found = index_getnext_slot(scan, ForwardScanDirection, slot);
	if (*found)
	{
		out->id = pstrdup(id);
		read_slot(rel, slot, out);
	}
	index_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	index_close(index, NoLock);
	table_close(rel, NoLock);
	return true;
}

/* Loads one subscriber. */
bool
subscriber_repo_load(const char *id, SubscriberInfo *out)
{
	Datum		args[1] = {CStringGetTextDatum(id)};
	bool		found;

	if (load_direct(id, out, &found))
		return found;

	spi_run(&load_stmt, args, NULL, true, 1, SPI_OK_SELECT);
	if (SPI_processed == 0)
		return false;
	out->id = pstrdup(id);
	read_subscriber(0, 1, out);
	return true;
}
