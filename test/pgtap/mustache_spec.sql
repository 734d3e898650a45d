-- mustache_spec.sql — pgTAP test of notiflow.render_template (src/template.c).
--
-- Runs every test of every official Mustache specification file in
-- $NOTIFLOW_SHARED/mustache-spec (default ../shared) and compares the output
-- with "expected", then checks what the specification leaves to us: syntax
-- errors, escaping, how non-string values render, limits and caching.
-- Run from the project root with pg_prove, in a database where pgtap and
-- notiflow are installed.

\set ON_ERROR_STOP 1
\set QUIET 1
\pset format unaligned
\pset tuples_only true
\pset pager off

\set comments `cat "${NOTIFLOW_SHARED:-../shared}/mustache-spec/comments.json"`
\set delimiters `cat "${NOTIFLOW_SHARED:-../shared}/mustache-spec/delimiters.json"`
\set interpolation `cat "${NOTIFLOW_SHARED:-../shared}/mustache-spec/interpolation.json"`
\set inverted `cat "${NOTIFLOW_SHARED:-../shared}/mustache-spec/inverted.json"`
\set partials `cat "${NOTIFLOW_SHARED:-../shared}/mustache-spec/partials.json"`
\set sections `cat "${NOTIFLOW_SHARED:-../shared}/mustache-spec/sections.json"`

BEGIN;

CREATE TEMP TABLE spec_file (file text PRIMARY KEY, doc jsonb NOT NULL);
INSERT INTO spec_file VALUES
	('comments', :'comments'::jsonb),
	('delimiters', :'delimiters'::jsonb),
	('interpolation', :'interpolation'::jsonb),
	('inverted', :'inverted'::jsonb),
	('partials', :'partials'::jsonb),
	('sections', :'sections'::jsonb);

-- Returns the DETAIL of the error a render raises, or NULL when it succeeds.
CREATE FUNCTION pg_temp.render_error_detail(tmpl text, partials jsonb DEFAULT NULL)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
	detail text;
BEGIN
	PERFORM notiflow.render_template(tmpl, '{}', partials);
	RETURN NULL;
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS detail = PG_EXCEPTION_DETAIL;
	RETURN detail;
END
$$;

-- one test per spec test, one per file (it has tests), and 36 of our own
SELECT plan((SELECT sum(jsonb_array_length(doc->'tests'))::int FROM spec_file)
			+ (SELECT count(*)::int FROM spec_file)
			+ 39);

SELECT cmp_ok(jsonb_array_length(doc->'tests'), '>', 0, file || '.json has tests')
FROM spec_file ORDER BY file;

SELECT is(notiflow.render_template(t->>'template', t->'data', t->'partials'),
		  t->>'expected',
		  f.file || ': ' || (t->>'name'))
FROM spec_file f, jsonb_array_elements(f.doc->'tests') WITH ORDINALITY AS e(t, n)
ORDER BY f.file, e.n;

-- syntax errors: SQLSTATE 22023, with the place in the detail
SELECT throws_ok($$SELECT notiflow.render_template('Hello {{name', '{}')$$,
				 '22023', 'invalid template', 'unclosed tag raises 22023');
SELECT is(pg_temp.render_error_detail(E'Hi\n  x {{name'),
		  'unclosed tag at line 2, column 5', 'unclosed tag names its line and column');
SELECT throws_ok($$SELECT notiflow.render_template(E'a\n{{#items}}x', '{}')$$,
				 '22023', 'invalid template', 'unclosed section raises 22023');
SELECT is(pg_temp.render_error_detail(E'a\n{{#items}}x'),
		  'unclosed section "items" opened at line 2, column 1',
		  'unclosed section names the section and where it opened');
SELECT throws_ok($$SELECT notiflow.render_template('{{#a}}{{#b}}{{/a}}{{/b}}', '{}')$$,
				 '22023', 'invalid template', 'mismatched close raises 22023');
SELECT is(pg_temp.render_error_detail(E'{{#a}}\n{{#b}}\n{{/a}}'),
		  'section "b" opened at line 2, column 1 is closed by "a" at line 3, column 1',
		  'mismatched close names both tags');
