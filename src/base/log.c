/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Logging in the style of relayd's log.c: to stderr in the foreground, to
 * syslog as a daemon. Every line is one event; untrusted bytes are escaped
 * with log_escape before they reach a line.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "tollgate/log.h"

static int log_debug_stderr = 1;
static int log_verbose;

static void vlog(int, const char *, va_list)
    __attribute__((format(printf, 2, 0)));
static void log_line(const struct tm *, long, const char *, const char *,
    va_list) __attribute__((format(printf, 4, 0)));
static void logit(int, const char *, ...) __attribute__((format(printf, 2, 3)));

/* Set where lines go (stderr if foreground) and how much is said. */
void
log_init(int foreground, int verbose)
{
	log_debug_stderr = foreground;
	log_verbose = verbose;
	if (!foreground)
		openlog("tollgate", LOG_PID | LOG_NDELAY, LOG_DAEMON);
	tzset();
}

/* write(2) all of buf, through EINTR and short writes; errors dropped. */
static void
write_all(int fd, const char *buf, size_t len)
{
	ssize_t n;

	while (len > 0) {
		n = write(fd, buf, len);
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0)
			return;
		buf += n;
		len -= (size_t)n;
	}
}

static char *
put_digits(char *p, long v, int n)
{
	int i;

	for (i = n - 1; i >= 0; i--) {
		p[i] = (char)('0' + v % 10);
		v /= 10;
	}
	return (p + n);
}

/*
 * "YYYY-MM-DDTHH:MM:SS.mmmZ level: " into buf; its length as snprintf
 * would return it. Written digit by digit for four-digit years:
 * strftime and snprintf cost some 2,400 instructions a line, and every
 * call logs one.
 */
static int
log_prefix(
    char *buf, size_t size, const struct tm *tm, long ms, const char *level)
{
	char tbuf[32], *p = buf;
	long year = (long)tm->tm_year + 1900;
	size_t llen = strlen(level);

	if (year < 1000 || year > 9999 || ms < 0 || ms > 999 ||
	    25 + llen + 2 >= size) {
		strftime(tbuf, sizeof(tbuf), "%Y-%m-%dT%H:%M:%S", tm);
		return (snprintf(buf, size, "%s.%03ldZ %s: ", tbuf, ms, level));
	}
	p = put_digits(p, year, 4);
	*p++ = '-';
	p = put_digits(p, tm->tm_mon + 1, 2);
	*p++ = '-';
	p = put_digits(p, tm->tm_mday, 2);
	*p++ = 'T';
	p = put_digits(p, tm->tm_hour, 2);
	*p++ = ':';
	p = put_digits(p, tm->tm_min, 2);
	*p++ = ':';
	p = put_digits(p, tm->tm_sec, 2);
	*p++ = '.';
	p = put_digits(p, ms, 3);
	*p++ = 'Z';
	*p++ = ' ';
	memcpy(p, level, llen);
	p += llen;
	*p++ = ':';
	*p++ = ' ';
	*p = '\0';
	return ((int)(p - buf));
}

/*
 * One line to stderr in a single write(2): stderr is unbuffered, so stdio
 * would make a system call for the prefix, the message and the newline,
 * and lines from two threads could interleave. A line that does not fit
 * the stack buffer is formatted again on the heap (or cut if that fails).
 */
static void
log_line(const struct tm *tm, long ms, const char *level, const char *fmt,
    va_list ap)
{
	char buf[2048], *line = buf, *big = NULL;
	size_t room;
	va_list aq;
	int n, m, m2;

	n = log_prefix(buf, sizeof(buf), tm, ms, level);
	if (n < 0 || (size_t)n >= sizeof(buf))
		return;
	room = sizeof(buf) - (size_t)n - 1; /* keep one for the newline */
	va_copy(aq, ap);
	m = vsnprintf(buf + n, room + 1, fmt, aq);
	va_end(aq);
	if (m < 0)
		return;
	if ((size_t)m > room) {
		if ((big = malloc((size_t)n + (size_t)m + 2)) != NULL) {
			memcpy(big, buf, (size_t)n);
			m2 = vsnprintf(big + n, (size_t)m + 1, fmt, ap);
			if (m2 < 0) {
				free(big);
				return;
			}
			if (m2 < m)
				m = m2;
			line = big;
		} else
			m = (int)room;
	}
	line[n + m] = '\n';
	write_all(STDERR_FILENO, line, (size_t)n + (size_t)m + 1);
	free(big);
}

static void
vlog(int pri, const char *fmt, va_list ap)
{
	const char *level;
	struct timespec ts;
	struct tm tm;
	int saved_errno = errno;

	if (log_debug_stderr) {
		clock_gettime(CLOCK_REALTIME, &ts);
		gmtime_r(&ts.tv_sec, &tm);
		switch (pri) {
		case LOG_CRIT:
			level = "fatal";
			break;
		case LOG_ERR:
			level = "error";
			break;
		case LOG_WARNING:
			level = "warn";
			break;
		case LOG_DEBUG:
			level = "debug";
			break;
		default:
			level = "info";
			break;
		}
		log_line(&tm, ts.tv_nsec / 1000000, level, fmt, ap);
	} else
		vsyslog(pri, fmt, ap);
	errno = saved_errno;
}

