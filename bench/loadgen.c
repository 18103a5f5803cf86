/* SPDX-License-Identifier: Apache-2.0 */
/*
 * loadgen: a small HTTP/1.1 load client for bench/run.py.
 *
 * One thread, epoll, non-blocking sockets, persistent connections.
 *
 *   rate mode (-r RATE > 0): open loop.  Request i is due at
 *     t0 + i / RATE; a due request goes out on an idle connection, or waits
 *     for one.  Its latency is measured from the time it was due, not from
 *     the time it could be sent, so a stalled server is charged for every
 *     request it delayed (no coordinated omission).
 *   closed mode (-r 0): each connection sends its next request as soon as
 *     the previous answer is complete (c=1 for added-latency runs).
 *   sse mode (--sse): each connection runs streams back to back and
 *     measures the time to the first SSE event, the gaps between events,
 *     and, when the upstream stamps events (fakeprov's
 *     x-fake-sse-timestamps: 1 writes ": t=<CLOCK_MONOTONIC us>"), each
 *     event's delivery delay from the upstream's write to our read.
 *     A stream with fewer events than --expect-events, or one that ends
 *     without its final chunk, is short; its missing events are lost.
 *
 * Latencies go into a log-bucketed histogram (128 linear sub-buckets per
 * power of two: under 0.8 % relative error, HdrHistogram-style).  The
 * report is one JSON line on stdout.
 *
 *   loadgen [-c CONNS] [-r RATE] [-d SECONDS] [-n REQUESTS] [-w WARMUP]
 *           [-H 'Name: value']... [-b BODY | -B FILE | -z BYTES]
 *           [--sse --expect-events N --stall-us US] [--stagger-ms MS]
 *           [--grace-ms MS] [-l LABEL] [-m METHOD] http://127.0.0.1:PORT/path
 *
 * --grace-ms (default 30000) bounds how long after -d late requests are
 * still sent and answers awaited.
 */

#include <sys/types.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define SUB_BITS 10
#define SUB_COUNT (1 << SUB_BITS)
#define HIST_SIZE ((64 - SUB_BITS + 1) * SUB_COUNT)
#define RBUF_SIZE (64 * 1024)
#define MAX_HEAD (64 * 1024)
#define MAX_CONNS 65536
#define MAX_HDRS 64

/* A log-bucketed histogram of nanosecond values. */
struct hist {
	uint64_t h_count[HIST_SIZE];
	uint64_t h_n;
	uint64_t h_max;
	uint64_t h_min;
	double h_sum;
};

static int
hist_index(uint64_t v)
{
	int e, shift;

	if (v < 2 * SUB_COUNT)
		return ((int)v);
	e = 63 - __builtin_clzll(v);
	shift = e - SUB_BITS;
	return ((shift + 1) * SUB_COUNT + (int)((v >> shift) - SUB_COUNT));
}

/* The middle of bucket i. */
static uint64_t
hist_value(int i)
{
	int shift;
	uint64_t lo;

	if (i < 2 * SUB_COUNT)
		return ((uint64_t)i);
	shift = i / SUB_COUNT - 1;
	lo = ((uint64_t)(i % SUB_COUNT) + SUB_COUNT) << shift;
	return (lo + ((1ULL << shift) >> 1));
}

static void
hist_add(struct hist *h, uint64_t v)
{
	h->h_count[hist_index(v)]++;
	if (h->h_n == 0 || v < h->h_min)
		h->h_min = v;
	if (v > h->h_max)
		h->h_max = v;
	h->h_n++;
	h->h_sum += (double)v;
}

static uint64_t
hist_pct(const struct hist *h, double pct)
{
	uint64_t want, seen = 0;
	int i;

	if (h->h_n == 0)
		return (0);
	want = (uint64_t)((double)h->h_n * pct / 100.0 + 0.5);
	if (want < 1)
		want = 1;
	for (i = 0; i < HIST_SIZE; i++) {
		seen += h->h_count[i];
		if (seen >= want) {
			uint64_t v = hist_value(i);

			return (v > h->h_max ? h->h_max : v);
		}
	}
	return (h->h_max);
}

enum pstate {
	P_HEAD,
	P_BODY_LEN,
	P_CHUNK_SIZE,
	P_CHUNK_DATA,
	P_CHUNK_CRLF,
	P_TRAILER,
	P_UNTIL_CLOSE
};

struct conn {
	int c_fd;
	int c_id;
	int c_busy; /* a request is on this connection */
	int c_connecting;
	size_t c_woff; /* bytes of the request written */
	uint64_t c_due; /* ns: when the request was due */
	uint64_t c_sent; /* ns: when its first byte went out */
	uint64_t c_start_at; /* ns: sse/closed stagger */
	/* response parser */
	enum pstate c_ps;
	char *c_head;
	size_t c_headlen;
	int c_status;
	int c_close; /* Connection: close */
	uint64_t c_left; /* content-length or chunk bytes left */
	char c_line[64];
	size_t c_linelen;
	/* sse */
	char c_sline[512];
	size_t c_slinelen;
	int c_sdata; /* the current event has data */
	uint64_t c_stamp; /* its ": t=" stamp, us, or 0 */
	uint64_t c_lastev; /* ns of the previous event */
	long c_events;
	int c_done_seen; /* data: [DONE] */
	int c_warm; /* results are not recorded yet */
};

