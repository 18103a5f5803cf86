/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The fleet's shared lists after a stop: freeing the Redis connection at
 * shutdown answers every command still pending with no reply, after
 * shared_stop has cleared the lists, so each answer's callback must do
 * nothing, whatever kind of list it was for (a reconcile read, an HGET
 * for an announcement, a share, a lift).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

/* The statics under test; the core library's shared.o is not linked. */
#include "../../src/fleet/shared.c"

static void
test_answers_after_stop(void **state)
{
	size_t i;

	(void)state;
	for (i = 0; i < SHARED_NKINDS; i++) {
		shared_start();
		sh.sh_list[i].sl_reading = 1;
		shared_stop();
		/* What rconn_free does to what is still pending. */
		read_cb(NULL, "shutting down", &sh.sh_list[i]);
		assert_int_equal(sh.sh_list[i].sl_reading, 0);
		get_cb(NULL, "shutting down", arg_new(&sh.sh_list[i], "x"));
		share_cb(NULL, "shutting down", arg_new(&sh.sh_list[i], "x"));
		lift_cb(NULL, "shutting down", arg_new(&sh.sh_list[i], "x"));
		assert_int_equal(sh.sh_on, 0);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_answers_after_stop),
	};

	return (cmocka_run_group_tests(tests, NULL, NULL));
}
