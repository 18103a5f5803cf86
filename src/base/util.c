/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Allocation wrappers and small string helpers. Running out of memory is
 * fatal (tmux's xmalloc): every buffer tollgate keeps has a hard cap, so an
 * allocation failure means the machine itself is out of memory.
 */
#include <sys/stat.h>

#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/rand.h>

#include "tollgate/log.h"
#include "tollgate/util.h"

void *
xmalloc(size_t size)
{
	void *p;

	if (size == 0)
		fatalx("xmalloc: zero size");
	if ((p = malloc(size)) == NULL)
		fatal("xmalloc: allocating %zu bytes", size);
	return (p);
}

void *
xcalloc(size_t nmemb, size_t size)
{
	void *p;

	if (nmemb == 0 || size == 0)
		fatalx("xcalloc: zero size");
	if ((p = calloc(nmemb, size)) == NULL)
		fatal("xcalloc: allocating %zu * %zu bytes", nmemb, size);
	return (p);
}

void *
xreallocarray(void *ptr, size_t nmemb, size_t size)
{
	void *p;

	if (nmemb == 0 || size == 0)
		fatalx("xreallocarray: zero size");
	if (SIZE_MAX / nmemb < size)
		fatalx("xreallocarray: %zu * %zu overflows", nmemb, size);
	if ((p = realloc(ptr, nmemb * size)) == NULL)
		fatal("xreallocarray: allocating %zu * %zu bytes", nmemb, size);
	return (p);
}

char *
xstrdup(const char *s)
{
	char *p;

	if ((p = strdup(s)) == NULL)
		fatal("xstrdup");
	return (p);
}

char *
xstrndup(const char *s, size_t n)
{
	char *p;

	if ((p = strndup(s, n)) == NULL)
		fatal("xstrndup");
	return (p);
}

int
xvasprintf(char **ret, const char *fmt, va_list ap)
{
	int i;

	i = vasprintf(ret, fmt, ap);
	if (i < 0 || *ret == NULL)
		fatal("xvasprintf");
	return (i);
}

int
xasprintf(char **ret, const char *fmt, ...)
{
	va_list ap;
	int i;

	va_start(ap, fmt);
	i = xvasprintf(ret, fmt, ap);
	va_end(ap);
	return (i);
}

/* Wipe and free memory that held a secret (relayd freezero). */
void
freezero(void *p, size_t len)
{
	if (p == NULL)
		return;
	explicit_bzero(p, len);
	free(p);
}

/*
 * Copy src into dst of size bytes, cut to fit and always terminated: what
 * snprintf(dst, size, "%s", src) writes, without the formatting.
 */
void
strcopy(char *dst, size_t size, const char *src)
{
	size_t n;

	if (size == 0)
		return;
	n = strnlen(src, size - 1);
	memcpy(dst, src, n);
	dst[n] = '\0';
}

/*
 * Whether s[0..len) is well-formed UTF-8 (RFC 3629): no overlong forms,
 * no surrogates, nothing above U+10FFFF, and no NUL byte, which would end
 * the value early wherever it is later read as a C string. Every value
 * tollgate records and later prints as JSON (tags, models, ids) passes
 * this first, so a report is never unreadable to a strict parser.
 */
int
utf8_valid(const char *s, size_t len)
{
	size_t i, n;

	for (i = 0; i < len; i += n) {
		if (s[i] == '\0' || (n = utf8_seqlen(s + i, len - i)) == 0)
			return (0);
	}
	return (1);
}

/*
 * Is s text a log line, a terminal and every JSON answer can carry: at
 * most max bytes of UTF-8 without control bytes, C1 controls included (a
 * terminal may obey them)?
 */
int
utf8_text_ok(const char *s, size_t max)
{
	size_t n = 0;

	for (; s[n] != '\0'; n++) {
		if ((unsigned char)s[n] < 0x20 || s[n] == 0x7f)
			return (0);
		if ((unsigned char)s[n] == 0xc2 &&
		    (unsigned char)s[n + 1] >= 0x80 &&
		    (unsigned char)s[n + 1] <= 0x9f)
			return (0);
	}
	return (n <= max && utf8_valid(s, n));
}

/*
 * A random id into buf: the letter kind, '_' and 16 lower-case hex
 * digits ("k_3f9c0a7e12b45d68"), cut to fit len.
 */
void
random_id(char *buf, size_t len, char kind)
{
	static const char hex[] = "0123456789abcdef";
	unsigned char r[8];
	size_t i;

	if (len < 3)
		fatalx("%s: buffer too small", __func__);
	if (RAND_bytes(r, sizeof(r)) != 1)
		fatalx("%s: RAND_bytes", __func__);
	buf[0] = kind;
	buf[1] = '_';
	for (i = 0; i < sizeof(r) && 2 + 2 * i + 2 < len; i++) {
		buf[2 + 2 * i] = hex[r[i] >> 4];
		buf[3 + 2 * i] = hex[r[i] & 15];
	}
	buf[2 + 2 * i] = '\0';
}

/* Is s an id random_id makes for kind: kind, '_' and 16 lower-case hex? */
int
random_id_ok(const char *s, char kind)
{
	size_t i;

	if (strlen(s) != 18 || s[0] != kind || s[1] != '_')
		return (0);
	for (i = 2; i < 18; i++)
		if (!((s[i] >= '0' && s[i] <= '9') ||
			(s[i] >= 'a' && s[i] <= 'f')))
			return (0);
	return (1);
}

/*
 * The length (1 to 4) of the well-formed UTF-8 sequence that starts s, of
 * at most len bytes, or 0 when s does not start one: a stray continuation
 * byte, an overlong form, a surrogate, a code point above U+10FFFF or a
 * sequence cut short. NUL counts as a one-byte sequence here; utf8_valid
 * is the check that refuses it.
 */
size_t
utf8_seqlen(const char *s, size_t len)
{
	const unsigned char *p = (const unsigned char *)s;
	unsigned char lo = 0x80, hi = 0xbf;
	size_t n, i;

	if (len == 0)
		return (0);
	if (p[0] < 0x80)
		return (1);
	if (p[0] >= 0xc2 && p[0] <= 0xdf)
		n = 2;
	else if (p[0] >= 0xe0 && p[0] <= 0xef) {
		n = 3;
		if (p[0] == 0xe0)
			lo = 0xa0; /* overlong */
		else if (p[0] == 0xed)
			hi = 0x9f; /* surrogates */
	} else if (p[0] >= 0xf0 && p[0] <= 0xf4) {
		n = 4;
		if (p[0] == 0xf0)
			lo = 0x90; /* overlong */
		else if (p[0] == 0xf4)
			hi = 0x8f; /* above U+10FFFF */
	} else
		return (0);
	if (len < n || p[1] < lo || p[1] > hi)
		return (0);
	for (i = 2; i < n; i++) {
		if (p[i] < 0x80 || p[i] > 0xbf)
			return (0);
	}
	return (n);
}

/*
 * An allocated copy of the NUL-terminated s in which every byte that is
 * not part of well-formed UTF-8 is replaced by U+FFFD, the replacement
 * character. Text that tollgate prints (JSON, CSV, tables) goes through
 * this or the same rule, so a value stored with stray bytes, by an older
 * version or by hand, cannot make a whole answer unreadable to a strict
 * parser.
 */
char *
utf8_dup(const char *s)
{
	size_t len = strlen(s), i = 0, o = 0, n;
	char *out;

	if (len > (SIZE_MAX - 1) / 3)
		fatalx("%s: string too long", __func__);
	out = xmalloc(len * 3 + 1);
	while (i < len) {
		if ((n = utf8_seqlen(s + i, len - i)) == 0) {
			memcpy(out + o, UTF8_REPLACEMENT, 3);
			o += 3;
			i++;
			continue;
		}
		memcpy(out + o, s + i, n);
		o += n;
		i += n;
	}
	out[o] = '\0';
	return (out);
}

/*
 * Copy src into dst of size bytes as well-formed UTF-8: every byte that is
 * not part of a sequence becomes U+FFFD, and a value that does not fit is
 * cut before the first character that would not, never inside one, so the
 * copy is valid wherever it ends. Returns 1 when dst holds src exactly, 0
 * when something was replaced or cut: a caller that matches the value
 * against names (prices, tiers) must not treat a repaired copy as the
 * name it was given.
 */
int
utf8_copy(char *dst, size_t size, const char *src)
{
	size_t i = 0, o = 0, n, used, len;
	const char *from;
	int exact = 1;

	if (size == 0)
		return (src[0] == '\0');
	len = strlen(src);
	while (i < len) {
		if ((used = utf8_seqlen(src + i, len - i)) == 0) {
			from = UTF8_REPLACEMENT; /* for one stray byte */
			n = 3;
			used = 1;
			exact = 0;
		} else {
			from = src + i;
			n = used;
		}
		if (o + n > size - 1) {
			exact = 0;
			break;
		}
		memcpy(dst + o, from, n);
		o += n;
		i += used;
	}
	dst[o] = '\0';
	return (exact);
}

/* The value of the hex digit c, or -1 (percent-escapes in URLs). */
int
hex_digit(int c)
{
	if (c >= '0' && c <= '9')
		return (c - '0');
	if (c >= 'a' && c <= 'f')
		return (c - 'a' + 10);
	if (c >= 'A' && c <= 'F')
		return (c - 'A' + 10);
	return (-1);
}

/* Return 1 if s starts with prefix, ignoring ASCII case. */
int
strcaseprefix(const char *s, const char *prefix)
{
	return (strncasecmp(s, prefix, strlen(prefix)) == 0);
}

/* Microseconds on the monotonic clock. */
long long
monotime_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ((long long)ts.tv_sec * 1000000LL + ts.tv_nsec / 1000);
}