static struct {
	const char *label;
	const char *method;
	char host[64];
	int port;
	char path[2048];
	int conns;
	double rate;
	double duration;
	long nreq;
	long warmup;
	int sse;
	long expect_events;
	uint64_t stall_ns;
	double stagger;
	uint64_t grace_ns; /* after the end: late sends, answers */
	const char *hdrs[MAX_HDRS];
	int nhdrs;
	char *body;
	size_t bodylen;
} opt = {
    .method = "POST", .conns = 1, .duration = 5, .grace_ns = 30000000000ULL};

static char *g_req;
static size_t g_reqlen;
static struct conn *g_conns;
static int g_ep;
static struct sockaddr_in g_addr;
static volatile sig_atomic_t g_stop;

/* results */
static struct hist g_lat; /* request latency, or time to first event */
static struct hist g_gap; /* sse: inter-event gap */
static struct hist g_dly; /* sse: delivery delay after the upstream stamp */
static uint64_t g_ok, g_non2xx, g_errors, g_connects, g_sent_n, g_backlog_max;
static uint64_t g_streams_ok, g_streams_short, g_lost, g_stalls;
static uint64_t g_bytes_in, g_connfail, g_warm_ok, g_unsent;
static uint64_t g_answered; /* responses, warm-up included */
static long g_issued; /* requests scheduled or started */
static long g_completed; /* completed, warm-up included */
static uint64_t g_t0, g_tend;
static long g_total; /* open loop: requests scheduled in all */

static void fatal(const char *fmt, ...)
    __attribute__((format(printf, 1, 2), noreturn));

