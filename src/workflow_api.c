/*
 * workflow_api.c — SQL functions for workflow definitions:
 * notiflow.put_workflow(key, definition) and notiflow.validate_workflow(definition).
 */
#include "postgres.h"

#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"

#include "jsonb_util.h"
#include "workflow_definition.h"
#include "workflow_repo.h"

PG_FUNCTION_INFO_V1(put_workflow);
PG_FUNCTION_INFO_V1(validate_workflow);

/* Validates a definition and stores it as the workflow's new current version. */
Datum
put_workflow(PG_FUNCTION_ARGS)
{
	char	   *key;
	Jsonb	   *definition;
	List	   *problems = NIL;
	WorkflowDefinition *def;
	char	   *name;
	int			version;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("workflow key must not be null"),
				 errdetail("key: required")));
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("workflow definition must not be null"),
				 errdetail("definition: required")));
	key = text_to_cstring(PG_GETARG_TEXT_PP(0));
	definition = PG_GETARG_JSONB_P(1);

	{
		bool		ok = key[0] != '\0' && strlen(key) <= 128 &&
			((key[0] >= 'a' && key[0] <= 'z') || (key[0] >= 'A' && key[0] <= 'Z') ||
			 (key[0] >= '0' && key[0] <= '9'));

		for (const char *p = key; *p && ok; p++)
			ok = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
				(*p >= '0' && *p <= '9') || strchr("_.:-", *p) != NULL;
		if (!ok)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid workflow key \"%s\"", key),
					 errdetail("key: expected 1-128 letters, digits or _.:- starting with a letter or digit")));
	}

	def = workflow_definition_compile(definition, CurrentMemoryContext, &problems, false);
	if (def == NULL)
	{
		StringInfoData detail;
		ListCell   *lc;

		initStringInfo(&detail);
		foreach(lc, problems)
		{
			DefinitionProblem *p = lfirst(lc);

			appendStringInfo(&detail, "%s%s: %s", detail.len ? "\n" : "",
							 p->path[0] ? p->path : "definition", p->message);
		}
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid workflow definition for \"%s\": %d problem%s",
						key, list_length(problems), list_length(problems) == 1 ? "" : "s"),
				 errdetail("%s", detail.data),
				 errhint("notiflow.validate_workflow(definition) lists the problems as rows.")));
	}
	name = def->name ? def->name : key;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "notiflow: SPI_connect failed");
	version = workflow_repo_put(key, name, definition);
	SPI_finish();
	workflow_definition_free(def);
	PG_RETURN_INT32(version);
}

/* Returns one row (path, message) per problem of a definition; none when it is valid. */
Datum
validate_workflow(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	List	   *problems = NIL;
	WorkflowDefinition *def;
	ListCell   *lc;

	InitMaterializedSRF(fcinfo, 0);
	if (PG_ARGISNULL(0))
	{
		Datum		values[2] = {CStringGetTextDatum("definition"), CStringGetTextDatum("required")};
		bool		nulls[2] = {false, false};

		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
		return (Datum) 0;
	}
	def = workflow_definition_compile(PG_GETARG_JSONB_P(0), CurrentMemoryContext, &problems, false);
	if (def != NULL)
		workflow_definition_free(def);
	foreach(lc, problems)
	{
		DefinitionProblem *p = lfirst(lc);
		Datum		values[2];
		bool		nulls[2] = {false, false};

		values[0] = CStringGetTextDatum(p->path);
		values[1] = CStringGetTextDatum(p->message);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
