/*
 * template.c — the Mustache template engine: parser and renderer.
 *
 * template_parse() turns a template source into a tree of nodes (text,
 * variable, section, inverted section, partial) once; template_render()
 * walks that tree many times against a jsonb context.  Comments and
 * set-delimiter tags leave no node: they only affect parsing.
 *
 * Parsing is a single forward scan with an explicit stack of open sections,
 * so it does not recurse.  Standalone tags (a section, inverted, closing,
 * comment, partial or set-delimiter tag alone on its line, apart from spaces
 * and tabs) remove their whole line, newline included, as the specification
 * requires.  A standalone partial keeps the whitespace before it as the
 * indentation of every line of the partial.  So that this indentation can be
 * applied at render time without re-parsing the partial, each text node
 * records whether it begins a source line, and a tag that begins a line gets
 * an empty text node in front of it that carries the mark.
 *
 * Rendering keeps the context stack as a chain of frames on the C stack.
 * Values are jsonb containers walked in place (getKeyJsonValueFromContainer,
 * JsonbIterator); nothing is converted to text and parsed again.  Strings
 * render as themselves, numbers without insignificant trailing zeros,
 * booleans as true/false, null as nothing, objects and arrays as JSON text.
 * template_render() HTML-escapes everything except {{{triple}}} and
 * {{&ampersand}} output, as the specification says; template_render_plain()
 * escapes nothing, for channels whose text is not HTML;
 * template_render_slack() escapes only Slack's markup characters.
 *
 * Scratch allocations of a render live in a private memory context that is
 * deleted before returning; only the result is left in the caller's context.
 */
#include "postgres.h"

#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "nodes/pg_list.h"
#include "utils/memutils.h"
#include "utils/numeric.h"

#include "template.h"

/* Partials may include partials, but not deeper than this. */
#define TEMPLATE_MAX_PARTIAL_DEPTH 64

/*
 * Partials expanded by one render at most: a partial that includes itself
 * twice doubles the work at each level, 2^64 expansions within the depth.
 */
#define TEMPLATE_MAX_PARTIAL_EXPANSIONS 100000

/*
 * Section bodies one render renders at most (once per array element, once
 * for any other truthy value): sections nested over arrays multiply, three
 * levels over 1,000 elements are 10^9 renders even when they output nothing.
 */
#define TEMPLATE_MAX_SECTION_RENDERS 1000000

/* Bytes one render outputs at most: a notification, not a bulk export. */
#define TEMPLATE_MAX_OUTPUT (64 * 1024 * 1024)

typedef enum TemplateNodeKind
{
	TNODE_TEXT,
	TNODE_VARIABLE,
	TNODE_SECTION,
	TNODE_INVERTED,
	TNODE_PARTIAL
} TemplateNodeKind;

/* A possibly dotted name, split into its parts. */
typedef struct TemplateName
{
	int			nparts;			/* 0 for the implicit iterator "." */
	char	  **parts;
	int		   *lens;
} TemplateName;

typedef struct TemplateNode
{
	TemplateNodeKind kind;

	/* TNODE_TEXT: literal bytes, and whether they begin a source line */
	char	   *text;
	int			textlen;
	bool		line_start;

	/* TNODE_VARIABLE, TNODE_SECTION, TNODE_INVERTED */
	TemplateName name;
	bool		escape;			/* TNODE_VARIABLE: HTML-escape the value */
	List	   *children;		/* TNODE_SECTION, TNODE_INVERTED */

	/* TNODE_PARTIAL */
	char	   *partial;
	char	   *indent;			/* NULL unless the tag stands alone */
} TemplateNode;

struct Template
{
	List	   *nodes;
	bool		constant;		/* only text nodes */
};

typedef struct TemplatePartial
{
	char	   *name;
	Template   *tmpl;
} TemplatePartial;

struct TemplatePartials
{
	int			count;
	TemplatePartial *items;		/* sorted by name */
};

/* One tag as read from the source. */
typedef struct TemplateTag
{
	char		type;			/* one of "#^/!>=&{", or 0 for a variable */
	int			start;			/* offset of the opening delimiter */
	int			end;			/* offset just past the closing delimiter */
	char	   *content;		/* content between the delimiters, trimmed */
	bool		standalone;		/* alone on its line */
	int			line_begin;		/* standalone: where its line begins */
	int			line_end;		/* standalone: just past its line's newline */
} TemplateTag;

/* A section whose closing tag has not been read yet. */
typedef struct OpenSection
{
	TemplateNode *node;
	char	   *name;			/* the opening tag's content */
	int			offset;			/* where the opening tag starts */
	List	   *outer;			/* the node list that will receive it */
} OpenSection;

