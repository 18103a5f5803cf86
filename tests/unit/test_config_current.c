/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The configuration in force (src/config/current.c): none before one is
 * set; setting one takes over the caller's reference; a swap releases the
 * previous one's reference and only that one (a session holding its own
 * keeps it alive); NULL leaves none and frees the last one (ASan sees a
 * leak or a double free).
 */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "tollgate/config.h"

static struct config *
load(void)
{
	struct cfgerrs errs = {0};
	struct config *cf;

	cf = config_load(TG_SOURCE_DIR "/config/tollgate.yaml", &errs);
	assert_int_equal(errs.ce_n, 0);
	assert_non_null(cf);
	assert_int_equal(cf->cf_refs, 1);
	return (cf);
}

static void
test_none_at_first(void **state)
{
	(void)state;
	assert_null(config_current());
}

static void
test_set_takes_reference(void **state)
{
	struct config *a = load();

	(void)state;
	config_set_current(a);
	assert_ptr_equal(config_current(), a);
	/* The caller's reference is now the one current.c holds. */
	assert_int_equal(a->cf_refs, 1);
	config_set_current(NULL);
	assert_null(config_current());
}

static void
test_swap_releases_old(void **state)
{
	struct config *a = load(), *b = load();

	(void)state;
	config_set_current(a);
	/* A call that started under a keeps a reference of its own. */
	config_ref(a);
	assert_int_equal(a->cf_refs, 2);
	config_set_current(b);
	assert_ptr_equal(config_current(), b);
	assert_int_equal(a->cf_refs, 1);
	assert_int_equal(b->cf_refs, 1);
	config_unref(a);
	config_set_current(NULL);
	assert_null(config_current());
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_none_at_first),
	    cmocka_unit_test(test_set_takes_reference),
	    cmocka_unit_test(test_swap_releases_old),
	};

	return (cmocka_run_group_tests(tests, NULL, NULL));
}
