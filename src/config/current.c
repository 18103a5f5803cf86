/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The configuration in force, kept here so that every room that needs it
 * (the listener, sessions, the admin API) asks config itself rather than
 * the server that loads it. This file only holds the pointer and its one
 * reference: the server decides what is current, at start and at each
 * reload (src/daemon/server.c, which also numbers the generations), and sessions
 * take references of their own to the config they started with.
 */
#include <stddef.h>

#include "tollgate/config.h"

static struct config *config_cur;

/* The configuration in force (borrowed; take a reference to keep it). */
struct config *
config_current(void)
{
	return (config_cur);
}

/*
 * Make cf the configuration in force, taking over the caller's reference,
 * and release the one held on the previous configuration; NULL leaves
 * none in force.
 */
void
config_set_current(struct config *cf)
{
	struct config *old = config_cur;

	config_cur = cf;
	if (old != NULL)
		config_unref(old);
}