static void
fatal(const char *fmt, ...)
{
	va_list ap;

	fputs("loadgen: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(2);
}

static uint64_t
now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ((uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec);
}

static void *
xmalloc(size_t n)
{
	void *p;

	if ((p = calloc(1, n)) == NULL)
		fatal("out of memory");
	return (p);
}

static void
on_signal(int sig)
{
	(void)sig;
	g_stop = 1;
}

static void
parse_url(const char *url)
{
	const char *p, *slash, *colon;
	size_t hl;
	char *end;
	long port;

	if (strncmp(url, "http://", 7) != 0)
		fatal("only http:// URLs: %s", url);
	p = url + 7;
	slash = strchr(p, '/');
	if (slash == NULL)
		slash = p + strlen(p);
	colon = memchr(p, ':', (size_t)(slash - p));
	hl = (size_t)((colon != NULL ? colon : slash) - p);
	if (hl == 0 || hl >= sizeof(opt.host))
		fatal("bad host in %s", url);
	memcpy(opt.host, p, hl);
	opt.host[hl] = '\0';
	opt.port = 80;
	if (colon != NULL) {
		port = strtol(colon + 1, &end, 10);
		if (end != slash || port <= 0 || port > 65535)
			fatal("bad port in %s", url);
		opt.port = (int)port;
	}
	snprintf(opt.path, sizeof(opt.path), "%s", *slash ? slash : "/");
	memset(&g_addr, 0, sizeof(g_addr));
	g_addr.sin_family = AF_INET;
	g_addr.sin_port = htons((unsigned short)opt.port);
	if (strcmp(opt.host, "localhost") == 0)
		inet_pton(AF_INET, "127.0.0.1", &g_addr.sin_addr);
	else if (inet_pton(AF_INET, opt.host, &g_addr.sin_addr) != 1)
		fatal("host must be an IPv4 address: %s", opt.host);
}

static void
read_file(const char *path)
{
	struct stat st;
	FILE *f;

	if ((f = fopen(path, "rb")) == NULL || fstat(fileno(f), &st) == -1)
		fatal("%s: %s", path, strerror(errno));
	opt.bodylen = (size_t)st.st_size;
	opt.body = xmalloc(opt.bodylen + 1);
	if (fread(opt.body, 1, opt.bodylen, f) != opt.bodylen)
		fatal("%s: short read", path);
	fclose(f);
}

/* A chat request padded to n bytes with a long user message. */
static void
make_body(size_t n)
{
	static const char head[] =
	    "{\"model\":\"gpt-4o-mini\",\"max_tokens\":16,"
	    "\"messages\":[{\"role\":\"user\","
	    "\"content\":\"";
	static const char tail[] = "\"}]}";
	size_t fixed = sizeof(head) - 1 + sizeof(tail) - 1, i, pad;

	if (n < fixed + 1)
		n = fixed + 1;
	pad = n - fixed;
	opt.body = xmalloc(n + 1);
	memcpy(opt.body, head, sizeof(head) - 1);
	for (i = 0; i < pad; i++)
		opt.body[sizeof(head) - 1 + i] = "tok "[i % 4];
	memcpy(opt.body + sizeof(head) - 1 + pad, tail, sizeof(tail) - 1);
	opt.bodylen = n;
}

static void
build_request(void)
{
	size_t cap = 4096 + opt.bodylen, off = 0;
	int i, has_ct = 0;

	for (i = 0; i < opt.nhdrs; i++) {
		cap += strlen(opt.hdrs[i]) + 2;
		if (strncasecmp(opt.hdrs[i], "content-type:", 13) == 0)
			has_ct = 1;
	}
	g_req = xmalloc(cap);
	off += (size_t)snprintf(g_req + off, cap - off,
	    "%s %s HTTP/1.1\r\nHost: %s:%d\r\n", opt.method, opt.path, opt.host,
	    opt.port);
	for (i = 0; i < opt.nhdrs; i++)
		off += (size_t)snprintf(
		    g_req + off, cap - off, "%s\r\n", opt.hdrs[i]);
	if (opt.body != NULL) {
		if (!has_ct)
			off += (size_t)snprintf(g_req + off, cap - off,
			    "Content-Type: application/json\r\n");
		off += (size_t)snprintf(g_req + off, cap - off,
		    "Content-Length: %zu\r\n", opt.bodylen);
	}
	off += (size_t)snprintf(g_req + off, cap - off, "\r\n");
	if (opt.body != NULL) {
		memcpy(g_req + off, opt.body, opt.bodylen);
		off += opt.bodylen;
	}
	g_reqlen = off;
}

static void
conn_reset_parser(struct conn *c)
{
	c->c_ps = P_HEAD;
	c->c_headlen = 0;
	c->c_status = 0;
	c->c_close = 0;
	c->c_left = 0;
	c->c_linelen = 0;
	c->c_slinelen = 0;
	c->c_sdata = 0;
	c->c_stamp = 0;
	c->c_lastev = 0;
	c->c_events = 0;
	c->c_done_seen = 0;
}

static void
conn_open(struct conn *c)
{
	struct epoll_event ev;
	int one = 1, fd;

	fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1)
		fatal("socket: %s", strerror(errno));
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(fd, (struct sockaddr *)&g_addr, sizeof(g_addr)) == -1 &&
	    errno != EINPROGRESS)
		fatal("connect: %s", strerror(errno));
	c->c_fd = fd;
	c->c_connecting = 1;
	g_connects++;
	memset(&ev, 0, sizeof(ev));
	ev.events = EPOLLIN | EPOLLOUT;
	ev.data.ptr = c;
	if (epoll_ctl(g_ep, EPOLL_CTL_ADD, fd, &ev) == -1)
		fatal("epoll_ctl: %s", strerror(errno));
}

static void
conn_close(struct conn *c)
{
	if (c->c_fd >= 0) {
		epoll_ctl(g_ep, EPOLL_CTL_DEL, c->c_fd, NULL);
		close(c->c_fd);
	}
	c->c_fd = -1;
	c->c_busy = 0;
	c->c_woff = 0;
	conn_reset_parser(c);
}

static void
conn_want_write(struct conn *c, int on)
{
	struct epoll_event ev;

	memset(&ev, 0, sizeof(ev));
	ev.events = EPOLLIN | (on ? EPOLLOUT : 0);
	ev.data.ptr = c;
	epoll_ctl(g_ep, EPOLL_CTL_MOD, c->c_fd, &ev);
}

static int
conn_flush(struct conn *c)
{
	ssize_t n;

	while (c->c_woff < g_reqlen) {
		n = send(c->c_fd, g_req + c->c_woff, g_reqlen - c->c_woff,
		    MSG_NOSIGNAL);
		if (n > 0) {
			c->c_woff += (size_t)n;
			continue;
		}
		if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			conn_want_write(c, 1);
			return (0);
		}
		return (-1);
	}
	conn_want_write(c, 0);
	return (0);
}

static void conn_fail(struct conn *c);

/* Put a request on an idle, connected conn. */
static void
conn_send(struct conn *c, uint64_t due)
{
	uint64_t now = now_ns();

	c->c_busy = 1;
	c->c_woff = 0;
	c->c_due = due != 0 ? due : now;
	c->c_sent = now;
	c->c_warm = g_issued < opt.warmup;
	g_issued++;
	g_sent_n++;
	conn_reset_parser(c);
	if (conn_flush(c) == -1)
		conn_fail(c);
}

/*
 * Open loop: every request scheduled before the end is sent, late if it
 * must be (its latency still counts from its slot), for up to --grace-ms
 * after the end; what is left then is reported as unsent.
 */