typedef struct TemplateParser
{
	const char *src;
	int			srclen;
	int			pos;			/* first byte not yet consumed */
	char	   *otag;			/* current opening delimiter */
	int			otaglen;
	char	   *ctag;			/* current closing delimiter */
	List	   *nodes;			/* node list being filled */
	List	   *open;			/* OpenSection stack, innermost last */
	char	   *error;
} TemplateParser;

/* One entry of the context stack; the chain runs from top to bottom. */
typedef struct ContextFrame
{
	const JsonbValue *value;
	const struct ContextFrame *parent;
} ContextFrame;

/* What {{name}} escapes in a render. */
typedef enum RenderEscape
{
	ESCAPE_NONE,				/* nothing: plain text */
	ESCAPE_HTML,				/* & < > " ' */
	ESCAPE_SLACK,				/* & < >: Slack's markup */
	ESCAPE_URL					/* percent-encoding but A-Z a-z 0-9 - . _ ~ */
} RenderEscape;

typedef struct RenderState
{
	StringInfo	out;
	const TemplatePartials *partials;
	int			depth;			/* partials currently being expanded */
	long		expansions;		/* partials expanded so far */
	long		section_renders;	/* section bodies rendered so far */
	const char *indent;			/* prefix of each line of the partial */
	int			indentlen;
	RenderEscape escape;		/* what {{name}} escapes */
} RenderState;

static inline bool is_blank(char c);
static char *position_describe(const char *src, int offset);
static bool parser_fail(TemplateParser *p, int offset, const char *what);
static bool parser_read_tag(TemplateParser *p, int start, TemplateTag *tag);
static void parser_check_standalone(TemplateParser *p, TemplateTag *tag);
static void parser_add_text(TemplateParser *p, int from, int to);
static void parser_emit_text(TemplateParser *p, int from, int to,
							 bool before_tag);
static bool parser_read_name(TemplateParser *p, TemplateTag *tag,
							 TemplateName *name);
static bool parser_set_delimiters(TemplateParser *p, TemplateTag *tag);
static bool parser_open_section(TemplateParser *p, TemplateTag *tag);
static bool parser_close_section(TemplateParser *p, TemplateTag *tag);
static bool parser_handle_tag(TemplateParser *p, TemplateTag *tag);
static int	partial_compare(const void *a, const void *b);
static const TemplatePartial *partials_find(const TemplatePartials *partials,
											const char *name);
static bool value_is_truthy(const JsonbValue *value);
static bool value_get_part(const JsonbValue *value, const char *part, int len,
						   JsonbValue *result);
static bool context_lookup(const ContextFrame *ctx, const TemplateName *name,
						   JsonbValue *result);
static void append_escaped(StringInfo out, const char *s, int len,
						   RenderEscape escape);
static void render_value(RenderState *state, const JsonbValue *value,
						 RenderEscape escape);
static void render_text(RenderState *state, const TemplateNode *node);
static void render_section(RenderState *state, const TemplateNode *node,
						   const ContextFrame *ctx);
static void render_partial(RenderState *state, const TemplateNode *node,
						   const ContextFrame *ctx);
static void render_nodes(RenderState *state, const List *nodes,
						 const ContextFrame *ctx);
static char *template_render_tree(const Template *tmpl, Jsonb *context,
								  const TemplatePartials *partials,
								  RenderEscape escape);


/* ---------------------------------------------------------------------------
 * Parsing
 * ---------------------------------------------------------------------------
 */

/* Tells whether c is whitespace inside a tag. */
static inline bool
is_blank(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' ||
		c == '\f' || c == '\v';
}

/* Describes a source offset as "line L, column C" (both counted from 1). */
static char *
position_describe(const char *src, int offset)
{
	int			line = 1;
	int			line_begin = 0;
	int			column;
	int			i;

	for (i = 0; i < offset; i++)
	{
		if (src[i] == '\n')
		{
			line++;
			line_begin = i + 1;
		}
	}
	column = pg_mbstrlen_with_len(src + line_begin, offset - line_begin) + 1;
	return psprintf("line %d, column %d", line, column);
}

/* Records a syntax error "<what> at <position>" and returns false. */
static bool
parser_fail(TemplateParser *p, int offset, const char *what)
{
	p->error = psprintf("%s at %s", what, position_describe(p->src, offset));
	return false;
}

