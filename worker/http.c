/*
 * http.c — libcurl multi driver for the dispatcher.
 *
 * All transfers run on the dispatcher's own thread: curl's socket callback
 * registers sockets in an epoll descriptor, its timer callback records a
 * deadline, and the dispatcher waits on that descriptor and its latch with
 * WaitLatchOrSocket.  http_drive() hands ready sockets and due timers to
 * curl_multi_socket_action() and collects finished transfers.
 *
 * Callbacks (write, header, socket, timer, open-socket, close-socket,
 * pre-request) touch only plain C memory (malloc) — never palloc, ereport or
 * anything else of PostgreSQL — so they would be safe even if libcurl ran
 * them elsewhere.  Responses are copied into palloc'd memory by http_drive()
 * afterwards.
 *
 * Connections are reused across transfers (one multi handle for the worker's
 * life); HTTP/2 is negotiated over TLS when the server offers it and
 * multiplexed.  URLs that come from data are refused when they resolve to
 * loopback, private or link-local addresses, unless
 * notiflow.allow_private_urls is on.
 */
#include "postgres.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include "portability/instr_time.h"
#include "utils/memutils.h"
#include "utils/fmgrprotos.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"

#include "http.h"
#include "jsonb_util.h"
#include "worker.h"

struct HttpTransfer
{
	void	   *owner;
	const DeliveryJob *job;
	ProviderRequest *req;
	CURL	   *easy;
	struct curl_slist *headers;
	struct curl_slist *rcpt;
	curl_mime  *mime;
	char	   *body;			/* malloc'd response body */
	size_t		body_len;
	size_t		body_cap;
	char	   *hdrs;			/* malloc'd response header lines */
	size_t		hdrs_len;
	size_t		hdrs_cap;
	bool		check_private;
	bool		refused_private;	/* opensocket_cb refused an address */
	bool		opened_public;	/* ... and opened another (a public one) */
	bool		refused_reused; /* prereq_cb refused a reused connection */
	char		errbuf[CURL_ERROR_SIZE];
	instr_time	started;
	ProviderResponse resp;
};

static CURLM *multi = NULL;
static int	epoll_fd = -1;
static int	in_flight = 0;

/*
 * What the socket callback knows of each descriptor (plain C memory, indexed
 * by descriptor).  curl "removes" a connection's socket whenever its transfer
 * ends and asks for it again with the next request, which cost three
 * epoll_ctl calls (DEL, a failing MOD, ADD) per such request, counted with
 * strace in the dispatch benchmark.  A socket opened by opensocket_cb
 * therefore stays registered while its connection idles in curl's cache,
 * and asked for again it costs one call: ADD, where "already there" is the
 * expected answer.  That call is kept on purpose: curl 7.88 closes a socket
 * that never finished connecting without calling closesocket_cb, so the
 * state of a descriptor may be stale and its number taken by a socket not
 * yet in the set (the resolver's, say).  Should an idle socket become ready
 * (the server closed the connection), http_drive takes it out of the set.
 * Other sockets are registered and removed as curl asks.
 */
#define SOCK_OURS		0x01	/* opened by opensocket_cb (closesocket_cb forgets it) */
#define SOCK_REGISTERED 0x02	/* in the epoll set */
#define SOCK_WANTED		0x04	/* curl watches it */
#define SOCK_IN			0x08	/* registered for reading */
#define SOCK_OUT		0x10	/* registered for writing */
static uint8 *sock_state = NULL;
static int	sock_state_len = 0;

/*
 * Easy handles of finished transfers, kept for the next ones (room for
 * notiflow.http_concurrency, sized by http_configure): curl_easy_reset keeps
 * a handle's buffers, which curl_easy_cleanup and curl_easy_init would free
 * and allocate again (about a tenth of curl's instructions per request,
 * counted with cachegrind).
 */
static CURL **idle_easy = NULL;
static int	n_idle_easy = 0;
static bool timer_armed = false;

/*
 * True when the environment names no proxy: transfers then tell curl so
 * (CURLOPT_PROXY and CURLOPT_NOPROXY empty), which spares curl looking up
 * five variables per transfer.  The environment of a worker does not
 * change; with a proxy variable set, curl finds it as usual.
 */
static bool no_proxy_in_environment = false;
static struct timespec timer_deadline;

