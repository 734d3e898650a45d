/*
 * row_writer.c — direct inserts into notiflow's own tables (see row_writer.h).
 *
 * What the executor would do for INSERT ... VALUES, minus planning and plan
 * start-up: evaluate the defaults of the columns not given, check NOT NULL
 * and CHECK constraints (ExecConstraints), insert the heap tuple and its index
 * entries (ExecInsertIndexTuples, which also evaluates partial indexes'
 * predicates and raises unique violations).  Anything the executor does
 * beyond that — triggers, rules, row-level security, generated columns,
 * partitions, a read-only transaction — makes row_writer_open decline, and
 * the caller runs its statement.
 *
 * The column defaults, CHECK constraints and partial indexes' predicates are
 * parsed and planned once per table and backend (RelationShape), and again
 * after a relcache invalidation of the table (ALTER TABLE, CREATE INDEX) or a
 * change of any function (planning may inline one); each open only builds
 * their expression states.
 */
#include "postgres.h"

#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_class.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "miscadmin.h"
#include "nodes/execnodes.h"
#include "parser/parse_relation.h"
#include "rewrite/rewriteHandler.h"
#include "optimizer/optimizer.h"
#include "utils/acl.h"
#include "utils/inval.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/rls.h"
#include "utils/syscache.h"

#include "notiflow.h"
#include "row_writer.h"

struct RowWriter
{
	Relation	rel;
	EState	   *estate;
	ResultRelInfo *rri;
	TupleTableSlot *slot;
	int			ncolumns;
	AttrNumber *attnums;		/* per given column */
	int			ndefaults;
	AttrNumber *default_attnums;	/* columns not given that have a default */
	ExprState **defaults;
	CommandId	cid;
};

/* A table's defaults and checks, planned. */
typedef struct RelationShape
{
	Oid			relid;
	bool		valid;
	MemoryContext cxt;
	int			natts;
	Expr	  **defaults;		/* per attribute; NULL: no default */
	int			ncheck;
	Expr	  **checks;			/* per TupleConstr check, in its order */
	int			npredicates;
	Oid		   *predicate_indexes;	/* partial indexes ... */
	List	  **predicates;		/* ... and their predicates */
} RelationShape;

#define MAX_SHAPES 8
static RelationShape shapes[MAX_SHAPES];
static bool callback_registered = false;

static void
shape_invalidate(Datum arg, Oid relid)
{
	for (int i = 0; i < MAX_SHAPES; i++)
		if (relid == InvalidOid || shapes[i].relid == relid)
			shapes[i].valid = false;
}

/* A function changed: planning may have inlined or folded it into a shape. */
static void
shape_invalidate_all(Datum arg, int cacheid, uint32 hashvalue)
{
	shape_invalidate(arg, InvalidOid);
}

/*
 * Returns rel's shape, planning it when there is none or it was invalidated;
 * rri has rel's indexes open.
 */