/* Reads the tag whose opening delimiter starts at offset start. */
static bool
parser_read_tag(TemplateParser *p, int start, TemplateTag *tag)
{
	const char *body = p->src + start + p->otaglen;
	const char *closer = p->ctag;
	const char *end;
	const char *cbegin;
	const char *cend;

	memset(tag, 0, sizeof(TemplateTag));
	tag->start = start;
	if (*body != '\0' && strchr("#^/!>=&{", *body) != NULL)
		tag->type = *body++;

	/* {{{name}}} and {{=a b=}} close with one more character */
	if (tag->type == '{')
		closer = psprintf("}%s", p->ctag);
	else if (tag->type == '=')
		closer = psprintf("=%s", p->ctag);

	end = strstr(body, closer);
	if (end == NULL)
		return parser_fail(p, start, "unclosed tag");
	tag->end = (end - p->src) + strlen(closer);

	cbegin = body;
	cend = end;
	while (cbegin < cend && is_blank(*cbegin))
		cbegin++;
	while (cend > cbegin && is_blank(cend[-1]))
		cend--;
	tag->content = pnstrdup(cbegin, cend - cbegin);

	parser_check_standalone(p, tag);
	return true;
}

/* Decides whether the tag is alone on its line, and where that line lies. */
static void
parser_check_standalone(TemplateParser *p, TemplateTag *tag)
{
	const char *src = p->src;
	int			begin = tag->start;
	int			after = tag->end;

	if (tag->type == 0 || tag->type == '&' || tag->type == '{')
		return;

	/* only spaces and tabs between the start of the line and the tag */
	while (begin > 0 && (src[begin - 1] == ' ' || src[begin - 1] == '\t'))
		begin--;
	if (begin > 0 && src[begin - 1] != '\n')
		return;

	/* and between the tag and the end of the line */
	while (after < p->srclen && (src[after] == ' ' || src[after] == '\t'))
		after++;
	if (after < p->srclen)
	{
		if (src[after] == '\n')
			after++;
		else if (src[after] == '\r' && src[after + 1] == '\n')
			after += 2;
		else
			return;
	}

	tag->standalone = true;
	tag->line_begin = begin;
	tag->line_end = after;
}

/* Appends one text node holding the source bytes [from, to). */
static void
parser_add_text(TemplateParser *p, int from, int to)
{
	TemplateNode *node = palloc0(sizeof(TemplateNode));

	node->kind = TNODE_TEXT;
	node->text = pnstrdup(p->src + from, to - from);
	node->textlen = to - from;
	node->line_start = (from == 0 || p->src[from - 1] == '\n');
	p->nodes = lappend(p->nodes, node);
}

/*
 * Appends the source bytes [from, to) as text.  When a tag that begins a line
 * follows, an empty node marks the line start for partial indentation.
 */
static void
parser_emit_text(TemplateParser *p, int from, int to, bool before_tag)
{
	if (from < to)
		parser_add_text(p, from, to);
	if (before_tag && (to == 0 || p->src[to - 1] == '\n'))
		parser_add_text(p, to, to);
}

/* Splits the tag's content into a name: "." or dot-separated parts. */
static bool
parser_read_name(TemplateParser *p, TemplateTag *tag, TemplateName *name)
{
	const char *content = tag->content;
	const char *c;
	int			n = 1;
	int			i;

	if (*content == '\0')
		return parser_fail(p, tag->start, "empty tag");

	name->nparts = 0;
	if (strcmp(content, ".") == 0)
		return true;

	for (c = content; *c != '\0'; c++)
	{
		bool		dot = (*c == '.');

		/* no whitespace, and no empty part before, between or after dots */
		if (is_blank(*c) ||
			(dot && (c == content || c[1] == '\0' || c[1] == '.')))
			return parser_fail(p, tag->start,
							   psprintf("invalid name \"%s\"", content));
		if (dot)
			n++;
	}

	name->nparts = n;
	name->parts = palloc(n * sizeof(char *));
	name->lens = palloc(n * sizeof(int));
	c = content;
	for (i = 0; i < n; i++)
	{
		const char *dot = strchr(c, '.');
		int			len = dot ? (int) (dot - c) : (int) strlen(c);

		name->parts[i] = pnstrdup(c, len);
		name->lens[i] = len;
		c += len + 1;
	}
	return true;
}

