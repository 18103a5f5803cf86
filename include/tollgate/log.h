/* SPDX-License-Identifier: Apache-2.0 */
/*
 * relayd-style logging. Lines go to stderr when running in the foreground
 * (-d) and to syslog otherwise. log_warn appends strerror(errno);
 * log_debug prints only with -v. Never pass a body, a key or a query string
 * to these functions.
 */
#ifndef TOLLGATE_LOG_H
#define TOLLGATE_LOG_H

#include <stdarg.h>

/* log.c */
void log_init(int, int);
void log_warn(const char *, ...) __attribute__((format(printf, 1, 2)));
void log_warnx(const char *, ...) __attribute__((format(printf, 1, 2)));
void log_errorx(const char *, ...) __attribute__((format(printf, 1, 2)));
void log_info(const char *, ...) __attribute__((format(printf, 1, 2)));
void log_debug(const char *, ...) __attribute__((format(printf, 1, 2)));
void fatal(const char *, ...) __attribute__((format(printf, 1, 2), noreturn));
void fatalx(const char *, ...) __attribute__((format(printf, 1, 2), noreturn));
size_t log_escape(char *, size_t, const char *, size_t);
size_t log_escape_word(char *, size_t, const char *, size_t);

#endif