static int
stopping(void)
{
	if (g_stop)
		return (1);
	if (opt.rate > 0)
		return (g_issued >= g_total ||
		    (g_tend != 0 && now_ns() >= g_tend + opt.grace_ns));
	if (opt.nreq > 0)
		return (g_issued >= opt.nreq + opt.warmup);
	return (g_tend != 0 && now_ns() >= g_tend);
}

/* A request failed: count it, and start over on a new connection. */
static void
conn_fail(struct conn *c)
{
	int was_busy = c->c_busy;

	if (was_busy && !c->c_warm) {
		g_errors++;
		if (opt.sse) {
			g_streams_short++;
			if (opt.expect_events > c->c_events)
				g_lost +=
				    (uint64_t)(opt.expect_events - c->c_events);
		}
	}
	if (was_busy)
		g_completed++;
	else if (++g_connfail > 1000 &&
	    (g_ok + g_non2xx == 0 || (opt.rate == 0 && opt.nreq > 0)))
		/*
		 * A timed run goes on to its end, counting errors (the bench
		 * kills its target mid-run on purpose); a counted one would
		 * never end.
		 */
		fatal("%s:%d: 1000 connections in a row failed", opt.host,
		    opt.port);
	conn_close(c);
	if (!stopping())
		conn_open(c);
}

static void
sse_line(struct conn *c, const char *s, size_t len, uint64_t now)
{
	if (len == 0) {
		if (!c->c_sdata)
			return;
		/* One event complete. */
		if (!c->c_warm) {
			if (c->c_events == 0)
				hist_add(&g_lat, now - c->c_due);
			else {
				uint64_t gap = now - c->c_lastev;

				hist_add(&g_gap, gap);
				if (opt.stall_ns > 0 && gap > opt.stall_ns)
					g_stalls++;
			}
			if (c->c_stamp != 0) {
				uint64_t us = now / 1000;

				hist_add(&g_dly,
				    us > c->c_stamp ? (us - c->c_stamp) * 1000
						    : 0);
			}
		}
		c->c_events++;
		c->c_lastev = now;
		c->c_sdata = 0;
		c->c_stamp = 0;
		return;
	}
	if (len > 4 && strncmp(s, ": t=", 4) == 0) {
		c->c_stamp = strtoull(s + 4, NULL, 10);
		return;
	}
	if (len >= 5 && strncmp(s, "data:", 5) == 0) {
		c->c_sdata = 1;
		if (len >= 12 && memcmp(s + len - 6, "[DONE]", 6) == 0)
			c->c_done_seen = 1;
	}
}

/* Feed response body bytes to the SSE line splitter. */
static void
sse_feed(struct conn *c, const char *p, size_t n, uint64_t now)
{
	size_t i;

	for (i = 0; i < n; i++) {
		char ch = p[i];

		if (ch == '\n') {
			size_t len = c->c_slinelen;

			if (len > 0 && c->c_sline[len - 1] == '\r')
				len--;
			c->c_sline[len] = '\0';
			sse_line(c, c->c_sline, len, now);
			c->c_slinelen = 0;
		} else if (c->c_slinelen < sizeof(c->c_sline) - 1)
			c->c_sline[c->c_slinelen++] = ch;
	}
}

static void
body_bytes(struct conn *c, const char *p, size_t n, uint64_t now)
{
	if (opt.sse)
		sse_feed(c, p, n, now);
}

/* The response on c is complete. */
static void
conn_done(struct conn *c, uint64_t now)
{
	int ok = c->c_status >= 200 && c->c_status < 300;

	g_completed++;
	g_answered++;
	g_connfail = 0;
	if (c->c_woff < g_reqlen)
		c->c_close = 1; /* answered before the body was sent */
	if (c->c_warm && ok)
		g_warm_ok++;
	if (!c->c_warm) {
		if (opt.sse) {
			if (!ok)
				g_non2xx++;
			else if (opt.expect_events > 0 &&
			    c->c_events < opt.expect_events) {
				g_streams_short++;
				g_lost +=
				    (uint64_t)(opt.expect_events - c->c_events);
			} else {
				g_streams_ok++;
				g_ok++;
			}
		} else {
			hist_add(&g_lat, now - c->c_due);
			if (ok)
				g_ok++;
			else
				g_non2xx++;
		}
	}
	c->c_busy = 0;
	if (c->c_close) {
		conn_close(c);
		if (!stopping())
			conn_open(c);
	}
}