/* Applies a {{=open close=}} tag to the parser's delimiters. */
static bool
parser_set_delimiters(TemplateParser *p, TemplateTag *tag)
{
	const char *open = tag->content;
	const char *close;
	int			openlen = 0;
	const char *c;

	while (open[openlen] != '\0' && !is_blank(open[openlen]))
		openlen++;
	close = open + openlen;
	while (is_blank(*close))
		close++;
	for (c = close; *c != '\0' && !is_blank(*c); c++)
		;
	if (openlen == 0 || *close == '\0' || *c != '\0' ||
		memchr(open, '=', openlen) != NULL || strchr(close, '=') != NULL)
		return parser_fail(p, tag->start,
						   psprintf("invalid set-delimiter tag \"%s\" (expected two "
									"delimiters without \"=\", separated by whitespace)",
									tag->content));

	p->otag = pnstrdup(open, openlen);
	p->otaglen = openlen;
	p->ctag = pstrdup(close);
	return true;
}

/* Starts a section or inverted section; its children follow. */
static bool
parser_open_section(TemplateParser *p, TemplateTag *tag)
{
	TemplateNode *node = palloc0(sizeof(TemplateNode));
	OpenSection *open = palloc(sizeof(OpenSection));

	node->kind = (tag->type == '#') ? TNODE_SECTION : TNODE_INVERTED;
	if (!parser_read_name(p, tag, &node->name))
		return false;

	open->node = node;
	open->name = tag->content;
	open->offset = tag->start;
	open->outer = p->nodes;
	p->open = lappend(p->open, open);
	p->nodes = NIL;
	return true;
}

/* Ends the innermost open section, which must have the same name. */
static bool
parser_close_section(TemplateParser *p, TemplateTag *tag)
{
	OpenSection *open;

	if (p->open == NIL)
		return parser_fail(p, tag->start,
						   psprintf("closing tag \"%s\" without an open section",
									tag->content));

	open = llast(p->open);
	if (strcmp(open->name, tag->content) != 0)
		return parser_fail(p, tag->start,
						   psprintf("section \"%s\" opened at %s is closed by \"%s\"",
									open->name,
									position_describe(p->src, open->offset),
									tag->content));

	open->node->children = p->nodes;
	p->nodes = lappend(open->outer, open->node);
	p->open = list_delete_last(p->open);
	return true;
}

/* Turns one tag into nodes, or into a parser state change. */
static bool
parser_handle_tag(TemplateParser *p, TemplateTag *tag)
{
	TemplateNode *node;

	switch (tag->type)
	{
		case '#':
		case '^':
			return parser_open_section(p, tag);
		case '/':
			return parser_close_section(p, tag);
		case '!':
			return true;
		case '=':
			return parser_set_delimiters(p, tag);
		case '>':
			if (tag->content[0] == '\0')
				return parser_fail(p, tag->start, "empty partial name");
			node = palloc0(sizeof(TemplateNode));
			node->kind = TNODE_PARTIAL;
			node->partial = tag->content;
			if (tag->standalone)
				node->indent = pnstrdup(p->src + tag->line_begin,
										tag->start - tag->line_begin);
			p->nodes = lappend(p->nodes, node);
			return true;
		default:
			node = palloc0(sizeof(TemplateNode));
			node->kind = TNODE_VARIABLE;
			node->escape = (tag->type == 0);
			if (!parser_read_name(p, tag, &node->name))
				return false;
			p->nodes = lappend(p->nodes, node);
			return true;
	}
}

/* Parses src into a template tree; see template.h. */
Template *
template_parse(const char *src, char **error)
{
	TemplateParser p;
	Template   *tmpl;
	ListCell   *lc;

	memset(&p, 0, sizeof(p));
	p.src = src;
	p.srclen = strlen(src);
	p.otag = "{{";
	p.otaglen = 2;
	p.ctag = "}}";

	for (;;)
	{
		const char *found = strstr(src + p.pos, p.otag);
		TemplateTag tag;

		CHECK_FOR_INTERRUPTS();
		if (found == NULL)
		{
			parser_emit_text(&p, p.pos, p.srclen, false);
			break;
		}
		if (!parser_read_tag(&p, found - src, &tag))
			break;

		if (tag.standalone)
		{
			parser_emit_text(&p, p.pos, tag.line_begin, false);
			p.pos = tag.line_end;
		}
		else
		{
			parser_emit_text(&p, p.pos, tag.start, true);
			p.pos = tag.end;
		}
		if (!parser_handle_tag(&p, &tag))
			break;
	}

	if (p.error == NULL && p.open != NIL)
	{
		OpenSection *open = llast(p.open);

		p.error = psprintf("unclosed section \"%s\" opened at %s", open->name,
						   position_describe(src, open->offset));
	}
	if (p.error != NULL)
	{
		*error = p.error;
		return NULL;
	}

	tmpl = palloc(sizeof(Template));
	tmpl->nodes = p.nodes;
	tmpl->constant = true;
	foreach(lc, p.nodes)
	{
		if (((TemplateNode *) lfirst(lc))->kind != TNODE_TEXT)
			tmpl->constant = false;
	}
	return tmpl;
}

