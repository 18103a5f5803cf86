/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Log lines on stderr: the prefix, the message and the newline arrive
 * whole, short lines and lines longer than the stack buffer alike.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "tollgate/log.h"

/* Run fn with stderr sent to a temporary file; return what it wrote. */
static char *
capture(void (*fn)(void))
{
	char path[] = "/tmp/tg-log-XXXXXX", *out;
	int fd, saved;
	off_t len;

	fd = mkstemp(path);
	assert_true(fd != -1);
	unlink(path);
	saved = dup(STDERR_FILENO);
	assert_true(saved != -1);
	assert_true(dup2(fd, STDERR_FILENO) != -1);
	fn();
	assert_true(dup2(saved, STDERR_FILENO) != -1);
	close(saved);
	len = lseek(fd, 0, SEEK_END);
	assert_true(len >= 0);
	out = calloc(1, (size_t)len + 1);
	assert_non_null(out);
	assert_int_equal(pread(fd, out, (size_t)len, 0), len);
	close(fd);
	return (out);
}

static void
say_short(void)
{
	log_info("hello %s %d", "world", 42);
	log_warnx("careful");
	errno = ENOENT;
	log_warn("open %s", "x");
	log_errorx("cannot start");
}

static void
test_short_lines(void **state)
{
	char *out;

	(void)state;
	out = capture(say_short);
	/* 2026-11-28T19:00:00.123Z info: hello world 42 */
	assert_int_equal(strlen(out),
	    4 * 25 + strlen("info: hello world 42\n") +
		strlen("warn: careful\n") +
		strlen("warn: open x: No such file or directory\n") +
		strlen("error: cannot start\n"));
	assert_non_null(strstr(out, "Z info: hello world 42\n"));
	assert_non_null(strstr(out, "Z warn: careful\n"));
	assert_non_null(
	    strstr(out, "Z warn: open x: No such file or directory\n"));
	assert_non_null(strstr(out, "Z error: cannot start\n"));
	assert_int_equal(out[4], '-');
	free(out);
}

static char long_msg[10000];

static void
say_long(void)
{
	log_info("[%s]", long_msg);
}

static void
test_long_line(void **state)
{
	char *out, *p;

	(void)state;
	memset(long_msg, 'x', sizeof(long_msg) - 1);
	out = capture(say_long);
	p = strstr(out, " info: [");
	assert_non_null(p);
	p += strlen(" info: [");
	assert_int_equal(strspn(p, "x"), sizeof(long_msg) - 1);
	assert_string_equal(p + sizeof(long_msg) - 1, "]\n");
	free(out);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_short_lines),
	    cmocka_unit_test(test_long_line),
	};

	log_init(1, 0);
	return (cmocka_run_group_tests(tests, NULL, NULL));
}