/* Appends to a malloc'd buffer; false when out of memory. */
static bool
buffer_append(char **buf, size_t *len, size_t *cap, const char *data, size_t n)
{
	if (*len + n + 1 > *cap)
	{
		size_t		newcap = Max(*cap * 2, *len + n + 1024);
		char	   *p = realloc(*buf, newcap);

		if (p == NULL)
			return false;
		*buf = p;
		*cap = newcap;
	}
	memcpy(*buf + *len, data, n);
	*len += n;
	(*buf)[*len] = '\0';
	return true;
}

/* Collects the response body (1 MB kept at most). */
static size_t
write_cb(char *data, size_t size, size_t nmemb, void *userp)
{
	HttpTransfer *t = userp;
	size_t		n = size * nmemb;

	if (t->body_len < 1024 * 1024 && !buffer_append(&t->body, &t->body_len, &t->body_cap, data, n))
		return 0;
	return n;
}

/* Collects response header lines (of the last response). */
static size_t
header_cb(char *data, size_t size, size_t nmemb, void *userp)
{
	HttpTransfer *t = userp;
	size_t		n = size * nmemb;

	if (n >= 5 && strncmp(data, "HTTP/", 5) == 0)
		t->hdrs_len = 0;		/* a new response (after 100 Continue, say) */
	if (!buffer_append(&t->hdrs, &t->hdrs_len, &t->hdrs_cap, data, n))
		return 0;
	return n;
}

/* The IPv4 address in four bytes of network order, in host order. */
static uint32
ipv4_at(const unsigned char *b)
{
	return (uint32) b[0] << 24 | (uint32) b[1] << 16 | (uint32) b[2] << 8 | b[3];
}

/* True when the IPv4 address (host order) is not a public unicast address. */
static bool
ipv4_is_private(uint32 a)
{
	return (a >> 24) == 127 || (a >> 24) == 10 || (a >> 24) == 0 ||
		(a >> 20) == (172 << 4 | 1) || (a >> 16) == (192 << 8 | 168) ||
		(a >> 16) == (169 << 8 | 254) || (a >> 22) == (100 << 2 | 1) ||
		(a >> 8) == (192 << 16 | 0 << 8 | 0) ||	/* 192.0.0.0/24, IETF protocol assignments */
		(a >> 17) == (198 << 7 | 18 >> 1) ||	/* 198.18.0.0/15, benchmarking */
		(a >> 28) >= 0xe;		/* 224.0.0.0/4 multicast, 240.0.0.0/4 reserved, broadcast */
}

/*
 * True when addr is not a public unicast address: loopback, private,
 * link-local, shared, multicast, reserved, unspecified.  An IPv6 address
 * that carries an IPv4 address is judged by it: IPv4-mapped ::ffff:a.b.c.d,
 * NAT64's 64:ff9b::a.b.c.d (DNS64 gives every IPv4-only name one; the
 * gateway reaches the IPv4 address, private ones too), 6to4
 * 2002:a.b.c.d::/48.  Any other must be global unicast (2000::/3): not
 * site-local, unique local, the local-use NAT64 prefix or IPv4-compatible.
 */
static bool
address_is_private(const struct sockaddr *addr)
{
	if (addr->sa_family == AF_INET)
		return ipv4_is_private(ntohl(((const struct sockaddr_in *) addr)->sin_addr.s_addr));
	if (addr->sa_family == AF_INET6)
	{
		const unsigned char *b = ((const struct sockaddr_in6 *) addr)->sin6_addr.s6_addr;
		static const unsigned char zeros[10] = {0};
		static const unsigned char nat64[12] = {0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0};

		if (b[10] == 0xff && b[11] == 0xff && memcmp(b, zeros, 10) == 0)
			return ipv4_is_private(ipv4_at(b + 12));
		if (memcmp(b, nat64, 12) == 0)
			return ipv4_is_private(ipv4_at(b + 12));
		if ((b[0] & 0xe0) != 0x20)
			return true;
		if (b[0] == 0x20 && b[1] == 0x02)
			return ipv4_is_private(ipv4_at(b + 2));
		return false;
	}
	return true;					/* no other family is expected: refused */
}