/*
 * The wall clock in Unix milliseconds, which stamps ledger rows and places
 * calls in budget windows. When the environment names a clock file
 * (TOLLGATE_TEST_CLOCK), the whole number of milliseconds it holds is
 * added: tests move the daemon across midnight or a month end without
 * waiting for it. The file is read again whenever it changes, and only
 * while it belongs to the daemon's own user and no one else may write it
 * (wallclock_check says so at start-up); otherwise it is ignored.
 */
static const char *clock_file; /* TOLLGATE_TEST_CLOCK, or NULL */
static pthread_once_t clock_once = PTHREAD_ONCE_INIT;

static void
clock_init(void)
{
	clock_file = getenv("TOLLGATE_TEST_CLOCK");
}

/* The offset the clock file holds now; only when it is set. */
static int64_t
clock_offset(void)
{
	static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
	static struct timespec mtime;
	static int64_t offset;
	struct stat st;
	char buf[32];
	int64_t off;
	FILE *fp;
	size_t n;

	pthread_mutex_lock(&mu);
	if (stat(clock_file, &st) == 0 && st.st_uid == geteuid() &&
	    (st.st_mode & (S_IWGRP | S_IWOTH)) == 0 &&
	    (st.st_mtim.tv_sec != mtime.tv_sec ||
		st.st_mtim.tv_nsec != mtime.tv_nsec)) {
		mtime = st.st_mtim;
		if ((fp = fopen(clock_file, "r")) != NULL) {
			n = fread(buf, 1, sizeof(buf) - 1, fp);
			buf[n] = '\0';
			fclose(fp);
			offset = strtoll(buf, NULL, 10);
		}
	}
	off = offset;
	pthread_mutex_unlock(&mu);
	return (off);
}