static RelationShape *
shape_for(Relation rel, ResultRelInfo *rri)
{
	Oid			relid = RelationGetRelid(rel);
	TupleDesc	desc = RelationGetDescr(rel);
	RelationShape *shape = NULL;
	MemoryContext old;

	if (!callback_registered)
	{
		CacheRegisterRelcacheCallback(shape_invalidate, (Datum) 0);
		CacheRegisterSyscacheCallback(PROCOID, shape_invalidate_all, (Datum) 0);
		callback_registered = true;
	}
	for (int i = 0; i < MAX_SHAPES; i++)
	{
		if (shapes[i].relid == relid && shapes[i].valid &&
			shapes[i].natts == desc->natts &&
			shapes[i].ncheck == (desc->constr ? desc->constr->num_check : 0))
			return &shapes[i];
		if (shape == NULL && (shapes[i].relid == relid || !shapes[i].valid))
			shape = &shapes[i];
	}
	if (shape == NULL)
		shape = &shapes[0];

	if (shape->cxt)
		MemoryContextDelete(shape->cxt);
	shape->relid = InvalidOid;
	shape->valid = false;
	shape->cxt = AllocSetContextCreate(CacheMemoryContext, "notiflow row writer shape",
									   ALLOCSET_SMALL_SIZES);
	old = MemoryContextSwitchTo(shape->cxt);
	shape->natts = desc->natts;
	shape->defaults = palloc0(sizeof(Expr *) * desc->natts);
	for (int a = 1; a <= desc->natts; a++)
	{
		Node	   *expr;

		if (TupleDescAttr(desc, a - 1)->attisdropped)
			continue;
		expr = build_column_default(rel, a);
		if (expr != NULL)
			shape->defaults[a - 1] = expression_planner((Expr *) expr);
	}
	shape->ncheck = desc->constr ? desc->constr->num_check : 0;
	shape->checks = palloc0(sizeof(Expr *) * Max(shape->ncheck, 1));
	/* NOT VALID ones too: they hold for new rows */
	for (int c = 0; c < shape->ncheck; c++)
		shape->checks[c] = expression_planner(stringToNode(desc->constr->check[c].ccbin));
	shape->npredicates = 0;
	shape->predicate_indexes = palloc(sizeof(Oid) * Max(rri->ri_NumIndices, 1));
	shape->predicates = palloc(sizeof(List *) * Max(rri->ri_NumIndices, 1));
	for (int i = 0; i < rri->ri_NumIndices; i++)
	{
		IndexInfo  *info = rri->ri_IndexRelationInfo[i];

		if (info->ii_Predicate == NIL)
			continue;
		shape->predicate_indexes[shape->npredicates] = RelationGetRelid(rri->ri_IndexRelationDescs[i]);
		shape->predicates[shape->npredicates] =
			(List *) expression_planner((Expr *) copyObject(info->ii_Predicate));
		shape->npredicates++;
	}
	MemoryContextSwitchTo(old);
	shape->relid = relid;
	shape->valid = true;
	return shape;
}

/* True when rel has a trigger that an INSERT fires. */
static bool
has_insert_triggers(Relation rel)
{
	TriggerDesc *t = rel->trigdesc;

	return t != NULL &&
		(t->trig_insert_before_row || t->trig_insert_after_row || t->trig_insert_instead_row ||
		 t->trig_insert_before_statement || t->trig_insert_after_statement ||
		 t->trig_insert_new_table);
}

/*
 * True when inserting into rel takes more than row_writer does.  Triggers
 * that an INSERT does not fire (those that enforce another table's foreign
 * key to this one on UPDATE and DELETE) do not count.
 */
static bool
needs_executor(Relation rel)
{
	TupleDesc	desc = RelationGetDescr(rel);

	return rel->rd_rel->relkind != RELKIND_RELATION ||
		rel->rd_rel->relispartition ||	/* its partition constraint */
		rel->rd_rules != NULL ||
		XactReadOnly ||			/* the statement raises the error */
		has_insert_triggers(rel) ||
		(desc->constr != NULL && desc->constr->has_generated_stored) ||
		check_enable_rls(RelationGetRelid(rel), InvalidOid, true) == RLS_ENABLED;
}

