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
 * The column defaults, CHECK constraints, indexes' IndexInfo and partial
 * indexes' predicates are read and planned once per table and backend
 * (RelationShape), and again after a relcache invalidation of the table or of
 * one of its indexes (ALTER TABLE, CREATE INDEX) or a change of any function
 * (planning may inline one).  When those expressions are known to be safe to
 * keep (built-in functions, nothing that keeps memory of one executor state:
 * not_reusable), their expression states are built once too and an open only
 * locks the table and its indexes; otherwise each open builds them.  With
 * such a shape, a partial index is opened only when a row enters it
 * (LazyIndex).
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/transam.h"
#include "access/xact.h"
#include "catalog/index.h"
#include "catalog/pg_class.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "miscadmin.h"
#include "nodes/execnodes.h"
#include "nodes/nodeFuncs.h"
#include "optimizer/optimizer.h"
#include "parser/parse_relation.h"
#include "rewrite/rewriteHandler.h"
#include "storage/proc.h"
#include "utils/acl.h"
#include "utils/inval.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/resowner.h"
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
	const AttrNumber *attnums;	/* per given column */
	int			ndefaults;
	const AttrNumber *default_attnums;	/* columns not given that have a default */
	ExprState **defaults;
	CommandId	cid;
	int			nlazy;
	struct LazyIndex *lazy;		/* partial indexes opened on first use */
	ResourceOwner owner;		/* the open's: a lazy index belongs to it too */
};

/* What a writer of one list of columns needs: their attribute numbers, the defaults of the rest. */
typedef struct ColumnSet
{
	const char *const *columns; /* the caller's array: the key */
	int			ncolumns;
	AttrNumber *attnums;
	int			ndefaults;
	AttrNumber *default_attnums;
	ExprState **default_states; /* when the shape is reusable */
} ColumnSet;

/* An index of the table: its IndexInfo and its predicate, planned. */
typedef struct ShapeIndex
{
	Oid			indexid;
	IndexInfo  *info;
	List	   *predicate;		/* NIL: not partial */
	ExprState  *predicate_state;	/* when the shape is reusable */
	bool		unique;
	bool		lazy;			/* partial, no deferred or exclusion check: see LazyIndex */
} ShapeIndex;

/*
 * A partial index that a writer opens (and locks) only when a row satisfies
 * its predicate: most rows of notiflow's tables enter few of them (no
 * idempotency key, no wake-up time, no provider message id yet), and a
 * trigger would otherwise lock and close three indexes it never touches.
 * Leaving their locks out is safe because every change that could make the
 * shape wrong conflicts with the table's own RowExclusiveLock or waits for
 * its holders (DROP INDEX, REINDEX, and the CONCURRENTLY forms), and the
 * lock is taken before the index is read or written.
 */
typedef struct LazyIndex
{
	Oid			indexid;
	bool		unique;
	const IndexInfo *shape_info;	/* the shape's: copied on open */
	ExprState  *predicate_state;	/* the shape's */
	Relation	index;			/* NULL until a row needs it */
	IndexInfo  *info;
} LazyIndex;

/* A table's defaults, checks and indexes, planned. */
typedef struct RelationShape
{
	Oid			relid;
	bool		valid;
	MemoryContext cxt;
	LocalTransactionId used_lxid;	/* a writer of this transaction uses it */
	int			natts;
	Expr	  **defaults;		/* per attribute; NULL: no default */
	int			ncheck;
	Expr	  **checks;			/* per TupleConstr check, in its order */
	int			nindexes;
	ShapeIndex *indexes;

	/*
	 * Reusable: every expression calls built-in functions only, so their
	 * states are built once and kept across transactions (a user function
	 * may keep state of its own transaction in them: those are built for
	 * every writer).
	 */
	bool		reusable;
	ExprState **check_states;
#define MAX_COLUMN_SETS 4
	int			ncolumnsets;
	ColumnSet	columnsets[MAX_COLUMN_SETS];
} RelationShape;

#define MAX_SHAPES 8
static RelationShape shapes[MAX_SHAPES];
static bool callback_registered = false;

/* Bumped by every invalidation callback: one that arrives while a shape is built makes it stale. */
static uint64 invalidations = 0;

