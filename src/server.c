/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The configuration in force. A reload swaps the pointer and bumps the
 * generation (memcached's proxy_config.c); sessions keep a reference to the
 * config they started with, so the old one lives until its last call ends.
 */
#include <stddef.h>

#include "tollgate/config.h"
#include "tollgate/session.h"

static struct config *server_cf;
static unsigned long long server_gen;

/* The current configuration (borrowed; take a reference to keep it). */
struct config *
server_config(void)
{
	return (server_cf);
}

/* Make cf current, taking over the caller's reference; NULL releases. */
void
server_set_config(struct config *cf)
{
	struct config *old = server_cf;

	server_cf = cf;
	if (cf != NULL)
		cf->cf_generation = ++server_gen;
	if (old != NULL)
		config_unref(old);
}

/* The generation of the current configuration. */
unsigned long long
server_generation(void)
{
	return (server_gen);
}
