/* SPDX-License-Identifier: Apache-2.0 */
/*
 * buf.c: the bounded buffer every growing buffer in tollgate uses, as a
 * table of named cases: growth by doubling from the first allocation,
 * filling to the cap exactly, one byte past it failing with the content
 * kept, a formatted add that would cross the cap, reset and reuse, taking
 * the bytes, dropping a head, and the NUL a BUF_NUL buffer keeps.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tollgate/buf.h"
#include "tollgate/util.h"

/* Growth doubles from the first allocation, clamped at the cap. */
static void
test_growth(void **state)
{
	struct buf b;
	char block[100];

	(void)state;
	memset(block, 'x', sizeof(block));
	buf_init(&b, 1000, 64, 0);
	assert_null(buf_ptr(&b));
	assert_int_equal(buf_room(&b), 0);
	assert_int_equal(buf_add(&b, block, 10), 0);
	assert_int_equal(b.b_size, 64);
	assert_int_equal(buf_add(&b, block, 60), 0);
	assert_int_equal(b.b_size, 128);
	assert_int_equal(buf_add(&b, block, 100), 0); /* 170: from 128 */
	assert_int_equal(b.b_size, 256);
	assert_int_equal(buf_add(&b, block, 100), 0);
	assert_int_equal(buf_add(&b, block, 100), 0);
	assert_int_equal(buf_add(&b, block, 100), 0); /* 470 */
	assert_int_equal(b.b_size, 512);
	assert_int_equal(buf_add(&b, block, 100), 0); /* 570: 1024 > cap */
	assert_int_equal(b.b_size, 1000);
	assert_int_equal(buf_len(&b), 570);
	assert_int_equal(buf_room(&b), 430);
	buf_free(&b);

	/* No first size: the first allocation is exactly what is asked. */
	buf_init(&b, 1000, 0, 0);
	assert_int_equal(buf_add(&b, block, 30), 0);
	assert_int_equal(b.b_size, 30);
	assert_int_equal(buf_add(&b, block, 1), 0);
	assert_int_equal(b.b_size, 60);
	buf_free(&b);

	/* A first size over the cap is cut to it. */
	buf_init(&b, 16, 256, 0);
	assert_int_equal(buf_add(&b, block, 1), 0);
	assert_int_equal(b.b_size, 16);
	buf_free(&b);
}

/* The cap can be filled exactly; one byte more fails, content kept. */
static void
test_exact_max(void **state)
{
	struct buf b;

	(void)state;
	buf_init(&b, 8, 4, 0);
	assert_int_equal(buf_add(&b, "abcdefgh", 8), 0);
	assert_int_equal(buf_len(&b), 8);
	assert_int_equal(buf_room(&b), 0);
	assert_memory_equal(buf_ptr(&b), "abcdefgh", 8);
	assert_int_equal(buf_add(&b, "", 0), 0); /* nothing is not past it */
	buf_free(&b);

	/* With BUF_NUL the NUL counts: 7 bytes fill a cap of 8. */
	buf_init(&b, 8, 4, BUF_NUL);
	assert_int_equal(buf_add(&b, "abcdefg", 7), 0);
	assert_string_equal(buf_ptr(&b), "abcdefg");
	assert_int_equal(b.b_size, 8);
	assert_int_equal(buf_add(&b, "h", 1), -1);
	assert_string_equal(buf_ptr(&b), "abcdefg");
	buf_free(&b);
}

/* One past the cap fails and leaves the bytes and the size as they were. */
static void
test_past_max_keeps(void **state)
{
	struct buf b;

	(void)state;
	buf_init(&b, 10, 4, 0);
	assert_int_equal(buf_add(&b, "abc", 3), 0);
	assert_int_equal(buf_add(&b, "defghijk", 8), -1);
	assert_int_equal(buf_len(&b), 3);
	assert_int_equal(b.b_size, 4);
	assert_memory_equal(buf_ptr(&b), "abc", 3);
	assert_null(buf_reserve(&b, 8));
	assert_int_equal(buf_len(&b), 3);
	/* What does fit still goes in. */
	assert_int_equal(buf_add(&b, "defghij", 7), 0);
	assert_memory_equal(buf_ptr(&b), "abcdefghij", 10);
	buf_free(&b);

	/* A zeroed buffer has a cap of 0 and refuses everything. */
	memset(&b, 0, sizeof(b));
	assert_int_equal(buf_add(&b, "a", 1), -1);
	assert_null(buf_ptr(&b));
	buf_free(&b);
}

