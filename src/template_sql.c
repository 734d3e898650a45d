/*
 * template_sql.c — SQL access to the Mustache engine:
 * notiflow.render_template(template text, context jsonb, partials jsonb).
 *
 * The function lets users try templates (and the tests run the Mustache
 * specification) without a workflow.  It parses through template.c like the
 * workflow compiler does, and keeps the last parsed template and partial set
 * in fn_extra, each in its own memory context under fn_mcxt, so a query that
 * renders the same template for many rows parses it once.  A cache entry is
 * replaced (and its context deleted) when a call brings a different template
 * or partial set.
 */
#include "postgres.h"

#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"

#include "template.h"

/* What one call site of render_template keeps between calls. */
typedef struct RenderTemplateCache
{
	MemoryContext template_cxt; /* holds template_src and tmpl */
	text	   *template_src;
	Template   *tmpl;
	MemoryContext partials_cxt; /* holds partials_src and partials */
	Jsonb	   *partials_src;	/* NULL when called without partials */
	TemplatePartials *partials;
} RenderTemplateCache;

static bool varlena_equal(const struct varlena *a, const struct varlena *b);
static const Template *cached_template(FunctionCallInfo fcinfo,
									   RenderTemplateCache *cache, text *src);
static const TemplatePartials *cached_partials(FunctionCallInfo fcinfo,
											   RenderTemplateCache *cache,
											   Jsonb *src);

PG_FUNCTION_INFO_V1(render_template);

/* Tells whether two detoasted values hold the same bytes. */
static bool
varlena_equal(const struct varlena *a, const struct varlena *b)
{
	return VARSIZE_ANY_EXHDR(a) == VARSIZE_ANY_EXHDR(b) &&
		memcmp(VARDATA_ANY(a), VARDATA_ANY(b), VARSIZE_ANY_EXHDR(a)) == 0;
}

/* Returns the parsed template for src, parsing only when it changed. */
static const Template *
cached_template(FunctionCallInfo fcinfo, RenderTemplateCache *cache, text *src)
{
	MemoryContext cxt;
	MemoryContext oldcxt;
	Template   *tmpl;
	char	   *error = NULL;

	if (cache->tmpl != NULL &&
		varlena_equal((struct varlena *) cache->template_src,
					  (struct varlena *) src))
		return cache->tmpl;

	cxt = AllocSetContextCreate(fcinfo->flinfo->fn_mcxt,
								"notiflow render_template template",
								ALLOCSET_SMALL_SIZES);
	oldcxt = MemoryContextSwitchTo(cxt);
	tmpl = template_parse(text_to_cstring(src), &error);
	MemoryContextSwitchTo(oldcxt);

	if (tmpl == NULL)
	{
		char	   *message = pstrdup(error);

		MemoryContextDelete(cxt);
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid template"),
				 errdetail("%s", message)));
	}

	if (cache->template_cxt != NULL)
		MemoryContextDelete(cache->template_cxt);
	cache->template_cxt = cxt;
	cache->template_src = (text *) MemoryContextAlloc(cxt, VARSIZE_ANY(src));
	memcpy(cache->template_src, src, VARSIZE_ANY(src));
	cache->tmpl = tmpl;
	return tmpl;
}

/* Returns the compiled partial set for src, compiling only when it changed. */
static const TemplatePartials *
cached_partials(FunctionCallInfo fcinfo, RenderTemplateCache *cache, Jsonb *src)
{
	MemoryContext cxt;
	MemoryContext oldcxt;
	TemplatePartials *partials;
	char	   *error = NULL;

	if (cache->partials != NULL &&
		(src == NULL ? cache->partials_src == NULL :
		 cache->partials_src != NULL &&
		 varlena_equal((struct varlena *) cache->partials_src,
					   (struct varlena *) src)))
		return cache->partials;

	cxt = AllocSetContextCreate(fcinfo->flinfo->fn_mcxt,
								"notiflow render_template partials",
								ALLOCSET_SMALL_SIZES);
	oldcxt = MemoryContextSwitchTo(cxt);
	partials = template_partials_compile(src, &error);
	MemoryContextSwitchTo(oldcxt);

	if (partials == NULL)
	{
		char	   *message = pstrdup(error);

		MemoryContextDelete(cxt);
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid partials"),
				 errdetail("%s", message)));
	}

	if (cache->partials_cxt != NULL)
		MemoryContextDelete(cache->partials_cxt);
	cache->partials_cxt = cxt;
	cache->partials_src = NULL;
	if (src != NULL)
	{
		cache->partials_src = (Jsonb *) MemoryContextAlloc(cxt, VARSIZE(src));
		memcpy(cache->partials_src, src, VARSIZE(src));
	}
	cache->partials = partials;
	return partials;
}

/*
 * Renders a template against a jsonb context with optional partials.  A NULL
 * template gives NULL; a NULL context renders every name as missing.
 */
Datum
render_template(PG_FUNCTION_ARGS)
{
	RenderTemplateCache *cache;
	const Template *tmpl;
	const TemplatePartials *partials;
	Jsonb	   *context;
	char	   *result;

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();

	cache = fcinfo->flinfo->fn_extra;
	if (cache == NULL)
	{
		cache = MemoryContextAllocZero(fcinfo->flinfo->fn_mcxt,
									   sizeof(RenderTemplateCache));
		fcinfo->flinfo->fn_extra = cache;
	}

	tmpl = cached_template(fcinfo, cache, PG_GETARG_TEXT_PP(0));
	partials = cached_partials(fcinfo, cache,
							   PG_ARGISNULL(2) ? NULL : PG_GETARG_JSONB_P(2));
	context = PG_ARGISNULL(1) ? NULL : PG_GETARG_JSONB_P(1);

	result = template_render(tmpl, context, partials);
	PG_RETURN_TEXT_P(cstring_to_text(result));
}