/* Tells whether the template begins with an escaped variable; see template.h. */
bool
template_starts_with_escaped_variable(const Template *tmpl)
{
	ListCell   *lc;

	foreach(lc, tmpl->nodes)
	{
		const TemplateNode *node = lfirst(lc);

		/* an empty text node only marks a line start */
		if (node->kind == TNODE_TEXT && node->textlen == 0)
			continue;
		return node->kind == TNODE_VARIABLE && node->escape;
	}
	return false;
}

/* Finds a top-level name that begins with a sigil; see template.h. */
char *
template_misplaced_sigil(const Template *tmpl)
{
	ListCell   *lc;

	foreach(lc, tmpl->nodes)
	{
		const TemplateNode *node = lfirst(lc);

		if ((node->kind == TNODE_VARIABLE || node->kind == TNODE_SECTION || node->kind == TNODE_INVERTED) &&
			node->name.nparts > 0 && node->name.parts[0][0] != '\0' &&
			strchr("#^/>!=&{", node->name.parts[0][0]) != NULL)
		{
			StringInfoData name;

			initStringInfo(&name);
			for (int i = 0; i < node->name.nparts; i++)
				appendStringInfo(&name, "%s%s", i > 0 ? "." : "", node->name.parts[i]);
			return name.data;
		}
	}
	return NULL;
}

/* Tells whether the template is plain text; see template.h. */
bool
template_is_constant(const Template *tmpl)
{
	return tmpl->constant;
}


/* ---------------------------------------------------------------------------
 * Partials
 * ---------------------------------------------------------------------------
 */

/* Orders partials by name for bsearch. */
static int
partial_compare(const void *a, const void *b)
{
	return strcmp(((const TemplatePartial *) a)->name,
				  ((const TemplatePartial *) b)->name);
}

/* Compiles a jsonb object of partial sources; see template.h. */
TemplatePartials *
template_partials_compile(Jsonb *partials, char **error)
{
	TemplatePartials *set = palloc0(sizeof(TemplatePartials));
	JsonbIterator *it;
	JsonbIteratorToken tok;
	JsonbValue	v;
	char	   *name = NULL;

	if (partials == NULL)
		return set;

	if (!JB_ROOT_IS_OBJECT(partials))
	{
		const char *type = "array";

		if (JB_ROOT_IS_SCALAR(partials))
		{
			JsonbExtractScalar(&partials->root, &v);
			type = JsonbTypeName(&v);
		}
		*error = psprintf("\"partials\" must be an object of partial name "
						  "to template, not %s", type);
		return NULL;
	}

	set->items = palloc(Max(JB_ROOT_COUNT(partials), 1) *
						sizeof(TemplatePartial));
	it = JsonbIteratorInit(&partials->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		char	   *perror;
		Template   *tmpl;

		if (tok == WJB_KEY)
			name = pnstrdup(v.val.string.val, v.val.string.len);
		if (tok != WJB_VALUE)
			continue;

		if (v.type != jbvString)
		{
			*error = psprintf("partial \"%s\" must be a string, not %s",
							  name, JsonbTypeName(&v));
			return NULL;
		}
		tmpl = template_parse(pnstrdup(v.val.string.val, v.val.string.len),
							  &perror);
		if (tmpl == NULL)
		{
			*error = psprintf("partial \"%s\": %s", name, perror);
			return NULL;
		}
		set->items[set->count].name = name;
		set->items[set->count].tmpl = tmpl;
		set->count++;
	}

	qsort(set->items, set->count, sizeof(TemplatePartial), partial_compare);
	return set;
}

/* Finds a partial by name, or returns NULL. */
static const TemplatePartial *
partials_find(const TemplatePartials *partials, const char *name)
{
	TemplatePartial key;

	if (partials == NULL || partials->count == 0)
		return NULL;
	key.name = unconstify(char *, name);
	return bsearch(&key, partials->items, partials->count,
				   sizeof(TemplatePartial), partial_compare);
}


/* ---------------------------------------------------------------------------
 * Rendering
 * ---------------------------------------------------------------------------
 */

/* Tells whether a section over value renders: false, null and [] do not. */
static bool
value_is_truthy(const JsonbValue *value)
{
	switch (value->type)
	{
		case jbvNull:
			return false;
		case jbvBool:
			return value->val.boolean;
		case jbvBinary:
			return !JsonContainerIsArray(value->val.binary.data) ||
				JsonContainerSize(value->val.binary.data) > 0;
		default:
			return true;
	}
}