SELECT throws_ok($$SELECT notiflow.render_template('x {{/a}}', '{}')$$,
				 '22023', 'invalid template', 'close without open raises 22023');
SELECT throws_ok($$SELECT notiflow.render_template('{{=<% =}}', '{}')$$,
				 '22023', 'invalid template', 'set-delimiter with one delimiter raises 22023');
SELECT throws_ok($$SELECT notiflow.render_template('{{=<% %> x=}}', '{}')$$,
				 '22023', 'invalid template', 'set-delimiter with three delimiters raises 22023');
SELECT throws_ok($$SELECT notiflow.render_template('{{=<% %>}}', '{}')$$,
				 '22023', 'invalid template', 'set-delimiter without closing = raises 22023');
SELECT throws_ok($$SELECT notiflow.render_template('a {{ }} b', '{}')$$,
				 '22023', 'invalid template', 'empty tag raises 22023');
SELECT throws_ok($$SELECT notiflow.render_template('{{a..b}} {{first name}}', '{}')$$,
				 '22023', 'invalid template', 'malformed name raises 22023');

-- partials argument
SELECT throws_ok($$SELECT notiflow.render_template('{{>p}}', '{}', '["p"]')$$,
				 '22023', 'invalid partials', 'partials that is not an object raises 22023');
SELECT matches(pg_temp.render_error_detail('{{>p}}', '"p"'), '"partials"',
			   'the detail names "partials"');
SELECT is(pg_temp.render_error_detail('{{>p}}', '{"p": "{{#x}}"}'),
		  'partial "p": unclosed section "x" opened at line 1, column 1',
		  'a partial that does not parse is named in the detail');
SELECT throws_ok($$SELECT notiflow.render_template('{{>p}}', '{}', '{"p": 1}')$$,
				 '22023', 'invalid partials', 'a partial that is not a string raises 22023');

-- escaping
SELECT is(notiflow.render_template('{{v}}', jsonb_build_object('v', $$a & b < c > d "e" 'f'$$)),
		  'a &amp; b &lt; c &gt; d &quot;e&quot; &#39;f&#39;', 'HTML escaping of & < > " and ''');
SELECT is(notiflow.render_template('{{{v}}}|{{&v}}', '{"v": "<b>&"}'),
		  '<b>&|<b>&', 'triple mustache and ampersand do not escape');

-- how values render
SELECT is(notiflow.render_template('{{a}} {{b}} {{c}} {{d}} {{e}}',
								   '{"a": 1.210, "b": 100, "c": 2.000, "d": -0.50, "e": 1e3}'),
		  '1.21 100 2 -0.5 1000', 'numbers render without trailing zeros');
SELECT is(notiflow.render_template('{{t}}/{{f}}', '{"t": true, "f": false}'),
		  'true/false', 'booleans render as true and false');
SELECT is(notiflow.render_template('[{{n}}]', '{"n": null}'), '[]', 'null renders as nothing');
SELECT is(notiflow.render_template('{{{o}}} {{{a}}}', '{"o": {"b": [1, "x"], "a": null}, "a": [true, {}]}'),
		  '{"a": null, "b": [1, "x"]} [true, {}]', 'objects and arrays render as JSON text');
SELECT is(notiflow.render_template('{{o}}', '{"o": {"k": "v"}}'),
		  '{&quot;k&quot;: &quot;v&quot;}', 'escaped JSON text of an object');

-- truthiness and lookups
SELECT is(notiflow.render_template('{{#s}}S{{/s}}{{#z}}Z{{/z}}{{#o}}O{{/o}}', '{"s": "", "z": 0, "o": {}}'),
		  'SZO', 'empty string, 0 and {} are truthy');
SELECT is(notiflow.render_template('{{#v}}<{{.}}>{{/v}}', '{"v": "x"}'),
		  '<x>', 'a truthy scalar is pushed on the stack');
SELECT is(notiflow.render_template('{{items.1.name}}|{{items.5.name}}|{{items.x}}',
								   '{"items": [{"name": "a"}, {"name": "b"}]}'),
		  'b||', 'dotted names index arrays by position');