static int
parse_head(struct conn *c)
{
	char *line, *eol, *p;

	c->c_head[c->c_headlen] = '\0';
	if (strncmp(c->c_head, "HTTP/1.", 7) != 0 || c->c_headlen < 12)
		return (-1);
	c->c_status = (int)strtol(c->c_head + 9, NULL, 10);
	c->c_ps = P_UNTIL_CLOSE;
	line = strstr(c->c_head, "\r\n");
	while (line != NULL && (line += 2) < c->c_head + c->c_headlen) {
		if ((eol = strstr(line, "\r\n")) == NULL || eol == line)
			break;
		*eol = '\0';
		if ((p = strchr(line, ':')) != NULL) {
			*p++ = '\0';
			while (*p == ' ' || *p == '\t')
				p++;
			if (strcasecmp(line, "content-length") == 0) {
				c->c_left = strtoull(p, NULL, 10);
				c->c_ps = P_BODY_LEN;
			} else if (strcasecmp(line, "transfer-encoding") == 0 &&
			    strcasestr(p, "chunked") != NULL)
				c->c_ps = P_CHUNK_SIZE;
			else if (strcasecmp(line, "connection") == 0 &&
			    strcasestr(p, "close") != NULL)
				c->c_close = 1;
		}
		line = eol;
	}
	if (c->c_status == 204 || c->c_status == 304 ||
	    (c->c_status >= 100 && c->c_status < 200))
		c->c_ps = P_BODY_LEN, c->c_left = 0;
	return (0);
}

/*
 * Consume n bytes of input.  Returns -1 on a protocol error, 1 when a
 * response completed (leftover bytes would be a protocol error: we never
 * pipeline), 0 when more is needed.
 */
static int
conn_input(struct conn *c, const char *p, size_t n, uint64_t now)
{
	size_t i, k;

	while (n > 0) {
		switch (c->c_ps) {
		case P_HEAD:
			for (i = 0; i < n; i++) {
				if (c->c_headlen >= MAX_HEAD - 1)
					return (-1);
				c->c_head[c->c_headlen++] = p[i];
				if (c->c_headlen >= 4 &&
				    memcmp(c->c_head + c->c_headlen - 4,
					"\r\n\r\n", 4) == 0) {
					i++;
					break;
				}
			}
			p += i;
			n -= i;
			if (c->c_headlen < 4 ||
			    memcmp(c->c_head + c->c_headlen - 4, "\r\n\r\n",
				4) != 0)
				return (0);
			if (parse_head(c) == -1)
				return (-1);
			if (c->c_status >= 100 && c->c_status < 200) {
				/* 100 Continue: the real answer follows. */
				c->c_ps = P_HEAD;
				c->c_headlen = 0;
				continue;
			}
			if (c->c_ps == P_BODY_LEN && c->c_left == 0)
				return (1);
			break;
		case P_BODY_LEN:
			k = n < c->c_left ? n : (size_t)c->c_left;
			body_bytes(c, p, k, now);
			c->c_left -= k;
			p += k;
			n -= k;
			if (c->c_left == 0)
				return (n == 0 ? 1 : -1);
			break;
		case P_CHUNK_SIZE:
		case P_CHUNK_CRLF:
		case P_TRAILER:
			for (i = 0; i < n && p[i] != '\n'; i++) {
				if (c->c_linelen >= sizeof(c->c_line) - 1)
					return (-1);
				c->c_line[c->c_linelen++] = p[i];
			}
			if (i == n)
				return (0);
			p += i + 1;
			n -= i + 1;
			c->c_line[c->c_linelen] = '\0';
			if (c->c_linelen > 0 &&
			    c->c_line[c->c_linelen - 1] == '\r')
				c->c_line[--c->c_linelen] = '\0';
			if (c->c_ps == P_CHUNK_CRLF) {
				if (c->c_linelen != 0)
					return (-1);
				c->c_ps = P_CHUNK_SIZE;
			} else if (c->c_ps == P_TRAILER) {
				if (c->c_linelen == 0) {
					c->c_linelen = 0;
					return (n == 0 ? 1 : -1);
				}
			} else {
				char *end;

				c->c_left = strtoull(c->c_line, &end, 16);
				if (end == c->c_line)
					return (-1);
				c->c_ps =
				    c->c_left == 0 ? P_TRAILER : P_CHUNK_DATA;
			}
			c->c_linelen = 0;
			break;
		case P_CHUNK_DATA:
			k = n < c->c_left ? n : (size_t)c->c_left;
			body_bytes(c, p, k, now);
			c->c_left -= k;
			p += k;
			n -= k;
			if (c->c_left == 0)
				c->c_ps = P_CHUNK_CRLF;
			break;
		case P_UNTIL_CLOSE:
			body_bytes(c, p, n, now);
			n = 0;
			break;
		}
	}
	return (0);
}