/* A formatted add: grows as needed, and fails whole past the cap. */
static void
test_addf(void **state)
{
	struct buf b;
	char big[600];

	(void)state;
	memset(big, 'y', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	buf_init(&b, 1024, 16, BUF_NUL);
	assert_int_equal(buf_addf(&b, "%s=%d", "n", 42), 0);
	assert_string_equal(buf_ptr(&b), "n=42");
	/* Longer than the room: formatted again after growing. */
	assert_int_equal(buf_addf(&b, ",%s", big), 0);
	assert_int_equal(buf_len(&b), 4 + 600);
	assert_int_equal(strncmp(buf_ptr(&b), "n=42,yyy", 8), 0);
	assert_int_equal(buf_ptr(&b)[buf_len(&b)], '\0');
	/* 604 + 600 would cross 1024: nothing is added, the NUL stays. */
	assert_int_equal(buf_addf(&b, "%s!", big), -1);
	assert_int_equal(buf_len(&b), 604);
	assert_int_equal(strlen(buf_ptr(&b)), 604);
	/* Exactly to the cap: 604 + 419 + NUL = 1024. */
	assert_int_equal(buf_addf(&b, "%.*s", 419, big), 0);
	assert_int_equal(buf_len(&b), 1023);
	assert_int_equal(buf_addf(&b, "%s", "z"), -1);
	assert_int_equal(buf_len(&b), 1023);
	buf_free(&b);

	/* Without BUF_NUL the cap is all bytes: filled exactly by a
	 * format, which vsnprintf cannot write in place. */
	buf_init(&b, 6, 0, 0);
	assert_int_equal(buf_addf(&b, "%d", 123), 0);
	assert_int_equal(buf_addf(&b, "%s", "abc"), 0);
	assert_memory_equal(buf_ptr(&b), "123abc", 6);
	assert_int_equal(buf_addf(&b, "%s", "d"), -1);
	assert_memory_equal(buf_ptr(&b), "123abc", 6);
	buf_free(&b);
}

/* Reset keeps the allocation and the cap; free keeps the cap. */
static void
test_reset_reuse(void **state)
{
	struct buf b;
	char *p;

	(void)state;
	buf_init(&b, 32, 8, BUF_NUL);
	assert_int_equal(buf_add(&b, "hello world", 11), 0);
	p = buf_ptr(&b);
	buf_reset(&b);
	assert_int_equal(buf_len(&b), 0);
	assert_ptr_equal(buf_ptr(&b), p);
	assert_string_equal(buf_ptr(&b), "");
	assert_int_equal(buf_add(&b, "again", 5), 0);
	assert_string_equal(buf_ptr(&b), "again");
	buf_free(&b);
	assert_null(buf_ptr(&b));
	assert_int_equal(buf_len(&b), 0);
	assert_int_equal(buf_add(&b, "0123456789012345678901234567890", 31),
	    0); /* the cap outlives free */
	assert_int_equal(buf_add(&b, "x", 1), -1);
	buf_free(&b);

	/* An empty add to a BUF_NUL buffer makes it a string. */
	buf_init(&b, 32, 8, BUF_NUL);
	assert_int_equal(buf_add(&b, "", 0), 0);
	assert_non_null(buf_ptr(&b));
	assert_string_equal(buf_ptr(&b), "");
	buf_free(&b);
}

/* Take hands the bytes over and leaves an empty buffer with its cap. */
static void
test_take(void **state)
{
	struct buf b;
	size_t len;
	char *p;

	(void)state;
	buf_init(&b, 64, 0, 0);
	assert_null(buf_take(&b, &len));
	assert_int_equal(len, 0);
	assert_int_equal(buf_add(&b, "body", 4), 0);
	p = buf_take(&b, &len);
	assert_int_equal(len, 4);
	assert_memory_equal(p, "body", 4);
	assert_null(buf_ptr(&b));
	assert_int_equal(buf_len(&b), 0);
	assert_int_equal(buf_room(&b), 0);
	free(p);
	assert_int_equal(buf_add(&b, "more", 4), 0);
	assert_memory_equal(buf_ptr(&b), "more", 4);
	buf_free(&b);
}

/* Reserve, write in place, commit: what the request body reader does. */
static void
test_reserve_commit(void **state)
{
	struct buf b;
	char *dst;

	(void)state;
	buf_init(&b, 10, 0, 0);
	dst = buf_reserve(&b, 6);
	assert_non_null(dst);
	assert_int_equal(b.b_size, 6);
	memcpy(dst, "abc", 3);
	buf_commit(&b, 3); /* fewer than reserved came */
	assert_int_equal(buf_len(&b), 3);
	assert_int_equal(buf_room(&b), 3);
	dst = buf_reserve(&b, 3); /* fits: no growth */
	assert_int_equal(b.b_size, 6);
	memcpy(dst, "def", 3);
	buf_commit(&b, 3);
	assert_null(buf_reserve(&b, 5)); /* 11 > 10 */
	dst = buf_reserve(&b, 4);
	assert_int_equal(b.b_size, 10);
	memcpy(dst, "ghij", 4);
	buf_commit(&b, 4);
	assert_memory_equal(buf_ptr(&b), "abcdefghij", 10);
	buf_free(&b);
}

/* Consume drops a head and keeps the rest at the front. */
static void
test_consume(void **state)
{
	struct buf b;

	(void)state;
	buf_init(&b, 16, 8, BUF_NUL);
	assert_int_equal(buf_add(&b, "event1event2", 12), 0);
	buf_consume(&b, 6);
	assert_string_equal(buf_ptr(&b), "event2");
	assert_int_equal(buf_len(&b), 6);
	buf_consume(&b, 100);
	assert_int_equal(buf_len(&b), 0);
	assert_string_equal(buf_ptr(&b), "");
	buf_free(&b);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_growth),
	    cmocka_unit_test(test_exact_max),
	    cmocka_unit_test(test_past_max_keeps),
	    cmocka_unit_test(test_addf),
	    cmocka_unit_test(test_reset_reuse),
	    cmocka_unit_test(test_take),
	    cmocka_unit_test(test_reserve_commit),
	    cmocka_unit_test(test_consume),
	};

	return (cmocka_run_group_tests(tests, NULL, NULL));
}