RowWriter *
row_writer_open(const char *table, const char *const *columns, int ncolumns)
{
	Oid			relid = notiflow_relid(table);
	Relation	rel;
	TupleDesc	desc;
	RowWriter  *w;
	RelationShape *shape;
	bool	   *given;
	MemoryContext old;

	if (!OidIsValid(relid) || pg_class_aclcheck(relid, GetUserId(), ACL_INSERT) != ACLCHECK_OK)
		return NULL;

	rel = table_open(relid, RowExclusiveLock);
	if (needs_executor(rel))
	{
		table_close(rel, NoLock);
		return NULL;
	}
	desc = RelationGetDescr(rel);

	w = palloc0(sizeof(RowWriter));
	w->rel = rel;
	w->ncolumns = ncolumns;
	w->attnums = palloc(sizeof(AttrNumber) * ncolumns);
	given = palloc0(sizeof(bool) * desc->natts);
	for (int i = 0; i < ncolumns; i++)
	{
		AttrNumber	a = attnameAttNum(rel, columns[i], false);

		if (a <= 0 || a > desc->natts)
		{
			table_close(rel, NoLock);
			return NULL;
		}
		w->attnums[i] = a;
		given[a - 1] = true;
	}

	w->estate = CreateExecutorState();
	w->rri = makeNode(ResultRelInfo);
	InitResultRelInfo(w->rri, rel, 0, NULL, 0);
	ExecOpenIndices(w->rri, false);
	w->slot = ExecInitExtraTupleSlot(w->estate, desc, table_slot_callbacks(rel));

	/* the expression states: defaults of the columns not given, every check */
	shape = shape_for(rel, w->rri);
	w->default_attnums = palloc(sizeof(AttrNumber) * desc->natts);
	w->defaults = palloc(sizeof(ExprState *) * desc->natts);
	old = MemoryContextSwitchTo(w->estate->es_query_cxt);
	for (int a = 1; a <= shape->natts && a <= desc->natts; a++)
	{
		if (given[a - 1] || shape->defaults[a - 1] == NULL)
			continue;
		w->default_attnums[w->ndefaults] = a;
		w->defaults[w->ndefaults] = ExecInitExpr(copyObject(shape->defaults[a - 1]), NULL);
		w->ndefaults++;
	}
	if (shape->ncheck > 0)
	{
		/* what ExecConstraints would otherwise parse and plan on its first row */
		w->rri->ri_ConstraintExprs = palloc0(sizeof(ExprState *) * shape->ncheck);
		for (int c = 0; c < shape->ncheck; c++)
			w->rri->ri_ConstraintExprs[c] = ExecInitExpr(copyObject(shape->checks[c]), NULL);
	}
	/* and what ExecInsertIndexTuples would for the partial indexes' predicates */
	for (int i = 0; i < w->rri->ri_NumIndices; i++)
	{
		Oid			indexid = RelationGetRelid(w->rri->ri_IndexRelationDescs[i]);

		for (int p = 0; p < shape->npredicates; p++)
			if (shape->predicate_indexes[p] == indexid)
				w->rri->ri_IndexRelationInfo[i]->ii_PredicateState =
					ExecInitQual(copyObject(shape->predicates[p]), NULL);
	}
	MemoryContextSwitchTo(old);
	pfree(given);
	w->cid = GetCurrentCommandId(true);
	return w;
}

void
row_writer_insert(RowWriter *w, const Datum *values, const bool *nulls)
{
	TupleTableSlot *slot = w->slot;
	ExprContext *econtext = GetPerTupleExprContext(w->estate);
	int			natts = slot->tts_tupleDescriptor->natts;
	MemoryContext old;

	CHECK_FOR_INTERRUPTS();
	ResetPerTupleExprContext(w->estate);
	ExecClearTuple(slot);
	for (int a = 0; a < natts; a++)
	{
		slot->tts_values[a] = (Datum) 0;
		slot->tts_isnull[a] = true;
	}
	for (int i = 0; i < w->ncolumns; i++)
	{
		slot->tts_values[w->attnums[i] - 1] = values[i];
		slot->tts_isnull[w->attnums[i] - 1] = nulls != NULL && nulls[i];
	}
	old = MemoryContextSwitchTo(econtext->ecxt_per_tuple_memory);
	for (int d = 0; d < w->ndefaults; d++)
	{
		AttrNumber	a = w->default_attnums[d];

		slot->tts_values[a - 1] = ExecEvalExpr(w->defaults[d], econtext, &slot->tts_isnull[a - 1]);
	}
	MemoryContextSwitchTo(old);
	ExecStoreVirtualTuple(slot);

	if (w->rel->rd_att->constr != NULL)
		ExecConstraints(w->rri, slot, w->estate);
	table_tuple_insert(w->rel, slot, w->cid, 0, NULL);
	if (w->rri->ri_NumIndices > 0)
		list_free(ExecInsertIndexTuples(w->rri, slot, w->estate, false, false, NULL, NIL));
}

void
row_writer_close(RowWriter *w)
{
	ExecCloseIndices(w->rri);
	ExecResetTupleTable(w->estate->es_tupleTable, false);
	FreeExecutorState(w->estate);
	table_close(w->rel, NoLock);
	pfree(w->attnums);
	pfree(w->default_attnums);
	pfree(w->defaults);
	pfree(w);
	/* later statements of the transaction see the rows */
	CommandCounterIncrement();
}