static void
conn_readable(struct conn *c)
{
	static char buf[RBUF_SIZE];
	ssize_t n;
	uint64_t now;
	int r;

	for (;;) {
		n = recv(c->c_fd, buf, sizeof(buf), 0);
		if (n > 0) {
			now = now_ns();
			g_bytes_in += (uint64_t)n;
			if (!c->c_busy) {
				/* Nothing asked: a server error reply. */
				conn_fail(c);
				return;
			}
			r = conn_input(c, buf, (size_t)n, now);
			if (r == -1) {
				conn_fail(c);
				return;
			}
			if (r == 1) {
				conn_done(c, now);
				return;
			}
			continue;
		}
		if (n == 0) {
			if (c->c_busy && c->c_ps == P_UNTIL_CLOSE) {
				c->c_close = 1;
				conn_done(c, now_ns());
				return;
			}
			conn_fail(c);
			return;
		}
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return;
		if (errno == EINTR)
			continue;
		conn_fail(c);
		return;
	}
}

/* Requests due so far in open-loop mode, warm-up included. */
static long
due_count(uint64_t now)
{
	double el;

	if (now < g_t0)
		return (0);
	el = (double)(now - g_t0) / 1e9;
	return ((long)(el * opt.rate) + 1);
}

static uint64_t
due_time(long i)
{
	return (g_t0 + (uint64_t)((double)i * 1e9 / opt.rate));
}

static void
usage(void)
{
	fprintf(stderr,
	    "usage: loadgen [-c CONNS] [-r RATE] [-d SECONDS] [-n REQUESTS]\n"
	    "               [-w WARMUP] [-m METHOD] [-H 'Name: value']...\n"
	    "               [-b BODY | -B FILE | -z BYTES] [-l LABEL]\n"
	    "               [--sse] [--expect-events N] [--stall-us US]\n"
	    "               [--stagger-ms MS] [--grace-ms MS]\n"
	    "               http://HOST:PORT/PATH\n");
	exit(2);
}

static double
num_arg(const char *s)
{
	char *end;
	double d = strtod(s, &end);

	if (end == s || *end != '\0' || d < 0)
		fatal("bad number: %s", s);
	return (d);
}

static void
report(uint64_t elapsed)
{
	double el = (double)elapsed / 1e9;
	const struct hist *l = &g_lat;

	printf("{\"label\":\"%s\",\"mode\":\"%s\",\"conns\":%d,"
	       "\"target_rps\":%.1f,\"elapsed_s\":%.3f,\"requests\":%llu,"
	       "\"ok\":%llu,\"warm_ok\":%llu,\"non2xx\":%llu,\"errors\":%llu,"
	       "\"connects\":%llu,\"achieved_rps\":%.1f,"
	       "\"backlog_max\":%llu,\"unsent\":%llu,\"bytes_in\":%llu,",
	    opt.label != NULL ? opt.label : "",
	    opt.sse ? "sse" : (opt.rate > 0 ? "rate" : "closed"), opt.conns,
	    opt.rate, el, (unsigned long long)l->h_n, (unsigned long long)g_ok,
	    (unsigned long long)g_warm_ok, (unsigned long long)g_non2xx,
	    (unsigned long long)g_errors, (unsigned long long)g_connects,
	    el > 0 ? (double)g_answered / el : 0.0,
	    (unsigned long long)g_backlog_max, (unsigned long long)g_unsent,
	    (unsigned long long)g_bytes_in);
	printf("\"%s\":{\"n\":%llu,\"min\":%.1f,\"mean\":%.1f,\"p50\":%.1f,"
	       "\"p90\":%.1f,\"p99\":%.1f,\"p999\":%.1f,\"max\":%.1f}",
	    opt.sse ? "ttfe_us" : "lat_us", (unsigned long long)l->h_n,
	    (double)l->h_min / 1e3,
	    l->h_n > 0 ? l->h_sum / (double)l->h_n / 1e3 : 0.0,
	    (double)hist_pct(l, 50) / 1e3, (double)hist_pct(l, 90) / 1e3,
	    (double)hist_pct(l, 99) / 1e3, (double)hist_pct(l, 99.9) / 1e3,
	    (double)l->h_max / 1e3);
	if (opt.sse) {
		printf(",\"streams_ok\":%llu,\"streams_short\":%llu,"
		       "\"events_lost\":%llu,\"stalls\":%llu,"
		       "\"events_per_s\":%.1f",
		    (unsigned long long)g_streams_ok,
		    (unsigned long long)g_streams_short,
		    (unsigned long long)g_lost, (unsigned long long)g_stalls,
		    el > 0 ? (double)(g_gap.h_n + l->h_n) / el : 0.0);
		printf(",\"gap_us\":{\"n\":%llu,\"p50\":%.1f,\"p90\":%.1f,"
		       "\"p99\":%.1f,\"p999\":%.1f,\"max\":%.1f}",
		    (unsigned long long)g_gap.h_n,
		    (double)hist_pct(&g_gap, 50) / 1e3,
		    (double)hist_pct(&g_gap, 90) / 1e3,
		    (double)hist_pct(&g_gap, 99) / 1e3,
		    (double)hist_pct(&g_gap, 99.9) / 1e3,
		    (double)g_gap.h_max / 1e3);
		printf(",\"delay_us\":{\"n\":%llu,\"p50\":%.1f,\"p90\":%.1f,"
		       "\"p99\":%.1f,\"p999\":%.1f,\"max\":%.1f}",
		    (unsigned long long)g_dly.h_n,
		    (double)hist_pct(&g_dly, 50) / 1e3,
		    (double)hist_pct(&g_dly, 90) / 1e3,
		    (double)hist_pct(&g_dly, 99) / 1e3,
		    (double)hist_pct(&g_dly, 99.9) / 1e3,
		    (double)g_dly.h_max / 1e3);
	}
	printf("}\n");
	fflush(stdout);
}