SELECT is(notiflow.render_template('{{#recipient}}{{name}} <{{email}}> {{payload.id}}{{/recipient}}',
								   '{"recipient": {"name": "Ann", "email": "ann@example.com"}, "payload": {"id": 7}}'),
		  'Ann <ann@example.com> 7', 'names fall back to outer frames');

-- NULL arguments
SELECT is(notiflow.render_template(NULL, '{}'), NULL, 'a NULL template gives NULL');
SELECT is(notiflow.render_template('a{{x}}b', NULL), 'ab', 'a NULL context renders names as missing');

-- limits
SELECT throws_ok($$SELECT notiflow.render_template('{{>loop}}', '{}', '{"loop": "x{{>loop}}"}')$$,
				 '22023', NULL, 'unbounded partial recursion is an error, not a crash');
SELECT is(notiflow.render_template('{{>n}}', '{"c": {"c": {"c": null}}}', '{"n": "({{#c}}{{>n}}{{/c}})"}'),
		  '((()))', 'bounded partial recursion renders');
-- a partial that includes itself twice, 40 levels deep: 2^40 expansions within the depth limit
SELECT throws_ok(format('SELECT notiflow.render_template(%L, %L, %L)', '{{>p}}',
						repeat('{"c": ', 40) || 'false' || repeat('}', 40), '{"p": "{{#c}}{{>p}}{{>p}}{{/c}}"}'),
				 '22023', 'a template expands partials more than 100000 times',
				 'exponential partial expansion is an error, not an endless render');
SELECT throws_ok(format('SELECT notiflow.render_template(%L, %L)',
						repeat('{{#a}}', 200000) || repeat('{{/a}}', 200000), '{"a": true}'),
				 '54001', NULL, 'very deep section nesting is an error, not a crash');
-- three sections nested over 1,000 elements: 10^9 renders, bounded at a million (even with no output)
SELECT throws_ok(format('SELECT notiflow.render_template(%L, %L)', '{{#a}}{{#a}}{{#a}}{{/a}}{{/a}}{{/a}}',
						jsonb_build_object('a', (SELECT jsonb_agg(g) FROM generate_series(1, 1000) g))),
				 '54000', 'a template renders section bodies more than 1000000 times',
				 'sections nested over arrays are bounded');
SELECT is(length(notiflow.render_template('{{#a}}{{#a}}x{{/a}}{{/a}}',
										  jsonb_build_object('a', (SELECT jsonb_agg(g) FROM generate_series(1, 999) g)))),
		  998001, 'up to a million section bodies render (999 + 999 * 999 here)');
-- output past 64 MB
SELECT throws_ok(format('SELECT notiflow.render_template(%L, %L)', '{{#a}}{{b}}{{/a}}',
						jsonb_build_object('a', (SELECT jsonb_agg(g) FROM generate_series(1, 100) g),
										   'b', repeat('x', 1000000))),
				 '54000', 'a template renders more than 67108864 bytes', 'a render''s output is bounded');

-- partial indentation is applied per line of the partial, also when nested
SELECT is(notiflow.render_template(E'<ul>\n  {{>list}}\n</ul>\n',
								   '{"items": ["a", "b"]}',
								   jsonb_build_object('list', E'{{#items}}\n  {{>item}}\n{{/items}}\n',
													  'item', E'<li>{{.}}</li>\n')),
		  E'<ul>\n    <li>a</li>\n    <li>b</li>\n</ul>\n', 'nested standalone partials add up their indentation');

-- the parsed template is cached per call site; changing templates still render right
SELECT is((SELECT string_agg(notiflow.render_template('{{n}}', jsonb_build_object('n', g)), ',' ORDER BY g)
		   FROM generate_series(1, 3) g),
		  '1,2,3', 'one template over many rows');
SELECT is((SELECT string_agg(notiflow.render_template(CASE WHEN g % 2 = 0 THEN 'e{{n}}' ELSE 'o{{n}}' END,
													  jsonb_build_object('n', g),
													  CASE WHEN g > 2 THEN '{"p": "x"}'::jsonb END),
							 ',' ORDER BY g)
		   FROM generate_series(1, 4) g),
		  'o1,e2,o3,e4', 'alternating templates and partials over many rows');

SELECT * FROM finish();
ROLLBACK;