static void
logit(int pri, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vlog(pri, fmt, ap);
	va_end(ap);
}

/* Log a warning with strerror(errno) appended. */
void
log_warn(const char *emsg, ...)
{
	char buf[1024];
	va_list ap;
	int saved_errno = errno;

	if (emsg == NULL)
		logit(LOG_WARNING, "%s", strerror(saved_errno));
	else {
		va_start(ap, emsg);
		(void)vsnprintf(buf, sizeof(buf), emsg, ap);
		va_end(ap);
		logit(LOG_WARNING, "%s: %s", buf, strerror(saved_errno));
	}
	errno = saved_errno;
}

/* Log a warning. */
void
log_warnx(const char *emsg, ...)
{
	va_list ap;

	va_start(ap, emsg);
	vlog(LOG_WARNING, emsg, ap);
	va_end(ap);
}

/*
 * Log an error that stops tollgate, or part of it (a start that fails):
 * level "error" on stderr, LOG_ERR in syslog, so an operator's filter on
 * errors sees it where a warning would be passed over.
 */
void
log_errorx(const char *emsg, ...)
{
	va_list ap;

	va_start(ap, emsg);
	vlog(LOG_ERR, emsg, ap);
	va_end(ap);
}

/* Log an informational line. */
void
log_info(const char *emsg, ...)
{
	va_list ap;

	va_start(ap, emsg);
	vlog(LOG_INFO, emsg, ap);
	va_end(ap);
}

/* Log a line only shown with -v. */
void
log_debug(const char *emsg, ...)
{
	va_list ap;

	if (log_verbose < 1)
		return;
	va_start(ap, emsg);
	vlog(LOG_DEBUG, emsg, ap);
	va_end(ap);
}

static void __attribute__((noreturn, format(printf, 2, 0)))
vfatalc(int code, const char *emsg, va_list ap)
{
	static char s[BUFSIZ];
	const char *sep;

	if (emsg != NULL) {
		(void)vsnprintf(s, sizeof(s), emsg, ap);
		sep = ": ";
	} else {
		s[0] = '\0';
		sep = "";
	}
	if (code)
		logit(LOG_CRIT, "%s%s%s", s, sep, strerror(code));
	else
		logit(LOG_CRIT, "%s", s);
	exit(1);
}

/* Log and exit, with strerror(errno). Only at startup or on a broken
 * invariant. */
void
fatal(const char *emsg, ...)
{
	va_list ap;

	va_start(ap, emsg);
	vfatalc(errno, emsg, ap);
}

/* Log and exit. */
void
fatalx(const char *emsg, ...)
{
	va_list ap;

	va_start(ap, emsg);
	vfatalc(0, emsg, ap);
}

/*
 * Copy src[0..len) into dst as text a log line can hold: bytes outside
 * printable ASCII, the backslash, the double quote and any byte of extra
 * become \xHH, so a value cannot end a line, close a quoted field or,
 * with a space in extra, start a key=value of its own. The result is cut
 * (ending in "...") to fit dsize. Returns its length.
 */
static size_t
escape_with(
    char *dst, size_t dsize, const char *src, size_t len, const char *extra)
{
	static const char hex[] = "0123456789abcdef";
	size_t i, o = 0;
	unsigned char c;

	if (dsize == 0)
		return (0);
	for (i = 0; i < len; i++) {
		c = (unsigned char)src[i];
		if (c >= 0x20 && c < 0x7f && c != '\\' && c != '"' &&
		    (extra == NULL || strchr(extra, c) == NULL)) {
			if (o + 1 >= dsize)
				goto trunc;
			dst[o++] = (char)c;
		} else {
			if (o + 4 >= dsize)
				goto trunc;
			dst[o++] = '\\';
			dst[o++] = 'x';
			dst[o++] = hex[c >> 4];
			dst[o++] = hex[c & 0xf];
		}
	}
	dst[o] = '\0';
	return (o);
trunc:
	if (dsize >= 4) {
		o = dsize - 4;
		memcpy(dst + o, "...", 3);
		o += 3;
	}
	dst[o] = '\0';
	return (o);
}

/* Escape a value for a log line (see escape_with); spaces are kept. */
size_t
log_escape(char *dst, size_t dsize, const char *src, size_t len)
{
	return (escape_with(dst, dsize, src, len, NULL));
}

/*
 * Escape a value written unquoted as key=value (a path, a model): a space
 * too becomes \x20, so the value is one word.
 */
size_t
log_escape_word(char *dst, size_t dsize, const char *src, size_t len)
{
	return (escape_with(dst, dsize, src, len, " "));
}
