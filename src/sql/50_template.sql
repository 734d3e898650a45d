-- 50_template.sql — SQL access to the Mustache template engine (src/template.c).
--
-- Workflows render their templates inside the engine; this function lets users
-- try a template against a sample context, and is what the Mustache
-- specification tests run through.  It is not STRICT: partials defaults to
-- NULL (no partials), a NULL context renders every name as missing, and only a
-- NULL template gives NULL.

CREATE FUNCTION notiflow.render_template(template text, context jsonb, partials jsonb DEFAULT NULL)
RETURNS text
AS 'MODULE_PATHNAME', 'render_template'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

COMMENT ON FUNCTION notiflow.render_template(text, jsonb, jsonb) IS
'Renders a Mustache template against a jsonb context; partials is an object of partial name to template source. Output is HTML-escaped except in {{{triple}}} and {{&name}} tags. Raises 22023 for an invalid template or partials.';