/* The state of descriptor s (grown as needed); NULL when out of memory. */
static uint8 *
sock_slot(curl_socket_t s)
{
	if (s < 0)
		return NULL;
	if (s >= sock_state_len)
	{
		int			n = Max(Max(s + 1, sock_state_len * 2), 64);
		uint8	   *grown = realloc(sock_state, n);

		if (grown == NULL)
			return NULL;
		memset(grown + sock_state_len, 0, n - sock_state_len);
		sock_state = grown;
		sock_state_len = n;
	}
	return &sock_state[s];
}

/* Opens a socket unless the address is private and the URL came from data. */
static curl_socket_t
opensocket_cb(void *clientp, curlsocktype purpose, struct curl_sockaddr *address)
{
	HttpTransfer *t = clientp;
	curl_socket_t s;
	uint8	   *st;

	if (t->check_private)
	{
		if (address_is_private(&address->addr))
		{
			t->refused_private = true;
			return CURL_SOCKET_BAD;
		}
		t->opened_public = true;
	}
	s = socket(address->family, address->socktype, address->protocol);
	st = sock_slot(s);
	if (st != NULL)
		*st = SOCK_OURS;		/* new: in no epoll set yet */
	return s;
}

/* Closes a socket opened by opensocket_cb (closing takes it out of the epoll set). */
static int
closesocket_cb(void *clientp, curl_socket_t s)
{
	if (s >= 0 && s < sock_state_len)
		sock_state[s] = 0;
	return close(s);
}

/*
 * Refuses to send on a connection to a private address when the URL came
 * from data: covers connections taken from the reuse cache, which
 * opensocket_cb never sees.
 */
static int
prereq_cb(void *clientp, char *conn_primary_ip, char *conn_local_ip,
		  int conn_primary_port, int conn_local_port)
{
	HttpTransfer *t = clientp;
	struct sockaddr_in v4;
	struct sockaddr_in6 v6;

	if (!t->check_private)
		return CURL_PREREQFUNC_OK;
	memset(&v4, 0, sizeof(v4));
	memset(&v6, 0, sizeof(v6));
	if (inet_pton(AF_INET, conn_primary_ip, &v4.sin_addr) == 1)
		v4.sin_family = AF_INET;
	else if (inet_pton(AF_INET6, conn_primary_ip, &v6.sin6_addr) == 1)
		v6.sin6_family = AF_INET6;
	if ((v4.sin_family == AF_INET && address_is_private((struct sockaddr *) &v4)) ||
		(v6.sin6_family == AF_INET6 && address_is_private((struct sockaddr *) &v6)))
	{
		t->refused_reused = true;
		return CURL_PREREQFUNC_ABORT;
	}
	return CURL_PREREQFUNC_OK;
}

/* Keeps curl's sockets registered in the epoll descriptor (see sock_state). */
static int
socket_cb(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
	struct epoll_event ev;
	uint8	   *st = sock_slot(s);
	bool		known = st != NULL && (*st & (SOCK_OURS | SOCK_REGISTERED)) == (SOCK_OURS | SOCK_REGISTERED);
	uint8		want;

	memset(&ev, 0, sizeof(ev));
	ev.data.fd = s;
	if (what == CURL_POLL_REMOVE)
	{
		if (known)
			*st &= ~SOCK_WANTED;	/* stays registered while it idles */
		else
		{
			epoll_ctl(epoll_fd, EPOLL_CTL_DEL, s, NULL);
			if (st != NULL)
				*st &= SOCK_OURS;
		}
		return 0;
	}
	want = (what & CURL_POLL_IN ? SOCK_IN : 0) | (what & CURL_POLL_OUT ? SOCK_OUT : 0);
	ev.events = (what & CURL_POLL_IN ? EPOLLIN : 0) | (what & CURL_POLL_OUT ? EPOLLOUT : 0);
	if (known && (*st & (SOCK_IN | SOCK_OUT)) != want)
	{
		if (epoll_ctl(epoll_fd, EPOLL_CTL_MOD, s, &ev) != 0)
			epoll_ctl(epoll_fd, EPOLL_CTL_ADD, s, &ev);
	}
	else if (epoll_ctl(epoll_fd, EPOLL_CTL_ADD, s, &ev) != 0 && !(known && errno == EEXIST))
		epoll_ctl(epoll_fd, EPOLL_CTL_MOD, s, &ev);
	if (st != NULL)
		*st = (*st & SOCK_OURS) | SOCK_REGISTERED | SOCK_WANTED | want;
	return 0;
}

