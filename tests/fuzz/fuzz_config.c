/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzz target for the config loader: any file must load or fail with
 * errors, never crash, leak or read out of bounds. A config is read at
 * every SIGHUP, so a loader crash would take the daemon down.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "tollgate/config.h"
#include "tollgate/log.h"

int LLVMFuzzerTestOneInput(const uint8_t *, size_t);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
	static char path[64];
	struct cfgerrs errs = {0};
	struct config *cf;
	FILE *f;

	if (path[0] == '\0')
		snprintf(path, sizeof(path), "/tmp/tg-fuzz-config-%d.yaml",
		    (int)getpid());
	if ((f = fopen(path, "wb")) == NULL)
		fatal("%s", path);
	if (len > 0 && fwrite(data, 1, len, f) != len)
		fatal("%s", path);
	fclose(f);
	if ((cf = config_load(path, &errs)) != NULL)
		config_unref(cf);
	else if (errs.ce_n == 0)
		fatalx("config_load failed without saying why");
	cfgerrs_free(&errs);
	unlink(path);
	return (0);
}
