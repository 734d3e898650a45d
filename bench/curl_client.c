/*
 * bench/curl_client.c — the fastest a libcurl client can move the
 * benchmark's requests, with nothing of notiflow around it.
 *
 * bench/dispatch.sh runs W of these at once (W = dispatchers of the
 * configuration) next to wrk and the dispatchers, against the same provider
 * double: it is the ceiling of a dispatcher that did no database work at all,
 * measured in the same run.  Each process keeps C transfers in flight for D
 * seconds the way worker/http.c does: one multi handle driven by
 * curl_multi_socket_action and epoll, CURLMOPT_MAX_HOST_CONNECTIONS and
 * CURLMOPT_MAXCONNECTS = C, HTTP/2 where offered (PIPEWAIT), easy handles
 * reset and reused, the same SendGrid POST as test/doubles/wrk_sendgrid.lua
 * with its Authorization header, "Expect:" off.  Every answer must be 2xx.
 *
 *   curl_client URL API_KEY CONCURRENCY SECONDS
 *
 * prints one line: requests seconds cpu_us_per_request
 * (CPU: this process's user + system time from getrusage).
 */
#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <time.h>

static const char body[] =
	"{\"personalizations\":[{\"to\":[{\"email\":\"ada@example.test\"}]}],"
	"\"from\":{\"email\":\"noreply@example.test\"},\"subject\":\"Welcome\","
	"\"content\":[{\"type\":\"text/plain\",\"value\":\"Hello Ada\"}]}";

static int	epfd;
static double timer_at = -1;	/* when curl wants CURL_SOCKET_TIMEOUT; -1: no timer */
static CURLM *multi;
static char *url;
static struct curl_slist *headers;
static long done_ok;

static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int
socket_cb(CURL *e, curl_socket_t s, int what, void *u, void *sp)
{
	struct epoll_event ev = {0};

	(void) e;
	(void) u;
	if (what == CURL_POLL_REMOVE)
	{
		epoll_ctl(epfd, EPOLL_CTL_DEL, s, NULL);
		curl_multi_assign(multi, s, NULL);
		return 0;
	}
	ev.events = (what & CURL_POLL_IN ? EPOLLIN : 0) | (what & CURL_POLL_OUT ? EPOLLOUT : 0);
	ev.data.fd = s;
	if (sp == NULL)
	{
		if (epoll_ctl(epfd, EPOLL_CTL_ADD, s, &ev) != 0)
		{
			perror("curl_client: epoll_ctl add");
			exit(1);
		}
		curl_multi_assign(multi, s, (void *) 1);
	}
	else if (epoll_ctl(epfd, EPOLL_CTL_MOD, s, &ev) != 0)
	{
		perror("curl_client: epoll_ctl mod");
		exit(1);
	}
	return 0;
}

static int
timer_cb(CURLM *m, long ms, void *u)
{
	(void) m;
	(void) u;
	timer_at = ms < 0 ? -1 : now() + ms / 1000.0;
	return 0;
}

static size_t
discard(char *p, size_t size, size_t n, void *u)
{
	(void) p;
	(void) u;
	return size * n;
}

static void
start(CURL *easy)
{
	curl_easy_setopt(easy, CURLOPT_URL, url);
	curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, 30000L);
	curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
	curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, discard);
	curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, discard);
	curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(easy, CURLOPT_HTTP_VERSION, (long) CURL_HTTP_VERSION_2TLS);
	curl_easy_setopt(easy, CURLOPT_PIPEWAIT, 1L);
	curl_easy_setopt(easy, CURLOPT_USERAGENT, "notiflow/0.1");
	curl_easy_setopt(easy, CURLOPT_PROXY, "");
	curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST, "POST");
	curl_easy_setopt(easy, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE, (long) (sizeof(body) - 1));
	curl_easy_setopt(easy, CURLOPT_HTTPHEADER, headers);
	if (curl_multi_add_handle(multi, easy) != CURLM_OK)
	{
		fprintf(stderr, "curl_client: curl_multi_add_handle failed\n");
		exit(1);
	}
}

