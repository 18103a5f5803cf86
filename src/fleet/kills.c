/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Kills across the fleet: the set kept in Redis and the channel that
 * announces each change (being written; until then kills stay local).
 */
#include <stddef.h>

#include "fleet_int.h"

void
fleet_kills_start(void)
{
}

void
fleet_kills_stop(void)
{
}

void
fleet_kills_resync(void)
{
}

void
fleet_kills_message(const char *msg, size_t len, void *arg)
{
	(void)msg;
	(void)len;
	(void)arg;
}

void
fleet_kills_sub_state(int up, void *arg)
{
	(void)up;
	(void)arg;
}
