/*
 * provider_email.c — what the email adapters (smtp, sendgrid, mailgun, ses)
 * share: reading an email delivery's recipient, configured sender and rendered
 * content, refusing what would break a mail header (CR/LF) or has no body, and
 * writing header text that is not plain ASCII (RFC 2047 encoded words).
 */
#include "postgres.h"

#include "common/base64.h"
#include "mb/pg_wchar.h"

#include "provider.h"

/* Raises an error when a value that ends up in a mail header contains CR or LF. */
static void
email_check_line(const char *field, const char *value)
{
	if (strpbrk(value, "\r\n") != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("email header value contains a line break"),
				 errdetail("%s: CR and LF are not allowed", field)));
}

/* Returns a content field, or NULL when it is absent or empty. */
static char *
email_content(const DeliveryJob *job, const char *key)
{
	char	   *s = provider_content_string(job, key);

	return s[0] != '\0' ? s : NULL;
}

/* Returns s without leading and trailing blanks (s is modified). */
static char *
email_trim(char *s)
{
	size_t		len;

	while (*s == ' ' || *s == '\t')
		s++;
	len = strlen(s);
	while (len > 0 && (s[len - 1] == ' ' || s[len - 1] == '\t'))
		s[--len] = '\0';
	return s;
}

/* Splits m->from into display name and address; raises an error when it has no address. */
static void
email_split_from(EmailParts *m)
{
	const char *lt = strrchr(m->from, '<');
	const char *gt = lt ? strchr(lt, '>') : NULL;
	char	   *at;

	m->from_name = NULL;
	if (lt == NULL)
		m->from_address = email_trim(pstrdup(m->from));
	else
	{
		char	   *name = email_trim(pnstrdup(m->from, lt - m->from));
		size_t		len = strlen(name);

		if (len >= 2 && name[0] == '"' && name[len - 1] == '"')
		{
			/* a quoted string: a quoted pair (\" or \\) stands for its character */
			char	   *w = ++name;

			name[len - 2] = '\0';
			for (const char *r = name; *r; r++)
				*w++ = (r[0] == '\\' && r[1] != '\0') ? *++r : *r;
			*w = '\0';
		}
		if (name[0] != '\0')
			m->from_name = name;
		m->from_address = gt ? email_trim(pnstrdup(lt + 1, gt - lt - 1)) : "";
	}
	at = strchr(m->from_address, '@');
	if (at == NULL || at == m->from_address || at[1] == '\0' || strchr(at + 1, '@') != NULL ||
		strpbrk(m->from_address, " \t<>\",;") != NULL ||
		(gt != NULL && email_trim(pstrdup(gt + 1))[0] != '\0'))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid sender address \"%s\"", m->from),
				 errdetail("config.from: expected an address or \"Name <address>\"")));
}

/* Reads and checks the recipient, the sender and the content of an email delivery. */
void
provider_email_read(const DeliveryJob *job, EmailParts *m)
{
	if (job->recipient == NULL || job->recipient[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("email delivery has no recipient"),
				 errdetail("recipient: an email address is required")));
	m->to = pstrdup(job->recipient);
	m->from = provider_config_required(job, "from");
	m->subject = provider_content_string(job, "subject");
	m->text = email_content(job, "text");
	m->html = email_content(job, "html");
	email_check_line("recipient", m->to);
	email_check_line("config.from", m->from);
	email_check_line("content.subject", m->subject);
	if (m->text == NULL && m->html == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("email content has no body"),
				 errdetail("content: text or html is required")));
	email_split_from(m);
}

/*
 * The longest run of text one encoded word carries: a line holding encoded
 * words may have 76 characters (RFC 2047 2); "Subject: " takes 9 of them,
 * "=?UTF-8?B?" and "?=" 12, and 39 bytes make 52 characters of base64.
 */
#define EMAIL_WORD_BYTES 39

char *
email_header_text(const char *text, bool fold)
{
	int			len = strlen(text);
	bool		plain = len <= 76;
	StringInfoData out;
	int			done = 0;

	for (const unsigned char *p = (const unsigned char *) text; *p && plain; p++)
		plain = *p >= 0x20 && *p < 0x7f;
	if (plain)
		return pstrdup(text);
	initStringInfo(&out);
	while (done < len)
	{
		/* whole characters only: a word is decoded on its own */
		int			n = pg_encoding_mbcliplen(PG_UTF8, text + done, len - done, EMAIL_WORD_BYTES);
		char		enc[EMAIL_WORD_BYTES * 2];
		int			m;

		if (n <= 0 || n > len - done)	/* text that is not UTF-8 */
			n = Min(len - done, EMAIL_WORD_BYTES);
		m = pg_b64_encode(text + done, n, enc, sizeof(enc) - 1);
		enc[Max(m, 0)] = '\0';
		if (done > 0)
			appendStringInfoString(&out, fold ? "\r\n " : " ");	/* folded: one word per line */
		appendStringInfo(&out, "=?UTF-8?B?%s?=", enc);
		done += n;
	}
	return out.data;
}

/*
 * Whether text is nothing but RFC 2047 encoded words ("=?charset?B|Q?text?=",
 * separated by spaces), which a receiver decodes only outside a quoted
 * string.  Nothing else may stand bare in a display name: a comma or an @
 * outside a word would make another mailbox.
 */
static bool
email_encoded_words(const char *text)
{
	const char *p = text;

	do
	{
		size_t		n;
		const char *allowed;

		if (strncmp(p, "=?", 2) != 0)
			return false;
		p += 2;
		n = strcspn(p, "? \t");	/* charset */
		if (n == 0 || p[n] != '?')
			return false;
		p += n + 1;
		if (strchr("BbQq", *p) == NULL || *p == '\0' || p[1] != '?')
			return false;
		/* encoded text: base64 for B; for Q in a phrase, RFC 2047 5(3): no specials */
		allowed = (*p == 'B' || *p == 'b') ? "+/=" : "!*+-/=_";
		p += 2;
		for (; *p != '\0' && *p != '?'; p++)
			if (!isalnum((unsigned char) *p) && strchr(allowed, *p) == NULL)
				return false;
		if (strncmp(p, "?=", 2) != 0)
			return false;
		p += 2;
		if (*p == ' ' || *p == '\t')
			p++;
		else if (*p != '\0')
			return false;
	} while (*p != '\0');
	return true;
}

char *
email_from_header(const EmailParts *m)
{
	StringInfoData out;
	bool		ascii = true;

	if (m->from_name == NULL)
		return pstrdup(m->from_address);
	for (const unsigned char *p = (const unsigned char *) m->from_name; *p; p++)
		ascii &= *p >= 0x20 && *p < 0x7f;
	initStringInfo(&out);
	if (ascii && email_encoded_words(m->from_name))
		appendStringInfoString(&out, m->from_name);	/* given encoded already */
	else if (ascii)
	{
		/* a quoted string: commas, dots and the like may not stand bare in a phrase */
		appendStringInfoChar(&out, '"');
		for (const char *p = m->from_name; *p; p++)
		{
			if (*p == '"' || *p == '\\')
				appendStringInfoChar(&out, '\\');
			appendStringInfoChar(&out, *p);
		}
		appendStringInfoChar(&out, '"');
	}
	else
		appendStringInfoString(&out, email_header_text(m->from_name, false));
	appendStringInfo(&out, " <%s>", m->from_address);
	return out.data;
}