int64_t
wallclock_ms(void)
{
	struct timespec ts;
	int64_t ms;

	clock_gettime(CLOCK_REALTIME, &ts);
	ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
	/* No lock and no syscall beyond the clock unless a test set it. */
	pthread_once(&clock_once, clock_init);
	return (clock_file != NULL ? ms + clock_offset() : ms);
}

/* Integer nano-USD as an exact decimal with nine places: 12.345678901. */
void
usd_format(char *buf, size_t len, int64_t nusd)
{
	uint64_t mag;

	mag = nusd < 0 ? (uint64_t)0 - (uint64_t)nusd : (uint64_t)nusd;
	snprintf(buf, len, "%s%llu.%09llu", nusd < 0 ? "-" : "",
	    (unsigned long long)(mag / 1000000000u),
	    (unsigned long long)(mag % 1000000000u));
}

/*
 * At start-up: say loudly that the clock is being moved, or why the clock
 * file is ignored. Returns 1 when TOLLGATE_TEST_CLOCK is set.
 */
int
wallclock_check(void)
{
	const char *file = getenv("TOLLGATE_TEST_CLOCK");
	struct stat st;

	if (file == NULL)
		return (0);
	if (stat(file, &st) == -1)
		log_warnx("TOLLGATE_TEST_CLOCK: %s: %s; the clock is not moved",
		    file, strerror(errno));
	else if (st.st_uid != geteuid() ||
	    (st.st_mode & (S_IWGRP | S_IWOTH)) != 0)
		log_warnx("TOLLGATE_TEST_CLOCK: %s is not ours alone (owner "
			  "and mode); the clock is not moved",
		    file);
	else
		log_warnx("TOLLGATE_TEST_CLOCK is set: the wall clock is moved "
			  "by %s (for tests only: budget windows and ledger "
			  "times follow it)",
		    file);
	return (1);
}

/*
 * Start a thread that never takes a signal (they are the event loop's
 * business), named (at most 15 bytes) for top -H and ps -L. Returns
 * pthread_create's error, or 0.
 */
int
thread_start(pthread_t *t, const char *name, void *(*fn)(void *), void *arg)
{
	sigset_t all, old;
	int error;

	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	error = pthread_create(t, NULL, fn, arg);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (error == 0)
		(void)pthread_setname_np(*t, name);
	return (error);
}