/* A relcache invalidation of a table or of one of its indexes (InvalidOid: all). */
static void
shape_invalidate(Datum arg, Oid relid)
{
	invalidations++;
	for (int i = 0; i < MAX_SHAPES; i++)
	{
		if (relid == InvalidOid || shapes[i].relid == relid)
			shapes[i].valid = false;
		for (int x = 0; x < shapes[i].nindexes && shapes[i].valid; x++)
			if (shapes[i].indexes[x].indexid == relid)
				shapes[i].valid = false;
	}
}

/*
 * A function or a type changed: planning may have inlined or folded it into
 * a shape (a cast to a domain without constraints becomes a relabeling).
 */
static void
shape_invalidate_all(Datum arg, int cacheid, uint32 hashvalue)
{
	shape_invalidate(arg, InvalidOid);
}

/* check_functions_in_node's callback: a function that is not built in. */
static bool
user_function(Oid funcid, void *context)
{
	return funcid >= FirstNormalObjectId;
}

/*
 * True when node's expression state must not outlive one writer: a function
 * that is not built in (it may keep state of its own transaction), or a node
 * whose evaluation keeps memory of the writer's executor state (a hashed
 * "IN (...)" builds its table there), or one not known to be harmless.
 */
static bool
not_reusable(Node *node, void *context)
{
	if (node == NULL)
		return false;
	switch (nodeTag(node))
	{
		case T_Var:
			/* a whole-row Var keeps its tuple descriptor in per-query memory */
			if (((Var *) node)->varattno <= 0)
				return true;
			break;
		case T_List:
		case T_Const:
		case T_FuncExpr:
		case T_OpExpr:
		case T_DistinctExpr:
		case T_NullIfExpr:
		case T_BoolExpr:
		case T_NullTest:
		case T_BooleanTest:
		case T_RelabelType:
		case T_CoerceViaIO:
		case T_NextValueExpr:
		case T_SQLValueFunction:
		case T_CaseExpr:
		case T_CaseWhen:
		case T_CaseTestExpr:
		case T_CoalesceExpr:
		case T_ArrayExpr:
			break;
		case T_ScalarArrayOpExpr:
			if (OidIsValid(((ScalarArrayOpExpr *) node)->hashfuncid))
				return true;
			break;
		default:
			return true;
	}
	if (check_functions_in_node(node, user_function, context))
		return true;
	return expression_tree_walker(node, not_reusable, context);
}

/* Registers the invalidation callbacks, once per backend. */
static void
register_callbacks(void)
{
	if (!callback_registered)
	{
		CacheRegisterRelcacheCallback(shape_invalidate, (Datum) 0);
		CacheRegisterSyscacheCallback(PROCOID, shape_invalidate_all, (Datum) 0);
		CacheRegisterSyscacheCallback(TYPEOID, shape_invalidate_all, (Datum) 0);
		callback_registered = true;
	}
}

/* rel's valid shape for the index list index_oids (in RelationGetIndexList's order), or NULL. */
static RelationShape *
shape_find(Relation rel, List *index_oids)
{
	Oid			relid = RelationGetRelid(rel);
	TupleDesc	desc = RelationGetDescr(rel);

	register_callbacks();
	for (int i = 0; i < MAX_SHAPES; i++)
	{
		RelationShape *shape = &shapes[i];
		bool		same = true;
		int			x = 0;
		ListCell   *lc;

		if (shape->relid != relid || !shape->valid || shape->natts != desc->natts ||
			shape->nindexes != list_length(index_oids) ||
			shape->ncheck != (desc->constr ? desc->constr->num_check : 0))
			continue;
		foreach(lc, index_oids)
			same &= shape->indexes[x++].indexid == lfirst_oid(lc);
		if (!same)
			continue;
		shape->used_lxid = MyProc->lxid;
		return shape;
	}
	return NULL;
}

/*
 * Plans rel's shape (there is none, or it was invalidated); indexes are rel's
 * open indexes, in RelationGetIndexList's order.
 */