/* Records when curl wants to be called back. */
static int
timer_cb(CURLM *m, long timeout_ms, void *userp)
{
	if (timeout_ms < 0)
	{
		timer_armed = false;
		return 0;
	}
	clock_gettime(CLOCK_MONOTONIC, &timer_deadline);
	timer_deadline.tv_sec += timeout_ms / 1000;
	timer_deadline.tv_nsec += (timeout_ms % 1000) * 1000000L;
	if (timer_deadline.tv_nsec >= 1000000000L)
	{
		timer_deadline.tv_sec++;
		timer_deadline.tv_nsec -= 1000000000L;
	}
	timer_armed = true;
	return 0;
}

void
http_init(void)
{
	struct rlimit rl;

	/*
	 * Every request in flight may hold a socket (HTTP/1.1), on top of the
	 * files PostgreSQL keeps open: take the hard limit of descriptors, not
	 * the soft one (often 1,024).  PostgreSQL sized its own file cache at
	 * start and stays within it.
	 */
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max)
	{
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
			elog(LOG, "notiflow: could not raise the limit of open files: %m");
	}
	no_proxy_in_environment = true;
	for (char **e = environ; *e != NULL; e++)
	{
		const char *eq = strchr(*e, '=');
		size_t		n = eq ? (size_t) (eq - *e) : strlen(*e);

		if (n >= 6 && pg_strncasecmp(*e + n - 6, "_proxy", 6) == 0 &&
			!(n == 8 && pg_strncasecmp(*e, "no_proxy", 8) == 0))
			no_proxy_in_environment = false;
	}
	if (curl_global_init(CURL_GLOBAL_ALL) != CURLE_OK)
		elog(ERROR, "notiflow: could not initialise libcurl");
	multi = curl_multi_init();
	epoll_fd = epoll_create1(EPOLL_CLOEXEC);
	if (multi == NULL || epoll_fd < 0)
		elog(ERROR, "notiflow: could not create the HTTP multi handle: %m");
	curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
	curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION, timer_cb);
	curl_multi_setopt(multi, CURLMOPT_PIPELINING, (long) CURLPIPE_MULTIPLEX);
	http_configure();
}

/*
 * Follows notiflow.http_concurrency (at start and after a reload): a host may
 * get as many connections as the worker has requests in flight, and the
 * connection cache keeps that many.  A transfer curl has to park for want of
 * a connection costs about twice the CPU of one it can start (measured with
 * HTTP/1.1 on loopback, 256 transfers over 64 connections against 256 over
 * 256); HTTP/2 multiplexes its transfers over few connections anyway
 * (CURLOPT_PIPEWAIT).  The pool of idle easy handles is sized for the limit.
 */
void
http_configure(void)
{
	curl_multi_setopt(multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long) notiflow_http_concurrency);
	curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, (long) notiflow_http_concurrency);
	while (n_idle_easy > notiflow_http_concurrency)
		curl_easy_cleanup(idle_easy[--n_idle_easy]);
	idle_easy = idle_easy == NULL
		? MemoryContextAlloc(TopMemoryContext, sizeof(CURL *) * notiflow_http_concurrency)
		: repalloc(idle_easy, sizeof(CURL *) * notiflow_http_concurrency);
}

int
http_wait_fd(void)
{
	return epoll_fd;
}

long
http_timeout_ms(void)
{
	struct timespec now;
	long		ms;

	if (!timer_armed)
		return -1;
	clock_gettime(CLOCK_MONOTONIC, &now);
	ms = (timer_deadline.tv_sec - now.tv_sec) * 1000 +
		(timer_deadline.tv_nsec - now.tv_nsec) / 1000000;
	return ms < 0 ? 0 : ms;
}

int
http_in_flight(void)
{
	return in_flight;
}

/*
 * The Date and Message-ID headers a message should carry (RFC 5322 3.6):
 * receiving servers and spam filters frown on mail without them, and a
 * relay is not bound to add them.  The date is formatted by hand (English
 * names whatever the locale); the id is the delivery's, made unique by
 * random bytes, at the sender's domain.
 */