int
main(int argc, char *argv[])
{
	struct epoll_event evs[256];
	struct timespec ts;
	const char *url = NULL;
	uint64_t now, next, grace_end = 0;
	long due, backlog;
	int i, n, rr = 0, busy, idle;

	for (i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (a[0] != '-') {
			url = a;
			continue;
		}
		if (strcmp(a, "--sse") == 0) {
			opt.sse = 1;
			continue;
		}
		if (v == NULL)
			usage();
		i++;
		if (strcmp(a, "-c") == 0)
			opt.conns = (int)num_arg(v);
		else if (strcmp(a, "-r") == 0)
			opt.rate = num_arg(v);
		else if (strcmp(a, "-d") == 0)
			opt.duration = num_arg(v);
		else if (strcmp(a, "-n") == 0)
			opt.nreq = (long)num_arg(v);
		else if (strcmp(a, "-w") == 0)
			opt.warmup = (long)num_arg(v);
		else if (strcmp(a, "-m") == 0)
			opt.method = v;
		else if (strcmp(a, "-l") == 0)
			opt.label = v;
		else if (strcmp(a, "-H") == 0) {
			if (opt.nhdrs >= MAX_HDRS)
				fatal("too many -H");
			opt.hdrs[opt.nhdrs++] = v;
		} else if (strcmp(a, "-b") == 0) {
			opt.bodylen = strlen(v);
			opt.body = xmalloc(opt.bodylen + 1);
			memcpy(opt.body, v, opt.bodylen);
		} else if (strcmp(a, "-B") == 0)
			read_file(v);
		else if (strcmp(a, "-z") == 0)
			make_body((size_t)num_arg(v));
		else if (strcmp(a, "--expect-events") == 0)
			opt.expect_events = (long)num_arg(v);
		else if (strcmp(a, "--stall-us") == 0)
			opt.stall_ns = (uint64_t)(num_arg(v) * 1e3);
		else if (strcmp(a, "--stagger-ms") == 0)
			opt.stagger = num_arg(v);
		else if (strcmp(a, "--grace-ms") == 0)
			opt.grace_ns = (uint64_t)(num_arg(v) * 1e6);
		else
			usage();
	}
	if (url == NULL || opt.conns < 1 || opt.conns > MAX_CONNS)
		usage();
	if (opt.label != NULL && strpbrk(opt.label, "\"\\") != NULL)
		fatal("label must not contain quotes or backslashes");
	parse_url(url);
	build_request();
	signal(SIGPIPE, SIG_IGN);
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);

	if ((g_ep = epoll_create1(EPOLL_CLOEXEC)) == -1)
		fatal("epoll_create1: %s", strerror(errno));
	g_conns = xmalloc(sizeof(*g_conns) * (size_t)opt.conns);
	g_t0 = now_ns();
	for (i = 0; i < opt.conns; i++) {
		struct conn *c = &g_conns[i];

		c->c_id = i;
		c->c_fd = -1;
		c->c_head = xmalloc(MAX_HEAD);
		c->c_start_at =
		    g_t0 + (uint64_t)(opt.stagger * 1e6 * i / opt.conns);
		conn_open(c);
	}
	/* Let the connections come up before the clock starts. */
	for (;;) {
		int up = 0;

		n = epoll_wait(g_ep, evs, 256, 100);
		for (i = 0; i < n; i++) {
			struct conn *c = evs[i].data.ptr;

			if (c->c_connecting && (evs[i].events & EPOLLOUT)) {
				int err = 0;
				socklen_t len = sizeof(err);

				getsockopt(
				    c->c_fd, SOL_SOCKET, SO_ERROR, &err, &len);
				if (err != 0)
					fatal("connect %s:%d: %s", opt.host,
					    opt.port, strerror(err));
				c->c_connecting = 0;
				conn_want_write(c, 0);
			}
		}
		for (i = 0; i < opt.conns; i++)
			up += !g_conns[i].c_connecting;
		if (up == opt.conns)
			break;
		if (now_ns() - g_t0 > 10000000000ULL)
			fatal("connections not up after 10 s");
	}
	g_t0 = now_ns();
	for (i = 0; i < opt.conns; i++)
		g_conns[i].c_start_at =
		    g_t0 + (uint64_t)(opt.stagger * 1e6 * i / opt.conns);
	if (opt.nreq == 0)
		g_tend = g_t0 + (uint64_t)(opt.duration * 1e9);
	/* Slots strictly before the end, or the -n requests and warm-up. */
	g_total = opt.nreq > 0 ? opt.nreq + opt.warmup : due_count(g_tend - 1);

	for (;;) {
		now = now_ns();
		/* Hand out work. */
		if (!stopping()) {
			if (opt.rate > 0) {
				due = due_count(now);
				if (due > g_total)
					due = g_total;
				for (i = 0; i < opt.conns && g_issued < due;
				     i++) {
					struct conn *c =
					    &g_conns[(rr + i) % opt.conns];

					if (c->c_fd < 0 || c->c_busy ||
					    c->c_connecting)
						continue;
					conn_send(c, due_time(g_issued));
				}
				rr = (rr + 1) % opt.conns;
				backlog = due - g_issued;
				if (backlog > 0 &&
				    (uint64_t)backlog > g_backlog_max)
					g_backlog_max = (uint64_t)backlog;
			} else {
				for (i = 0; i < opt.conns; i++) {
					struct conn *c = &g_conns[i];

					if (c->c_fd < 0 || c->c_busy ||
					    c->c_connecting ||
					    now < c->c_start_at || stopping())
						continue;
					conn_send(c, 0);
				}
			}
		}
		busy = idle = 0;
		for (i = 0; i < opt.conns; i++) {
			struct conn *c = &g_conns[i];

			busy += c->c_busy;
			idle += c->c_fd >= 0 && !c->c_busy && !c->c_connecting;
		}
		if (stopping()) {
			if (grace_end == 0)
				grace_end = now + opt.grace_ns;
			if (busy == 0 || now >= grace_end || g_stop)
				break;
		}
		/* How long to sleep. */
		next = now + 100000000ULL;
		if (!stopping()) {
			if (opt.rate > 0) {
				uint64_t d = due_time(g_issued);

				/*
				 * A request overdue with every connection busy
				 * waits for an answer, not for the clock: no
				 * spinning on the core the mock shares.
				 */
				if (d < next && (d > now || idle > 0))
					next = d;
			} else {
				for (i = 0; i < opt.conns; i++)
					if (!g_conns[i].c_busy &&
					    g_conns[i].c_start_at > now &&
					    g_conns[i].c_start_at < next)
						next = g_conns[i].c_start_at;
			}
			if (opt.rate == 0 && g_tend != 0 && g_tend < next)
				next = g_tend;
		}
		if (next <= now) {
			ts.tv_sec = 0;
			ts.tv_nsec = 0;
		} else {
			ts.tv_sec = (time_t)((next - now) / 1000000000ULL);
			ts.tv_nsec = (long)((next - now) % 1000000000ULL);
		}
		n = epoll_pwait2(g_ep, evs, 256, &ts, NULL);
		if (n == -1 && errno != EINTR)
			fatal("epoll_pwait2: %s", strerror(errno));
		for (i = 0; i < n; i++) {
			struct conn *c = evs[i].data.ptr;

			if (c->c_fd < 0)
				continue;
			if (c->c_connecting) {
				int err = 0;
				socklen_t len = sizeof(err);

				if (!(evs[i].events &
					(EPOLLOUT | EPOLLERR | EPOLLHUP)))
					continue;
				getsockopt(
				    c->c_fd, SOL_SOCKET, SO_ERROR, &err, &len);
				if (err != 0) {
					conn_fail(c);
					continue;
				}
				c->c_connecting = 0;
				conn_want_write(c, 0);
				continue;
			}
			if ((evs[i].events & EPOLLOUT) && c->c_busy &&
			    c->c_woff < g_reqlen) {
				if (conn_flush(c) == -1) {
					conn_fail(c);
					continue;
				}
			}
			if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP))
				conn_readable(c);
		}
	}
	now = now_ns();
	/* Whatever is still in flight at the end was not answered in time. */
	for (i = 0; i < opt.conns; i++) {
		if (g_conns[i].c_busy && !g_conns[i].c_warm) {
			g_errors++;
			if (opt.sse) {
				g_streams_short++;
				if (opt.expect_events > g_conns[i].c_events)
					g_lost += (uint64_t)(opt.expect_events -
					    g_conns[i].c_events);
			}
		}
		conn_close(&g_conns[i]);
		free(g_conns[i].c_head);
	}
	/* Open loop: requests that never found a connection in time. */
	if (opt.rate > 0 && g_total > g_issued)
		g_unsent = (uint64_t)(g_total - g_issued);
	/* Open loop: until the last answer; closed: the set duration. */
	report((opt.rate == 0 && g_tend != 0 && g_tend < now ? g_tend : now) -
	    g_t0);
	free(g_conns);
	free(g_req);
	free(opt.body);
	close(g_ep);
	return (g_ok > 0 ? 0 : 1);
}