/*
 * Looks up one name part in value: a key of an object, or a decimal index of
 * an array.  Fills result and returns true when found.
 */
static bool
value_get_part(const JsonbValue *value, const char *part, int len,
			   JsonbValue *result)
{
	JsonbContainer *container;
	JsonbValue *elem;
	uint32		index = 0;
	int			i;

	if (value->type != jbvBinary)
		return false;
	container = value->val.binary.data;

	if (JsonContainerIsObject(container))
		return getKeyJsonValueFromContainer(container, part, len,
											result) != NULL;

	if (!JsonContainerIsArray(container) || len > 9)
		return false;
	for (i = 0; i < len; i++)
	{
		if (part[i] < '0' || part[i] > '9')
			return false;
		index = index * 10 + (part[i] - '0');
	}
	elem = getIthJsonbValueFromContainer(container, index);
	if (elem == NULL)
		return false;
	*result = *elem;
	pfree(elem);
	return true;
}

/*
 * Resolves a name against the context stack: the first part in the nearest
 * frame that is an object holding it, the other parts each in the value
 * found for the part before.  Returns false when anything is missing.
 */
static bool
context_lookup(const ContextFrame *ctx, const TemplateName *name,
			   JsonbValue *result)
{
	const ContextFrame *frame;
	int			i;

	if (name->nparts == 0)
	{
		*result = *ctx->value;
		return true;
	}

	for (frame = ctx; frame != NULL; frame = frame->parent)
	{
		const JsonbValue *v = frame->value;

		if (v->type == jbvBinary && JsonContainerIsObject(v->val.binary.data) &&
			getKeyJsonValueFromContainer(v->val.binary.data, name->parts[0],
										 name->lens[0], result) != NULL)
			break;
	}
	if (frame == NULL)
		return false;

	for (i = 1; i < name->nparts; i++)
	{
		JsonbValue	parent = *result;

		if (!value_get_part(&parent, name->parts[i], name->lens[i], result))
			return false;
	}
	return true;
}

/*
 * Appends s with &, <, >, " and ' replaced by HTML entities (for Slack, only
 * &, < and >: Slack shows other entities as they are written).
 */
static void
append_escaped(StringInfo out, const char *s, int len, RenderEscape escape)
{
	int			done = 0;
	int			i;

	for (i = 0; i < len; i++)
	{
		const char *entity;

		switch (s[i])
		{
			case '&':
				entity = "&amp;";
				break;
			case '<':
				entity = "&lt;";
				break;
			case '>':
				entity = "&gt;";
				break;
			case '"':
				if (escape != ESCAPE_HTML)
					continue;
				entity = "&quot;";
				break;
			case '\'':
				if (escape != ESCAPE_HTML)
					continue;
				entity = "&#39;";
				break;
			default:
				continue;
		}
		appendBinaryStringInfo(out, s + done, i - done);
		appendStringInfoString(out, entity);
		done = i + 1;
	}
	appendBinaryStringInfo(out, s + done, len - done);
}

/* Appends s percent-encoded: every byte but the unreserved ones of RFC 3986. */
static void
append_url_encoded(StringInfo out, const char *s, int len)
{
	static const char hex[] = "0123456789ABCDEF";
	bool		all_dots = (len == 1 && s[0] == '.') || (len == 2 && s[0] == '.' && s[1] == '.');

	for (int i = 0; i < len; i++)
	{
		unsigned char c = (unsigned char) s[i];

		/*
		 * A value that is all dots would be a dot segment, which the URL's
		 * parser removes with the segment before it ("/tenants/../orders" is
		 * "/orders"): its dots are encoded, so it stays one segment.
		 */
		if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
			c == '-' || c == '_' || c == '~' || (c == '.' && !all_dots))
			appendStringInfoChar(out, (char) c);
		else
		{
			appendStringInfoChar(out, '%');
			appendStringInfoChar(out, hex[c >> 4]);
			appendStringInfoChar(out, hex[c & 15]);
		}
	}
}

/* Appends the text form of a value, escaped as asked. */
static void
render_value(RenderState *state, const JsonbValue *value, RenderEscape escape)
{
	const char *s;
	int			len;
	bool		made = false;	/* s was allocated here: freed once appended */

	switch (value->type)
	{
		case jbvNull:
			return;
		case jbvString:
			s = value->val.string.val;
			len = value->val.string.len;
			break;
		case jbvNumeric:
			s = numeric_normalize(value->val.numeric);
			len = strlen(s);
			made = true;
			break;
		case jbvBool:
			s = value->val.boolean ? "true" : "false";
			len = strlen(s);
			break;
		case jbvBinary:
			s = JsonbToCString(NULL, value->val.binary.data,
							   value->val.binary.len);
			len = strlen(s);
			made = true;
			break;
		default:
			elog(ERROR, "unexpected jsonb value type %d in template",
				 (int) value->type);
	}

	if (escape == ESCAPE_URL)
		append_url_encoded(state->out, s, len);
	else if (escape != ESCAPE_NONE)
		append_escaped(state->out, s, len, escape);
	else
		appendBinaryStringInfo(state->out, s, len);
	/* a section repeated over arrays renders values millions of times: keep only the output */
	if (made)
		pfree((char *) s);
}