static RelationShape *
shape_build(Relation rel, Relation *indexes, int nindexes)
{
	Oid			relid = RelationGetRelid(rel);
	TupleDesc	desc = RelationGetDescr(rel);
	RelationShape *shape = NULL;
	MemoryContext old;
	bool		not_reusable_found = false;
	uint64		seen;

	register_callbacks();
	for (int i = 0; i < MAX_SHAPES && shape == NULL; i++)
		if (shapes[i].relid == relid || !shapes[i].valid)
			shape = &shapes[i];
	if (shape == NULL)
		shape = &shapes[0];

	if (shape->cxt)
	{
		/* a writer of this transaction may still use it: freed when the transaction ends */
		if (shape->used_lxid == MyProc->lxid)
			MemoryContextSetParent(shape->cxt, TopTransactionContext);
		else
			MemoryContextDelete(shape->cxt);
	}
	memset(shape, 0, sizeof(RelationShape));
	seen = invalidations;
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
		{
			shape->defaults[a - 1] = expression_planner((Expr *) expr);
			not_reusable_found |= not_reusable((Node *) shape->defaults[a - 1], NULL);
		}
	}
	shape->ncheck = desc->constr ? desc->constr->num_check : 0;
	shape->checks = palloc0(sizeof(Expr *) * Max(shape->ncheck, 1));
	/* NOT VALID ones too: they hold for new rows */
	for (int c = 0; c < shape->ncheck; c++)
	{
		shape->checks[c] = expression_planner(stringToNode(desc->constr->check[c].ccbin));
		not_reusable_found |= not_reusable((Node *) shape->checks[c], NULL);
	}
	shape->nindexes = nindexes;
	shape->indexes = palloc0(sizeof(ShapeIndex) * Max(nindexes, 1));
	for (int i = 0; i < nindexes; i++)
	{
		ShapeIndex *si = &shape->indexes[i];

		si->indexid = RelationGetRelid(indexes[i]);
		si->info = BuildIndexInfo(indexes[i]);
		si->unique = indexes[i]->rd_index->indisunique;
		si->lazy = si->info->ii_Predicate != NIL && si->info->ii_ExclusionOps == NULL &&
			(!si->unique || indexes[i]->rd_index->indimmediate);
		not_reusable_found |= not_reusable((Node *) si->info->ii_Expressions, NULL);
		if (si->info->ii_Predicate != NIL)
		{
			si->predicate = (List *) expression_planner((Expr *) copyObject(si->info->ii_Predicate));
			not_reusable_found |= not_reusable((Node *) si->predicate, NULL);
		}
	}
	shape->reusable = !not_reusable_found;
	if (shape->reusable)
	{
		shape->check_states = palloc0(sizeof(ExprState *) * Max(shape->ncheck, 1));
		for (int c = 0; c < shape->ncheck; c++)
			shape->check_states[c] = ExecInitExpr(shape->checks[c], NULL);
		for (int i = 0; i < nindexes; i++)
			if (shape->indexes[i].predicate != NIL)
				shape->indexes[i].predicate_state = ExecInitQual(shape->indexes[i].predicate, NULL);
	}
	MemoryContextSwitchTo(old);
	shape->relid = relid;
	/* an invalidation during the build (catalog reads accept them): good for this writer only */
	shape->valid = (invalidations == seen);
	shape->used_lxid = MyProc->lxid;
	return shape;
}

/* The shape's column set for columns, made on first use; NULL when a column is missing. */
static ColumnSet *
column_set(RelationShape *shape, Relation rel, const char *const *columns, int ncolumns)
{
	ColumnSet  *cs;
	AttrNumber *attnums;
	bool	   *given;
	MemoryContext old;

	for (int i = 0; i < shape->ncolumnsets; i++)
		if (shape->columnsets[i].columns == columns && shape->columnsets[i].ncolumns == ncolumns)
			return &shape->columnsets[i];
	if (shape->ncolumnsets == MAX_COLUMN_SETS)
		return NULL;

	/* the columns first, in the caller's memory: a missing one leaves nothing in the shape */
	attnums = palloc(sizeof(AttrNumber) * Max(ncolumns, 1));
	given = palloc0(sizeof(bool) * shape->natts);
	for (int i = 0; i < ncolumns; i++)
	{
		AttrNumber	a = attnameAttNum(rel, columns[i], false);

		if (a <= 0 || a > shape->natts)
			return NULL;
		attnums[i] = a;
		given[a - 1] = true;
	}

	old = MemoryContextSwitchTo(shape->cxt);
	cs = &shape->columnsets[shape->ncolumnsets];
	memset(cs, 0, sizeof(ColumnSet));
	cs->columns = columns;
	cs->ncolumns = ncolumns;
	cs->attnums = palloc(sizeof(AttrNumber) * Max(ncolumns, 1));
	memcpy(cs->attnums, attnums, sizeof(AttrNumber) * ncolumns);
	cs->default_attnums = palloc(sizeof(AttrNumber) * shape->natts);
	cs->default_states = palloc0(sizeof(ExprState *) * shape->natts);
	for (int a = 1; a <= shape->natts; a++)
	{
		if (given[a - 1] || shape->defaults[a - 1] == NULL)
			continue;
		if (shape->reusable)
			cs->default_states[cs->ndefaults] = ExecInitExpr(shape->defaults[a - 1], NULL);
		cs->default_attnums[cs->ndefaults++] = a;
	}
	MemoryContextSwitchTo(old);
	shape->ncolumnsets++;
	return cs;
}