static void
add_date_and_message_id(HttpTransfer *t, const char *from)
{
	static const char *const days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
	static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug",
	"Sep", "Oct", "Nov", "Dec"};
	time_t		now = time(NULL);
	struct tm	tm;
	uint8		rnd[8];
	StringInfoData id;
	const char *at = strrchr(from, '@');

	gmtime_r(&now, &tm);
	t->headers = curl_slist_append(t->headers,
								   psprintf("Date: %s, %02d %s %04d %02d:%02d:%02d +0000", days[tm.tm_wday],
											tm.tm_mday, months[tm.tm_mon], tm.tm_year + 1900,
											tm.tm_hour, tm.tm_min, tm.tm_sec));
	initStringInfo(&id);
	appendStringInfo(&id, "Message-ID: <notiflow." INT64_FORMAT ".", t->job->delivery_id);
	if (!pg_strong_random(rnd, sizeof(rnd)))
		memset(rnd, 0, sizeof(rnd));
	for (int i = 0; i < (int) sizeof(rnd); i++)
		appendStringInfo(&id, "%02x", rnd[i]);
	appendStringInfo(&id, "@%s>", at != NULL && at[1] != '\0' ? at + 1 : "notiflow.invalid");
	t->headers = curl_slist_append(t->headers, id.data);
}

/* Configures an SMTP transfer: envelope, MIME message, TLS. */
static void
setup_smtp(HttpTransfer *t, ProviderRequest *req)
{
	curl_mimepart *part;

	curl_easy_setopt(t->easy, CURLOPT_MAIL_FROM, psprintf("<%s>", req->smtp_from));
	t->rcpt = curl_slist_append(NULL, psprintf("<%s>", req->smtp_to));
	curl_easy_setopt(t->easy, CURLOPT_MAIL_RCPT, t->rcpt);
	if (req->smtp_starttls)
		curl_easy_setopt(t->easy, CURLOPT_USE_SSL, (long) CURLUSESSL_ALL);

	t->headers = curl_slist_append(t->headers, psprintf("From: %s", req->smtp_from_header ? req->smtp_from_header : req->smtp_from));
	t->headers = curl_slist_append(t->headers, psprintf("To: <%s>", req->smtp_to));
	t->headers = curl_slist_append(t->headers, psprintf("Subject: %s", email_header_text(req->smtp_subject ? req->smtp_subject : "", true)));
	t->headers = curl_slist_append(t->headers, psprintf("X-Notiflow-Delivery: " INT64_FORMAT, t->job->delivery_id));
	add_date_and_message_id(t, req->smtp_from);

	t->mime = curl_mime_init(t->easy);
	if (req->smtp_text && req->smtp_text[0] && req->smtp_html && req->smtp_html[0])
	{
		curl_mime  *alt = curl_mime_init(t->easy);

		part = curl_mime_addpart(alt);
		curl_mime_data(part, req->smtp_text, CURL_ZERO_TERMINATED);
		curl_mime_type(part, "text/plain; charset=utf-8");
		curl_mime_encoder(part, "quoted-printable");
		part = curl_mime_addpart(alt);
		curl_mime_data(part, req->smtp_html, CURL_ZERO_TERMINATED);
		curl_mime_type(part, "text/html; charset=utf-8");
		curl_mime_encoder(part, "quoted-printable");
		part = curl_mime_addpart(t->mime);
		curl_mime_subparts(part, alt);
		curl_mime_type(part, "multipart/alternative");
	}
	else
	{
		bool		html = req->smtp_html && req->smtp_html[0];

		part = curl_mime_addpart(t->mime);
		curl_mime_data(part, html ? req->smtp_html : (req->smtp_text ? req->smtp_text : ""),
					   CURL_ZERO_TERMINATED);
		curl_mime_type(part, html ? "text/html; charset=utf-8" : "text/plain; charset=utf-8");
		curl_mime_encoder(part, "quoted-printable");
	}
	curl_easy_setopt(t->easy, CURLOPT_MIMEPOST, t->mime);
}

