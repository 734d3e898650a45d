/*
 * template.h — Mustache templates for notiflow.
 *
 * Templates are parsed once (when a workflow version is compiled) into a tree
 * kept in a long-lived memory context, then rendered many times against a
 * jsonb context.  Rendering follows the Mustache specification (interpolation,
 * sections, inverted sections, comments, set delimiters, partials); output is
 * HTML-escaped unless written {{{raw}}} or {{&raw}}.
 */
#ifndef NOTIFLOW_TEMPLATE_H
#define NOTIFLOW_TEMPLATE_H

#include "postgres.h"
#include "utils/jsonb.h"

typedef struct Template Template;
typedef struct TemplatePartials TemplatePartials;

/*
 * Parses src into a template allocated in the current memory context.
 * On a syntax error returns NULL and sets *error to a lower-case message
 * (palloc'd) that names the position, e.g. "unclosed section \"items\" opened at line 2".
 */
extern Template *template_parse(const char *src, char **error);

/*
 * Compiles a jsonb object {name: template source} into a partial set in the
 * current memory context.  Returns NULL and sets *error (naming the partial)
 * when one does not parse.  A NULL or empty object gives an empty set.
 */
extern TemplatePartials *template_partials_compile(Jsonb *partials, char **error);

/*
 * Renders tmpl against context (any jsonb value; usually an object) and
 * returns a palloc'd string in the current memory context.  partials may be
 * NULL.  Missing names render as the empty string.
 */
extern char *template_render(const Template *tmpl, Jsonb *context,
							 const TemplatePartials *partials);

/*
 * Like template_render, but escapes nothing: {{name}} renders like
 * {{{name}}}.  For channels whose text is not HTML (SMS, push, chat, email
 * subject and text part), where "&" must stay "&".
 */
extern char *template_render_plain(const Template *tmpl, Jsonb *context,
								   const TemplatePartials *partials);

/*
 * Like template_render, but {{name}} escapes only what Slack reads as its
 * own markup in message text: "&", "<" and ">" become "&amp;", "&lt;" and
 * "&gt;" (so "<!channel>" from a value is shown, not obeyed).  {{{name}}}
 * and {{&name}} stay raw, as in HTML.
 */
extern char *template_render_slack(const Template *tmpl, Jsonb *context,
								   const TemplatePartials *partials);

/*
 * Like template_render, but {{name}} percent-encodes every byte of the value
 * but the unreserved ones of RFC 3986 (A-Z a-z 0-9 - . _ ~): for a URL, where
 * a value "../admin?x=1" must stay one path segment.  {{{name}}} and
 * {{&name}} stay raw (a whole URL taken from the data).
 */
extern char *template_render_url(const Template *tmpl, Jsonb *context,
								 const TemplatePartials *partials);

/* True when the template begins with an escaped {{name}} (not {{{name}}}). */
extern bool template_starts_with_escaped_variable(const Template *tmpl);

/*
 * The first name of a variable or section tag outside any section that
 * begins with a tag's sigil (# ^ / > ! = & {), or NULL.  Against a
 * workflow's context ({payload, recipient, steps, vars, execution}) such a
 * name, "{{ #x }}" where "{{#x}}" was meant, is always empty; inside a
 * section it may name a key of the data ("#text").
 */
extern char *template_misplaced_sigil(const Template *tmpl);

/* True when the template is plain text without any tag. */
extern bool template_is_constant(const Template *tmpl);

#endif							/* NOTIFLOW_TEMPLATE_H */