/*
 * Opens the indexes of index_oids (rel's, in RelationGetIndexList's order)
 * for rri as ExecOpenIndices does, without building their IndexInfo: the
 * shape's are copied once it is known (use_shape_indexes).  With a reusable
 * shape, its lazy partial indexes are left to w's LazyIndex list instead.
 */
static void
open_indexes(RowWriter *w, List *index_oids, RelationShape *shape)
{
	ResultRelInfo *rri = w->rri;
	int			n = list_length(index_oids);
	int			i = 0;
	int			x = 0;
	ListCell   *lc;

	rri->ri_NumIndices = 0;
	if (n == 0)
		return;
	rri->ri_IndexRelationDescs = palloc(sizeof(Relation) * n);
	rri->ri_IndexRelationInfo = palloc0(sizeof(IndexInfo *) * n);
	foreach(lc, index_oids)
	{
		ShapeIndex *si = shape ? &shape->indexes[x++] : NULL;

		if (si != NULL && shape->reusable && si->lazy)
		{
			LazyIndex  *l;

			if (w->lazy == NULL)
				w->lazy = palloc0(sizeof(LazyIndex) * n);
			l = &w->lazy[w->nlazy++];
			l->indexid = si->indexid;
			l->unique = si->unique;
			l->shape_info = si->info;
			l->predicate_state = si->predicate_state;
			continue;
		}
		rri->ri_IndexRelationDescs[i++] = index_open(lfirst_oid(lc), RowExclusiveLock);
	}
	rri->ri_NumIndices = i;
}

/* Inserts the slot's index entries into the lazy partial indexes whose predicate it satisfies. */
static void
insert_lazy(RowWriter *w, TupleTableSlot *slot)
{
	ExprContext *econtext = GetPerTupleExprContext(w->estate);
	MemoryContext old = MemoryContextSwitchTo(econtext->ecxt_per_tuple_memory);

	econtext->ecxt_scantuple = slot;
	for (int i = 0; i < w->nlazy; i++)
	{
		LazyIndex  *l = &w->lazy[i];
		Datum		values[INDEX_MAX_KEYS];
		bool		isnull[INDEX_MAX_KEYS];

		if (!l->shape_info->ii_ReadyForInserts || !ExecQual(l->predicate_state, econtext))
			continue;
		if (l->index == NULL)
		{
			MemoryContext query = MemoryContextSwitchTo(w->estate->es_query_cxt);
			ResourceOwner owner = CurrentResourceOwner;

			/* owned like the indexes row_writer_open opened, whatever (sub)transaction inserts */
			CurrentResourceOwner = w->owner;
			l->index = index_open(l->indexid, RowExclusiveLock);
			CurrentResourceOwner = owner;
			/* a copy, as use_shape_indexes makes */
			l->info = palloc(sizeof(IndexInfo));
			memcpy(l->info, l->shape_info, sizeof(IndexInfo));
			l->info->ii_ExpressionsState = NIL;
			l->info->ii_AmCache = NULL;
			l->info->ii_Context = CurrentMemoryContext;
			l->info->ii_PredicateState = l->predicate_state;
			MemoryContextSwitchTo(query);
		}
		FormIndexDatum(l->info, slot, w->estate, values, isnull);
		index_insert(l->index, values, isnull, &slot->tts_tid, w->rel,
					 l->unique ? UNIQUE_CHECK_YES : UNIQUE_CHECK_NO, false, l->info);
	}
	MemoryContextSwitchTo(old);
}