/*
 * The output bound: checked before each node and after each line a partial
 * indents (a short template can indent a long partial's every line, nested
 * 64 deep), so no render grows far past it.
 */
static void
check_output(const RenderState *state)
{
	if (state->out->len > TEMPLATE_MAX_OUTPUT)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("a template renders more than %d bytes", TEMPLATE_MAX_OUTPUT)));
}

/* Appends a text node, indenting each of its source lines inside a partial. */
static void
render_text(RenderState *state, const TemplateNode *node)
{
	const char *s = node->text;
	int			done = 0;
	int			i;

	if (state->indentlen == 0)
	{
		appendBinaryStringInfo(state->out, s, node->textlen);
		return;
	}

	if (node->line_start)
		appendBinaryStringInfo(state->out, state->indent, state->indentlen);
	for (i = 0; i < node->textlen - 1; i++)
	{
		if (s[i] != '\n')
			continue;
		appendBinaryStringInfo(state->out, s + done, i + 1 - done);
		appendBinaryStringInfo(state->out, state->indent, state->indentlen);
		check_output(state);
		done = i + 1;
	}
	appendBinaryStringInfo(state->out, s + done, node->textlen - done);
}

/* The dotted text of a name, for messages ("." for the implicit iterator). */
static char *
name_describe(const TemplateName *name)
{
	StringInfoData buf;

	if (name->nparts == 0)
		return ".";
	initStringInfo(&buf);
	for (int i = 0; i < name->nparts; i++)
	{
		if (i > 0)
			appendStringInfoChar(&buf, '.');
		appendBinaryStringInfo(&buf, name->parts[i], name->lens[i]);
	}
	return buf.data;
}

/* Counts one rendering of a section's body; an error past the bound. */
static void
count_section_render(RenderState *state, const TemplateNode *node)
{
	if (++state->section_renders > TEMPLATE_MAX_SECTION_RENDERS)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("a template renders section bodies more than %d times",
						TEMPLATE_MAX_SECTION_RENDERS),
				 errdetail("while rendering section \"%s\"", name_describe(&node->name)),
				 errhint("Sections nested over arrays multiply: render fewer elements.")));
}

/*
 * Renders a section: once per element of a non-empty array, once with the
 * value on top of the stack for any other truthy value.  An inverted section
 * renders once, with the stack unchanged, when the value is falsey or missing.
 */
static void
render_section(RenderState *state, const TemplateNode *node,
			   const ContextFrame *ctx)
{
	JsonbValue	value;
	bool		truthy;
	ContextFrame frame;

	truthy = context_lookup(ctx, &node->name, &value) &&
		value_is_truthy(&value);

	if (node->kind == TNODE_INVERTED)
	{
		if (!truthy)
			render_nodes(state, node->children, ctx);
		return;
	}
	if (!truthy)
		return;

	frame.parent = ctx;
	if (value.type == jbvBinary && JsonContainerIsArray(value.val.binary.data))
	{
		JsonbIterator *it = JsonbIteratorInit(value.val.binary.data);
		JsonbValue	elem;
		JsonbIteratorToken tok;

		frame.value = &elem;
		while ((tok = JsonbIteratorNext(&it, &elem, true)) != WJB_DONE)
		{
			CHECK_FOR_INTERRUPTS();
			if (tok == WJB_ELEM)
			{
				count_section_render(state, node);
				render_nodes(state, node->children, &frame);
			}
		}
	}
	else
	{
		count_section_render(state, node);
		frame.value = &value;
		render_nodes(state, node->children, &frame);
	}
}

