/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Configuration text as a file, for the tests that load one:
 * write_file() writes a whole file, cfgfile_load() loads text as
 * tollgate.yaml in a fresh temporary directory and removes it again.
 * Include after cmocka.h, tollgate/config.h and tollgate/util.h.
 */
#ifndef TOLLGATE_CFGFILE_H
#define TOLLGATE_CFGFILE_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Write text as the whole of path. */
static inline void
write_file(const char *path, const char *text)
{
	FILE *f;

	f = fopen(path, "w");
	assert_non_null(f);
	assert_int_equal(fwrite(text, 1, strlen(text), f), strlen(text));
	assert_int_equal(fclose(f), 0);
}

/*
 * Load text as a file in a fresh temporary directory; *pathp gets the
 * path it had (for the file:line of errors), which the caller frees.
 */
static inline struct config *
cfgfile_load(const char *text, struct cfgerrs *errs, char **pathp)
{
	char dir[] = "/tmp/tg-test-cfg.XXXXXX";
	struct config *cf;

	assert_non_null(mkdtemp(dir));
	xasprintf(pathp, "%s/tollgate.yaml", dir);
	write_file(*pathp, text);
	cf = config_load(*pathp, errs);
	unlink(*pathp);
	rmdir(dir);
	return (cf);
}

#endif
