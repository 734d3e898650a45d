/*
 * provider_common.c — helpers shared by the provider adapters: reading config
 * and content, building URLs, headers and form bodies, and the common
 * classification of HTTP responses.
 */
#include "postgres.h"

#include <time.h>

#include <curl/curl.h>

#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"

#include "jsonb_util.h"
#include "provider.h"
#include "safe_input.h"

/* Returns a string config value. */
char *
provider_config_string(const DeliveryJob *job, const char *key)
{
	return jsonb_get_string(job->config, key);
}

/* Returns a config string that must be set, or raises an error naming the key. */
char *
provider_config_required(const DeliveryJob *job, const char *key)
{
	char	   *v = provider_config_string(job, key);

	if (v == NULL || v[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("provider config for kind \"%s\" is incomplete", job->kind),
				 errdetail("config.%s: required", key)));
	return v;
}

/* Returns a content field as a string. */
char *
provider_content_string(const DeliveryJob *job, const char *key)
{
	char	   *s = jsonb_get_string(job->content, key);

	return s ? s : pstrdup("");
}

/* Builds base + path, where base is config base_url when set. */
char *
provider_url(const DeliveryJob *job, const char *default_base, const char *path)
{
	char	   *base = provider_config_string(job, "base_url");
	size_t		len;

	if (base == NULL || base[0] == '\0')
		base = pstrdup(default_base);
	len = strlen(base);
	while (len > 0 && base[len - 1] == '/')
		base[--len] = '\0';
	return psprintf("%s%s", base, path);
}

/* True when s is an http(s) URL without blanks or line breaks. */
bool
provider_is_http_url(const char *s)
{
	return (pg_strncasecmp(s, "https://", 8) == 0 || pg_strncasecmp(s, "http://", 7) == 0) &&
		strpbrk(s, " \t\r\n") == NULL;
}

/* Adds a request header, refusing CR/LF (header injection). */
void
provider_add_header(ProviderRequest *req, const char *name, const char *value)
{
	if (strpbrk(name, "\r\n:") != NULL || strpbrk(value, "\r\n") != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("header value contains a line break"),
				 errdetail("header %s: CR and LF are not allowed", name)));
	req->headers = lappend(req->headers, psprintf("%s: %s", name, value));
}

/* Percent-encodes s into buf (RFC 3986 unreserved characters kept). */
static void
append_urlencoded(StringInfo buf, const char *s)
{
	static const char hex[] = "0123456789ABCDEF";

	for (const unsigned char *p = (const unsigned char *) s; *p; p++)
	{
		if ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
			*p == '-' || *p == '_' || *p == '.' || *p == '~')
			appendStringInfoChar(buf, (char) *p);
		else
		{
			appendStringInfoChar(buf, '%');
			appendStringInfoChar(buf, hex[*p >> 4]);
			appendStringInfoChar(buf, hex[*p & 15]);
		}
	}
}

/* Appends one form field. */
void
provider_form_add(StringInfo body, const char *key, const char *value)
{
	if (body->len > 0)
		appendStringInfoChar(body, '&');
	append_urlencoded(body, key);
	appendStringInfoChar(body, '=');
	append_urlencoded(body, value);
}

/* The value (after "Name:" and blanks) of the first of "Name: value" headers with that name, or NULL. */
static const char *
header_value(List *headers, const char *name)
{
	ListCell   *lc;
	size_t		n = strlen(name);

	foreach(lc, headers)
	{
		const char *h = lfirst(lc);

		if (pg_strncasecmp(h, name, n) == 0 && h[n] == ':')
			return h + n + 1 + strspn(h + n + 1, " \t");
	}
	return NULL;
}

/* Finds a response header by name: valid text, without the line's end. */
char *
provider_response_header(const ProviderResponse *resp, const char *name)
{
	const char *v = header_value(resp->headers, name);
	char	   *out;
	size_t		len;

	if (v == NULL)
		return NULL;
	out = provider_text(v, strlen(v));
	len = strlen(out);
	while (len > 0 && (out[len - 1] == '\r' || out[len - 1] == '\n' || out[len - 1] == ' '))
		out[--len] = '\0';
	return out;
}

/* Returns the value of a request header set by the adapter, or NULL. */
const char *
provider_request_header(const ProviderRequest *req, const char *name)
{
	return header_value(req->headers, name);
}

const char *
provider_request_bearer(const ProviderRequest *req)
{
	const char *value = header_value(req->headers, "Authorization");

	return value && pg_strncasecmp(value, "bearer ", 7) == 0 ? value + 7 : NULL;
}

/*
 * Parses the body as JSON with the server's own parser; NULL when it is not
 * JSON, or cannot be parsed now (out of memory): the request was sent, and
 * its answer is classified without it rather than ending the dispatcher.
 */
Jsonb *
provider_response_json(const ProviderResponse *resp)
{
	Datum		d;
	char	   *error;

	if (resp->body.len == 0)
		return NULL;
	if (!safe_input_any(jsonb_in, resp->body.data, &d, &error))
		return NULL;
	return DatumGetJsonbP(d);
}

