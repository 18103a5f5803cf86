/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Small helpers every module uses: allocation that cannot fail (out of
 * memory is fatal, which is acceptable because every buffer in tollgate has
 * a hard cap), string duplication and formatting, and wiping secrets.
 */
#ifndef TOLLGATE_UTIL_H
#define TOLLGATE_UTIL_H

#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#define nitems(a) (sizeof(a) / sizeof((a)[0]))

/* U+FFFD, what a byte that is not UTF-8 is printed as. */
#define UTF8_REPLACEMENT "\xef\xbf\xbd"

/* util.c */
void *xmalloc(size_t);
void *xcalloc(size_t, size_t);
void *xreallocarray(void *, size_t, size_t);
char *xstrdup(const char *);
char *xstrndup(const char *, size_t);
int xasprintf(char **, const char *, ...) __attribute__((format(printf, 2, 3)));
int xvasprintf(char **, const char *, va_list)
    __attribute__((format(printf, 2, 0)));
void freezero(void *, size_t);
void strcopy(char *, size_t, const char *);
int strcaseprefix(const char *, const char *);
int hex_digit(int);
int utf8_valid(const char *, size_t);
int utf8_text_ok(const char *, size_t);
void random_id(char *, size_t, char);
int random_id_ok(const char *, char);
size_t utf8_seqlen(const char *, size_t);
char *utf8_dup(const char *);
int utf8_copy(char *, size_t, const char *);
long long monotime_us(void);
int64_t wallclock_ms(void);
int wallclock_check(void);
void usd_format(char *, size_t, int64_t);
int thread_start(pthread_t *, const char *, void *(*)(void *), void *);

#endif
