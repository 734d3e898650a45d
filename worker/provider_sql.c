/*
 * provider_sql.c — SQL functions that run one provider adapter without any
 * network I/O, for tests and for operators checking a configuration:
 *   notiflow.provider_preview(provider, recipient, content) → the request it would send
 *   notiflow.provider_classify(kind, status, headers, body, curl_code) → the outcome
 * The preview includes credentials, so only superusers may call it.
 * Also notiflow.wake_dispatchers(), for deliveries queued by hand.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "utils/array.h"
#include "utils/builtins.h"

#include "jsonb_util.h"
#include "provider.h"
#include "provider_repo.h"
#include "worker.h"

PG_FUNCTION_INFO_V1(provider_preview);
PG_FUNCTION_INFO_V1(provider_classify);

/* Returns the adapter of kind or raises a clear error. */
static const ProviderAdapter *
adapter_or_error(const char *kind)
{
	const ProviderAdapter *a = provider_adapter(kind);

	if (a == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("no adapter for provider kind \"%s\"", kind)));
	return a;
}

/* Returns the request a provider's adapter builds for a recipient and content. */
Datum
provider_preview(PG_FUNCTION_ARGS)
{
	ProviderRow row;
	DeliveryJob job;
	ProviderRequest req;
	const char *keys[] = {"url", "method", "headers", "body", "username", "password", "aws_sigv4",
	"smtp_from", "smtp_to", "smtp_subject", "smtp_text", "smtp_html", "smtp_starttls", "defer_ms"};
	Jsonb	   *vals[14];
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "notiflow: SPI_connect failed");
	if (!provider_repo_load(name, &row))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("unknown provider \"%s\"", name),
				 errdetail("provider: no provider has this name")));
	memset(&job, 0, sizeof(job));
	job.delivery_id = 0;
	job.attempt = 1;
	job.channel = row.channel;
	job.provider = row.name;
	job.kind = row.kind;
	job.config = row.config;
	job.recipient = PG_ARGISNULL(1) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(1));
	job.content = PG_ARGISNULL(2) ? jsonb_make_empty_object() : PG_GETARG_JSONB_P(2);

	memset(&req, 0, sizeof(req));
	initStringInfo(&req.body);
	adapter_or_error(row.kind)->build(&job, &req);

#define STR_OR_NULL(s) ((s) ? jsonb_make_string(s) : NULL)
	vals[0] = STR_OR_NULL(req.url);
	vals[1] = jsonb_make_string(req.method ? req.method : "POST");
	vals[2] = jsonb_make_string_array(req.headers);
	/* a binary body (web push ciphertext) is shown by its description */
	vals[3] = jsonb_make_string(req.log_body != NULL &&
								(memchr(req.body.data, '\0', req.body.len) != NULL ||
								 !pg_verifymbstr(req.body.data, req.body.len, true))
								? req.log_body : req.body.data);
	vals[4] = STR_OR_NULL(req.username);
	vals[5] = STR_OR_NULL(req.password);
	vals[6] = STR_OR_NULL(req.aws_sigv4);
	vals[7] = STR_OR_NULL(req.smtp_from);
	vals[8] = STR_OR_NULL(req.smtp_to);
	vals[9] = STR_OR_NULL(req.smtp_subject);
	vals[10] = STR_OR_NULL(req.smtp_text);
	vals[11] = STR_OR_NULL(req.smtp_html);
	vals[12] = jsonb_make_bool(req.smtp_starttls);
	vals[13] = jsonb_make_int(req.defer_ms);
#undef STR_OR_NULL
	{
		Jsonb	   *result = jsonb_make_object(14, keys, vals);

		result = (Jsonb *) SPI_datumTransfer(JsonbPGetDatum(result), false, -1);
		SPI_finish();
		PG_RETURN_JSONB_P(result);
	}
}

/* Returns how an adapter classifies a response. */
Datum
provider_classify(PG_FUNCTION_ARGS)
{
	static const char *const outcomes[] = {"sent", "retry", "permanent", "invalid_recipient", "again",
	"rejected"};
	char	   *kind = text_to_cstring(PG_GETARG_TEXT_PP(0));
	DeliveryJob job;
	ProviderResponse resp;
	ProviderResult res;
	const char *keys[] = {"outcome", "message_id", "error", "retry_after_ms", "recipient_fault"};
	Jsonb	   *vals[5];

	memset(&job, 0, sizeof(job));
	job.kind = kind;
	job.config = jsonb_make_empty_object();
	job.content = jsonb_make_empty_object();
	memset(&resp, 0, sizeof(resp));
	resp.status = PG_ARGISNULL(1) ? 0 : PG_GETARG_INT32(1);
	initStringInfo(&resp.body);
	if (!PG_ARGISNULL(3))
		appendStringInfoString(&resp.body, text_to_cstring(PG_GETARG_TEXT_PP(3)));
	if (!PG_ARGISNULL(2))
	{
		ArrayType  *arr = PG_GETARG_ARRAYTYPE_P(2);
		Datum	   *elems;
		bool	   *nulls;
		int			n;

		deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
		for (int i = 0; i < n; i++)
		{
			char	   *line;

			if (nulls[i])
				continue;
			line = TextDatumGetCString(elems[i]);
			/* an SMTP reply line, as curl passes it among the headers (see http.c) */
			if (strcmp(kind, "smtp") == 0 && provider_smtp_refusal_line(line))
				resp.smtp_reply = line;
			/* curl's error message ("RCPT failed: 550"), when a test gives it */
			else if (strncmp(line, "curl-error: ", 12) == 0)
				resp.curl_error = line + 12;
			else
				resp.headers = lappend(resp.headers, line);
		}
	}
	resp.curl_code = PG_ARGISNULL(4) ? 0 : PG_GETARG_INT32(4);
	if (resp.curl_code != 0 && resp.curl_error == NULL)
		resp.curl_error = "simulated transport error";

	memset(&res, 0, sizeof(res));
	{
		ProviderRequest req;

		memset(&req, 0, sizeof(req));
		req.purpose = PG_ARGISNULL(5) ? 0 : PG_GETARG_INT32(5);
		adapter_or_error(kind)->classify(&job, &req, &resp, &res);
	}

	vals[0] = jsonb_make_string(outcomes[res.outcome]);
	vals[1] = res.message_id ? jsonb_make_string(res.message_id) : NULL;
	vals[2] = res.error ? jsonb_make_string(res.error) : NULL;
	vals[3] = jsonb_make_int(res.retry_after_ms);
	vals[4] = jsonb_make_bool(res.recipient_fault);
	PG_RETURN_JSONB_P(jsonb_make_object(5, keys, vals));
}

PG_FUNCTION_INFO_V1(wake_dispatchers);

/* Wakes the dispatchers at commit. */
Datum
wake_dispatchers(PG_FUNCTION_ARGS)
{
	notiflow_wake_dispatchers_at_commit();
	PG_RETURN_VOID();
}