HttpTransfer *
http_start(const DeliveryJob *job, ProviderRequest *req, void *owner)
{
	HttpTransfer *t = palloc0(sizeof(HttpTransfer));
	ListCell   *lc;
	JsonbValue *tv = jsonb_get(job->config, "timeout_ms");
	char	   *ca_file = jsonb_get_string(job->config, "ca_file");
	/* bounded, not raising: this runs outside any transaction */
	long		timeout_ms = jsonb_value_int_bounded(tv, 10000, 1);
	CURLMcode	mc;

	t->owner = owner;
	t->job = job;
	t->req = req;
	t->check_private = req->url_from_data && !notiflow_allow_private_urls;
	t->refused_private = t->opened_public = t->refused_reused = false;
	t->easy = n_idle_easy > 0 ? idle_easy[--n_idle_easy] : curl_easy_init();
	if (t->easy == NULL)
		elog(ERROR, "notiflow: curl_easy_init failed");
	curl_easy_setopt(t->easy, CURLOPT_URL, req->url);
	curl_easy_setopt(t->easy, CURLOPT_PRIVATE, t);
	curl_easy_setopt(t->easy, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(t->easy, CURLOPT_TIMEOUT_MS, timeout_ms);
	curl_easy_setopt(t->easy, CURLOPT_CONNECTTIMEOUT_MS, Min(timeout_ms, 5000L));
	curl_easy_setopt(t->easy, CURLOPT_ERRORBUFFER, t->errbuf);
	curl_easy_setopt(t->easy, CURLOPT_WRITEFUNCTION, write_cb);
	curl_easy_setopt(t->easy, CURLOPT_WRITEDATA, t);
	curl_easy_setopt(t->easy, CURLOPT_HEADERFUNCTION, header_cb);
	curl_easy_setopt(t->easy, CURLOPT_HEADERDATA, t);
	curl_easy_setopt(t->easy, CURLOPT_OPENSOCKETFUNCTION, opensocket_cb);
	curl_easy_setopt(t->easy, CURLOPT_OPENSOCKETDATA, t);
	curl_easy_setopt(t->easy, CURLOPT_CLOSESOCKETFUNCTION, closesocket_cb);
	curl_easy_setopt(t->easy, CURLOPT_PREREQFUNCTION, prereq_cb);
	curl_easy_setopt(t->easy, CURLOPT_PREREQDATA, t);
	curl_easy_setopt(t->easy, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(t->easy, CURLOPT_PROTOCOLS_STR, req->smtp ? "smtp,smtps" : "http,https");
	curl_easy_setopt(t->easy, CURLOPT_HTTP_VERSION, (long) CURL_HTTP_VERSION_2TLS);
	curl_easy_setopt(t->easy, CURLOPT_PIPEWAIT, 1L);
	curl_easy_setopt(t->easy, CURLOPT_USERAGENT, "notiflow/0.1");
	/*
	 * A URL from data that must not reach private addresses goes direct:
	 * through a proxy, the address checked would be the proxy's, not the
	 * target's.
	 */
	if (no_proxy_in_environment || t->check_private)
	{
		curl_easy_setopt(t->easy, CURLOPT_PROXY, "");
		curl_easy_setopt(t->easy, CURLOPT_NOPROXY, "");
	}
	if (ca_file != NULL)
		curl_easy_setopt(t->easy, CURLOPT_CAINFO, ca_file);
	if (req->username != NULL)
		curl_easy_setopt(t->easy, CURLOPT_USERNAME, req->username);
	if (req->password != NULL)
		curl_easy_setopt(t->easy, CURLOPT_PASSWORD, req->password);
	if (req->aws_sigv4 != NULL)
		curl_easy_setopt(t->easy, CURLOPT_AWS_SIGV4, req->aws_sigv4);

	if (req->smtp)
		setup_smtp(t, req);
	else
	{
		foreach(lc, req->headers)
			t->headers = curl_slist_append(t->headers, (const char *) lfirst(lc));
		/* no 100-continue round trip; but a SigV4 signature would cover the empty header */
		if (req->aws_sigv4 == NULL)
			t->headers = curl_slist_append(t->headers, "Expect:");
		curl_easy_setopt(t->easy, CURLOPT_CUSTOMREQUEST, req->method ? req->method : "POST");
		curl_easy_setopt(t->easy, CURLOPT_POSTFIELDS, req->body.data);
		curl_easy_setopt(t->easy, CURLOPT_POSTFIELDSIZE, (long) req->body.len);
	}
	curl_easy_setopt(t->easy, CURLOPT_HTTPHEADER, t->headers);

	INSTR_TIME_SET_CURRENT(t->started);
	mc = curl_multi_add_handle(multi, t->easy);
	if (mc != CURLM_OK)
		elog(ERROR, "notiflow: curl_multi_add_handle failed: %s", curl_multi_strerror(mc));
	in_flight++;
	return t;
}

/* Fills the ProviderResponse of a finished transfer, in the transfer's own memory context. */
static void
finish_transfer(HttpTransfer *t, CURLcode code)
{
	ProviderResponse *r = &t->resp;
	instr_time	now;
	char	   *save = NULL;
	MemoryContext old = MemoryContextSwitchTo(GetMemoryChunkContext(t));

	INSTR_TIME_SET_CURRENT(now);
	INSTR_TIME_SUBTRACT(now, t->started);
	/*
	 * A name may resolve to a private address and a public one: the refusal
	 * of the first does not stand when curl went on to the second (whatever
	 * became of the request there: a timeout is retried, not refused).
	 */
	t->refused_private = code != CURLE_OK &&
		(t->refused_reused || (t->refused_private && !t->opened_public));
	curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &r->status);
	r->curl_code = (int) code;
	r->curl_error = code == CURLE_OK ? NULL
		: pstrdup(t->refused_private ? "refused: the URL resolves to a private address"
				  : (t->errbuf[0] ? t->errbuf : curl_easy_strerror(code)));
	r->latency_ms = INSTR_TIME_GET_MILLISEC(now);
	initStringInfo(&r->body);
	if (t->body_len > 0)
		appendBinaryStringInfo(&r->body, t->body, t->body_len);
	if (t->hdrs_len > 0)
	{
		for (char *line = strtok_r(t->hdrs, "\r\n", &save); line; line = strtok_r(NULL, "\r\n", &save))
		{
			/*
			 * curl passes an SMTP server's reply lines as headers ("NNN text"
			 * or "NNN-text"): the last refusal (4xx, 5xx) is kept
			 */
			if (t->req->smtp && provider_smtp_refusal_line(line))
				r->smtp_reply = provider_text(line, strlen(line));
			else if (strchr(line, ':') != NULL)
				r->headers = lappend(r->headers, pstrdup(line));
		}
	}
	MemoryContextSwitchTo(old);
}

List *
http_drive(void)
{
	struct epoll_event events[64];
	int			n;
	int			running;
	CURLMsg    *msg;
	int			queued;
	List	   *done = NIL;

	n = epoll_wait(epoll_fd, events, lengthof(events), 0);
	for (int i = 0; i < n; i++)
	{
		int			flags = 0;
		int			fd = events[i].data.fd;

		if (fd < sock_state_len && (sock_state[fd] & SOCK_OURS) && !(sock_state[fd] & SOCK_WANTED))
		{
			/* an idle connection's socket became ready: not watched any more */
			epoll_ctl(epoll_fd, EPOLL_CTL_DEL, fd, NULL);
			sock_state[fd] = SOCK_OURS;
			continue;
		}
		if (events[i].events & EPOLLIN)
			flags |= CURL_CSELECT_IN;
		if (events[i].events & EPOLLOUT)
			flags |= CURL_CSELECT_OUT;
		if (events[i].events & (EPOLLERR | EPOLLHUP))
			flags |= CURL_CSELECT_ERR;
		curl_multi_socket_action(multi, fd, flags, &running);
	}
	if (timer_armed && http_timeout_ms() == 0)
	{
		timer_armed = false;
		curl_multi_socket_action(multi, CURL_SOCKET_TIMEOUT, 0, &running);
	}
	while ((msg = curl_multi_info_read(multi, &queued)) != NULL)
	{
		HttpTransfer *t;

		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **) &t);
		finish_transfer(t, msg->data.result);
		curl_multi_remove_handle(multi, t->easy);
		in_flight--;
		done = lappend(done, t);
	}
	return done;
}

ProviderResponse *
http_transfer_response(HttpTransfer *t)
{
	return &t->resp;
}

bool
http_transfer_refused_private(HttpTransfer *t)
{
	return t->refused_private;
}

void *
http_transfer_owner(HttpTransfer *t)
{
	return t->owner;
}

void
http_transfer_free(HttpTransfer *t)
{
	if (n_idle_easy < notiflow_http_concurrency)
	{
		/* reset now: an idle handle keeps no pointer to this transfer's memory */
		curl_easy_reset(t->easy);
		idle_easy[n_idle_easy++] = t->easy;
	}
	else
		curl_easy_cleanup(t->easy);
	curl_slist_free_all(t->headers);
	curl_slist_free_all(t->rcpt);
	curl_mime_free(t->mime);
	free(t->body);
	free(t->hdrs);
	pfree(t);
}