int
main(int argc, char **argv)
{
	long		concurrency;
	double		seconds,
				began,
				until;
	int			running = 0;
	char		auth[512];
	struct rusage ru;

	if (argc != 5)
	{
		fprintf(stderr, "usage: curl_client URL API_KEY CONCURRENCY SECONDS\n");
		return 2;
	}
	url = argv[1];
	concurrency = strtol(argv[3], NULL, 10);
	seconds = strtod(argv[4], NULL);
	if (concurrency < 1 || seconds <= 0 ||
		snprintf(auth, sizeof(auth), "Authorization: Bearer %s", argv[2]) >= (int) sizeof(auth))
	{
		fprintf(stderr, "curl_client: bad CONCURRENCY, SECONDS or API_KEY\n");
		return 2;
	}
	if (curl_global_init(CURL_GLOBAL_ALL) != CURLE_OK || (multi = curl_multi_init()) == NULL ||
		(epfd = epoll_create1(EPOLL_CLOEXEC)) < 0)
	{
		fprintf(stderr, "curl_client: cannot initialise libcurl or epoll\n");
		return 1;
	}
	headers = curl_slist_append(NULL, auth);
	headers = curl_slist_append(headers, "Content-Type: application/json");
	headers = curl_slist_append(headers, "Expect:");
	curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
	curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION, timer_cb);
	curl_multi_setopt(multi, CURLMOPT_PIPELINING, (long) CURLPIPE_MULTIPLEX);
	curl_multi_setopt(multi, CURLMOPT_MAX_HOST_CONNECTIONS, concurrency);
	curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, concurrency);

	began = now();
	until = began + seconds;
	for (long i = 0; i < concurrency; i++)
		start(curl_easy_init());
	curl_multi_socket_action(multi, CURL_SOCKET_TIMEOUT, 0, &running);

	for (;;)
	{
		struct epoll_event evs[64];
		int			n;
		CURLMsg    *msg;
		int			left;
		double		t = now();
		int			wait_ms = 100;

		if (t >= until && running == 0)
			break;
		if (timer_at >= 0)
			wait_ms = timer_at <= t ? 0 : (int) ((timer_at - t) * 1000) + 1;
		n = epoll_wait(epfd, evs, 64, wait_ms);
		if (n < 0 && errno != EINTR)
		{
			perror("curl_client: epoll_wait");
			return 1;
		}
		for (int i = 0; i < n; i++)
		{
			int			flags = (evs[i].events & EPOLLIN ? CURL_CSELECT_IN : 0) |
				(evs[i].events & EPOLLOUT ? CURL_CSELECT_OUT : 0) |
				(evs[i].events & (EPOLLERR | EPOLLHUP) ? CURL_CSELECT_ERR : 0);

			curl_multi_socket_action(multi, evs[i].data.fd, flags, &running);
		}
		if (timer_at >= 0 && now() >= timer_at)
		{
			timer_at = -1;
			curl_multi_socket_action(multi, CURL_SOCKET_TIMEOUT, 0, &running);
		}
		while ((msg = curl_multi_info_read(multi, &left)) != NULL)
		{
			CURL	   *easy = msg->easy_handle;
			long		status = 0;

			if (msg->msg != CURLMSG_DONE)
				continue;
			curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
			if (msg->data.result != CURLE_OK || status < 200 || status > 299)
			{
				fprintf(stderr, "curl_client: request failed: %s, HTTP %ld\n",
						curl_easy_strerror(msg->data.result), status);
				return 1;
			}
			done_ok++;
			curl_multi_remove_handle(multi, easy);
			if (now() < until)
			{
				curl_easy_reset(easy);
				start(easy);
			}
			else
				curl_easy_cleanup(easy);
		}
	}
	getrusage(RUSAGE_SELF, &ru);
	printf("%ld %.3f %.1f\n", done_ok, now() - began,
		   done_ok > 0 ? (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e6 / done_ok +
		   (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / (double) done_ok : 0.0);
	curl_multi_cleanup(multi);
	curl_slist_free_all(headers);
	curl_global_cleanup();
	return 0;
}