/* Gives rri's open indexes their IndexInfo and predicate state, from the shape. */
static void
use_shape_indexes(ResultRelInfo *rri, RelationShape *shape)
{
	for (int i = 0; i < rri->ri_NumIndices; i++)
	{
		Oid			indexid = RelationGetRelid(rri->ri_IndexRelationDescs[i]);
		ShapeIndex *si = NULL;
		IndexInfo  *info;

		for (int x = 0; x < shape->nindexes && si == NULL; x++)
			if (shape->indexes[x].indexid == indexid)
				si = &shape->indexes[x];
		if (si == NULL)
		{
			rri->ri_IndexRelationInfo[i] = BuildIndexInfo(rri->ri_IndexRelationDescs[i]);
			continue;
		}
		/* a copy: the access method keeps per-statement state in it (ii_AmCache) */
		info = palloc(sizeof(IndexInfo));
		memcpy(info, si->info, sizeof(IndexInfo));
		info->ii_ExpressionsState = NIL;
		info->ii_AmCache = NULL;
		info->ii_Context = CurrentMemoryContext;
		if (si->predicate != NIL)
			info->ii_PredicateState = si->predicate_state ? si->predicate_state :
				ExecInitQual(copyObject(si->predicate), NULL);
		rri->ri_IndexRelationInfo[i] = info;
	}
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
	RowWriter  *w;
	RelationShape *shape;
	ColumnSet  *cs;
	MemoryContext old;
	List	   *index_oids;

	if (!OidIsValid(relid) || pg_class_aclcheck(relid, GetUserId(), ACL_INSERT) != ACLCHECK_OK)
		return NULL;

	rel = table_open(relid, RowExclusiveLock);
	if (needs_executor(rel))
	{
		table_close(rel, NoLock);
		return NULL;
	}

	w = palloc0(sizeof(RowWriter));
	w->rel = rel;
	w->owner = CurrentResourceOwner;
	w->estate = CreateExecutorState();
	w->rri = makeNode(ResultRelInfo);
	InitResultRelInfo(w->rri, rel, 0, NULL, 0);
	index_oids = RelationGetForm(rel)->relhasindex ? RelationGetIndexList(rel) : NIL;
	shape = shape_find(rel, index_oids);
	open_indexes(w, index_oids, shape);
	if (shape == NULL)
		shape = shape_build(rel, w->rri->ri_IndexRelationDescs, w->rri->ri_NumIndices);
	list_free(index_oids);
	cs = column_set(shape, rel, columns, ncolumns);
	if (cs == NULL)
	{
		ExecCloseIndices(w->rri);
		FreeExecutorState(w->estate);
		table_close(rel, NoLock);
		if (w->lazy)
			pfree(w->lazy);
		pfree(w);
		return NULL;
	}
	use_shape_indexes(w->rri, shape);
	w->slot = ExecInitExtraTupleSlot(w->estate, RelationGetDescr(rel), table_slot_callbacks(rel));
	w->ncolumns = ncolumns;
	w->attnums = cs->attnums;
	w->ndefaults = cs->ndefaults;
	w->default_attnums = cs->default_attnums;

	/* the expression states: kept in the shape, or built for this writer */
	old = MemoryContextSwitchTo(w->estate->es_query_cxt);
	if (shape->reusable)
		w->defaults = cs->default_states;
	else
	{
		w->defaults = palloc(sizeof(ExprState *) * Max(cs->ndefaults, 1));
		for (int d = 0; d < cs->ndefaults; d++)
			w->defaults[d] = ExecInitExpr(copyObject(shape->defaults[cs->default_attnums[d] - 1]), NULL);
	}
	if (shape->ncheck > 0)
	{
		/* what ExecConstraints would otherwise parse and plan on its first row */
		if (shape->reusable)
			w->rri->ri_ConstraintExprs = shape->check_states;
		else
		{
			w->rri->ri_ConstraintExprs = palloc0(sizeof(ExprState *) * shape->ncheck);
			for (int c = 0; c < shape->ncheck; c++)
				w->rri->ri_ConstraintExprs[c] = ExecInitExpr(copyObject(shape->checks[c]), NULL);
		}
	}
	MemoryContextSwitchTo(old);
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
	if (w->nlazy > 0)
		insert_lazy(w, slot);
}

void
row_writer_close(RowWriter *w)
{
	ExecCloseIndices(w->rri);
	for (int i = 0; i < w->nlazy; i++)
		if (w->lazy[i].index != NULL)
			index_close(w->lazy[i].index, RowExclusiveLock);	/* as ExecCloseIndices does */
	ExecResetTupleTable(w->estate->es_tupleTable, false);
	FreeExecutorState(w->estate);
	table_close(w->rel, NoLock);
	pfree(w);
	/* later statements of the transaction see the rows */
	CommandCounterIncrement();
}