char *
provider_text(const char *s, int len)
{
	int			encoding = GetDatabaseEncoding();
	StringInfoData out;
	int			i = 0;

	/* the common case, valid text, checked at once (every attempt's excerpt comes here) */
	if (pg_encoding_verifymbstr(encoding, s, len) == len)
		return pnstrdup(s, len);
	initStringInfo(&out);
	while (i < len)
	{
		int			n = pg_encoding_verifymbchar(encoding, s + i, len - i);

		if (n > 0 && s[i] != '\0')
		{
			appendBinaryStringInfo(&out, s + i, n);
			i += n;
		}
		else
		{
			appendStringInfoChar(&out, '?');	/* not a character of the encoding */
			i++;
		}
	}
	return out.data;
}

char *
provider_recipient_url(const DeliveryJob *job, ProviderRequest *req, const char *config_key)
{
	if (job->recipient == NULL || job->recipient[0] == '\0')
		return provider_config_required(job, config_key);
	/* curl would take "x" or "ftp://..." too, fail, and be retried max_attempts times */
	if (!provider_is_http_url(job->recipient))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s address is not a webhook URL", job->kind),
				 errdetail("recipient: expected an http(s) URL, or no address to use config.%s", config_key)));
	req->url_from_data = true;
	return pstrdup(job->recipient);
}

bool
provider_smtp_refusal_line(const char *line)
{
	return strspn(line, "0123456789") == 3 && (line[3] == ' ' || line[3] == '-') &&
		(line[0] == '4' || line[0] == '5');
}

/* Returns the start of the body as text (at most len bytes of it). */
char *
provider_response_excerpt(const ProviderResponse *resp, int len)
{
	/* made valid first (a byte may become '?'), then cut on a character boundary */
	char	   *text = provider_text(resp->body.data, Min(resp->body.len, len + MAX_MULTIBYTE_CHAR_LEN));
	int			n = strlen(text);

	return pnstrdup(text, pg_mbcliplen(text, n, Min(n, len)));
}

#define RETRY_AFTER_MAX_S (24 * 3600)

/*
 * Parses Retry-After into milliseconds: delay-seconds (digits only) or an
 * HTTP-date (RFC 9110; libcurl's curl_getdate reads it), at most a day.
 * Anything else counts as 1 s.
 */
static int
retry_after_ms(const ProviderResponse *resp)
{
	char	   *v = provider_response_header(resp, "retry-after");
	size_t		digits;

	if (v == NULL)
		return 0;
	digits = strspn(v, "0123456789");
	if (digits > 0 && v[digits] == '\0')
	{
		if (digits > 6)
			return RETRY_AFTER_MAX_S * 1000;
		return Min(atoi(v), RETRY_AFTER_MAX_S) * 1000;
	}
	else
	{
		time_t		at = curl_getdate(v, NULL);
		time_t		now = time(NULL);

		if (at == (time_t) -1)
			return 1000;
		if (at <= now)
			return 0;
		return (int) Min(at - now, (time_t) RETRY_AFTER_MAX_S) * 1000;
	}
}

/* Classifies by transport result and HTTP status. */
void
provider_classify_http(const ProviderResponse *resp, ProviderResult *res)
{
	memset(res, 0, sizeof(ProviderResult));
	if (resp->curl_code != 0)
	{
		/* a URL or CA bundle that cannot work is configuration: no retry helps */
		bool		config = resp->curl_code == CURLE_URL_MALFORMAT ||
			resp->curl_code == CURLE_UNSUPPORTED_PROTOCOL ||
			resp->curl_code == CURLE_SSL_CACERT_BADFILE;

		res->outcome = config ? OUTCOME_PERMANENT : OUTCOME_RETRY;
		res->error = psprintf("transport error: %s", resp->curl_error ? resp->curl_error : "unknown");
		return;
	}
	if (resp->status >= 200 && resp->status < 300)
	{
		res->outcome = OUTCOME_SENT;
		return;
	}
	res->error = psprintf("HTTP %ld: %s", resp->status, provider_response_excerpt(resp, 200));
	if (resp->status == 408 || resp->status == 429 || resp->status >= 500)
	{
		res->outcome = OUTCOME_RETRY;
		res->retry_after_ms = retry_after_ms(resp);
	}
	else
		res->outcome = OUTCOME_PERMANENT;
}

/*
 * The common classification plus the JSON body: when the attempt was sent,
 * the message id is read from id_key.  Returns the parsed body (NULL after a
 * transport error or when the body is not JSON).
 */
Jsonb *
provider_classify_json(const ProviderResponse *resp, ProviderResult *res, const char *id_key)
{
	Jsonb	   *json;

	provider_classify_http(resp, res);
	if (resp->curl_code != 0)
		return NULL;
	json = provider_response_json(resp);
	if (res->outcome == OUTCOME_SENT)
		res->message_id = jsonb_get_string(json, id_key);
	return json;
}