/* Expands a partial against the current stack; a missing one is empty. */
static void
render_partial(RenderState *state, const TemplateNode *node,
			   const ContextFrame *ctx)
{
	const TemplatePartial *partial;
	const char *saved_indent = state->indent;
	int			saved_indentlen = state->indentlen;

	partial = partials_find(state->partials, node->partial);
	if (partial == NULL)
		return;
	CHECK_FOR_INTERRUPTS();
	if (++state->expansions > TEMPLATE_MAX_PARTIAL_EXPANSIONS)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a template expands partials more than %d times",
						TEMPLATE_MAX_PARTIAL_EXPANSIONS),
				 errdetail("while expanding partial \"%s\"", node->partial),
				 errhint("A partial that includes itself more than once grows "
						 "exponentially with its depth.")));
	if (state->depth >= TEMPLATE_MAX_PARTIAL_DEPTH)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("partials are nested more than %d levels deep",
						TEMPLATE_MAX_PARTIAL_DEPTH),
				 errdetail("while expanding partial \"%s\"", node->partial),
				 errhint("A partial that includes itself needs a section "
						 "that ends the recursion.")));

	/* a standalone tag indents the partial further; an inline one does not */
	if (node->indent != NULL)
	{
		state->indent = psprintf("%s%s", saved_indent, node->indent);
		state->indentlen = strlen(state->indent);
	}
	else
	{
		state->indent = "";
		state->indentlen = 0;
	}

	state->depth++;
	render_nodes(state, partial->tmpl->nodes, ctx);
	state->depth--;
	/* freed at once: many expansions would otherwise keep every indent they built */
	if (node->indent != NULL)
		pfree((char *) state->indent);
	state->indent = saved_indent;
	state->indentlen = saved_indentlen;
}

/* Renders a list of nodes against the context stack. */
static void
render_nodes(RenderState *state, const List *nodes, const ContextFrame *ctx)
{
	ListCell   *lc;

	check_stack_depth();
	foreach(lc, nodes)
	{
		const TemplateNode *node = lfirst(lc);
		JsonbValue	value;

		check_output(state);
		switch (node->kind)
		{
			case TNODE_TEXT:
				render_text(state, node);
				break;
			case TNODE_VARIABLE:
				if (context_lookup(ctx, &node->name, &value))
					render_value(state, &value,
								 node->escape ? state->escape : ESCAPE_NONE);
				break;
			case TNODE_SECTION:
			case TNODE_INVERTED:
				render_section(state, node, ctx);
				break;
			case TNODE_PARTIAL:
				render_partial(state, node, ctx);
				break;
		}
	}
}

/* Renders the tree, escaping {{name}} output as escape says. */
static char *
template_render_tree(const Template *tmpl, Jsonb *context,
					 const TemplatePartials *partials, RenderEscape escape)
{
	StringInfoData out;
	RenderState state;
	MemoryContext scratch;
	MemoryContext caller;
	JsonbValue	root;
	ContextFrame frame;

	/* the result grows in the caller's context, everything else in scratch */
	initStringInfo(&out);
	scratch = AllocSetContextCreate(CurrentMemoryContext, "template render",
									ALLOCSET_DEFAULT_SIZES);
	caller = MemoryContextSwitchTo(scratch);

	if (context == NULL)
		root.type = jbvNull;
	else if (JB_ROOT_IS_SCALAR(context))
		JsonbExtractScalar(&context->root, &root);
	else
	{
		root.type = jbvBinary;
		root.val.binary.data = &context->root;
		root.val.binary.len = VARSIZE(context) - VARHDRSZ;
	}
	frame.value = &root;
	frame.parent = NULL;

	state.out = &out;
	state.partials = partials;
	state.depth = 0;
	state.expansions = 0;
	state.section_renders = 0;
	state.indent = "";
	state.indentlen = 0;
	state.escape = escape;
	render_nodes(&state, tmpl->nodes, &frame);
	check_output(&state);

	MemoryContextSwitchTo(caller);
	MemoryContextDelete(scratch);
	return out.data;
}

/* Renders a template against a jsonb context; see template.h. */
char *
template_render(const Template *tmpl, Jsonb *context,
				const TemplatePartials *partials)
{
	return template_render_tree(tmpl, context, partials, ESCAPE_HTML);
}

/* Renders a template without any HTML escaping; see template.h. */
char *
template_render_plain(const Template *tmpl, Jsonb *context,
					  const TemplatePartials *partials)
{
	return template_render_tree(tmpl, context, partials, ESCAPE_NONE);
}

/* Renders a template escaping only Slack's markup characters; see template.h. */
char *
template_render_slack(const Template *tmpl, Jsonb *context,
					  const TemplatePartials *partials)
{
	return template_render_tree(tmpl, context, partials, ESCAPE_SLACK);
}

/* Renders a template, percent-encoding {{name}} values; see template.h. */
char *
template_render_url(const Template *tmpl, Jsonb *context,
					const TemplatePartials *partials)
{
	return template_render_tree(tmpl, context, partials, ESCAPE_URL);
}
