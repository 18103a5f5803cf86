/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The open files limit, raised to what the configuration needs, and the
 * client connections held to what it allows when it cannot be raised
 * far enough.
 *
 * Why not refuse to start instead: the default max_connections (1024)
 * already needs more than the usual soft limit (1024), and in a container
 * the hard limit may be no higher. A tollgate that starts and serves as
 * many clients as its descriptors allow, and says so, is worth more than
 * one that does not start; what must not happen is accepting clients
 * whose calls then find no descriptor for their upstream connection (502)
 * or the ledger none for its files, so the listener is capped instead.
 */
#include <sys/resource.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tollgate/admin.h"
#include "tollgate/alerts.h"
#include "tollgate/config.h"
#include "tollgate/fdlimit.h"
#include "tollgate/log.h"
#include "tollgate/upstream.h"
#include "tollgate/util.h"

/* Descriptors cf needs: two per client connection, and the rest. */
long
fdlimit_need(const struct config *cf)
{
	return (2L * cf->cf_max_connections + ADMIN_MAX_CONNECTIONS +
	    ALERTS_MAX_CONNECTIONS + FDLIMIT_BASE);
}

/* Client connections that fit in lim descriptors. */
static int
fdlimit_fit(const struct config *cf, unsigned long long lim)
{
	unsigned long long rest = (unsigned long long)(fdlimit_need(cf) -
	    2L * cf->cf_max_connections);

	if (lim <= rest + 2)
		return (1);
	return ((int)((lim - rest) / 2));
}

static void
fdlimit_short(const struct config *cf, unsigned long long soft,
    unsigned long long hard, int fit, char **cause)
{
	char hbuf[32];

	if (hard == (unsigned long long)RLIM_INFINITY)
		snprintf(hbuf, sizeof(hbuf), "unlimited");
	else
		snprintf(hbuf, sizeof(hbuf), "%llu", hard);
	xasprintf(cause,
	    "the open files limit is %llu (hard limit %s), below the %ld "
	    "that limits.max_connections %d needs (2 per connection and %ld "
	    "more); at most %d client connections will be accepted; raise "
	    "LimitNOFILE= or ulimit -n to %ld",
	    soft, hbuf, fdlimit_need(cf), cf->cf_max_connections,
	    fdlimit_need(cf) - 2L * cf->cf_max_connections, fit,
	    fdlimit_need(cf));
}

/*
 * Raise the soft open files limit towards what cf needs, up to the hard
 * limit. Returns 0 with *allowed = max_connections when it is enough, or
 * -1 with *allowed the client connections that fit and *cause saying
 * what is short.
 */
int
fdlimit_raise(const struct config *cf, int *allowed, char **cause)
{
	struct rlimit rl;
	rlim_t need = (rlim_t)fdlimit_need(cf), old;

	*allowed = cf->cf_max_connections;
	if (getrlimit(RLIMIT_NOFILE, &rl) == -1) {
		xasprintf(
		    cause, "getrlimit(RLIMIT_NOFILE): %s", strerror(errno));
		return (-1);
	}
	if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < need) {
		old = rl.rlim_cur;
		rl.rlim_cur =
		    rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= need
		    ? need
		    : rl.rlim_max;
		if (rl.rlim_cur > old) {
			if (setrlimit(RLIMIT_NOFILE, &rl) == -1) {
				log_warn("setrlimit(RLIMIT_NOFILE, %llu)",
				    (unsigned long long)rl.rlim_cur);
				rl.rlim_cur = old;
			} else
				log_info("open files limit raised from %llu "
					 "to %llu",
				    (unsigned long long)old,
				    (unsigned long long)rl.rlim_cur);
		}
	}
	if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= need)
		return (0);
	*allowed = fdlimit_fit(cf, rl.rlim_cur);
	fdlimit_short(cf, rl.rlim_cur, rl.rlim_max, *allowed, cause);
	return (-1);
}

/*
 * For tollgate check: would the hard open files limit here hold what cf
 * needs? (The soft one is raised at start.) 0, or -1 with *cause.
 */
int
fdlimit_check(const struct config *cf, char **cause)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == -1)
		return (0);
	if (rl.rlim_max == RLIM_INFINITY ||
	    rl.rlim_max >= (rlim_t)fdlimit_need(cf))
		return (0);
	fdlimit_short(
	    cf, rl.rlim_max, rl.rlim_max, fdlimit_fit(cf, rl.rlim_max), cause);
	return (-1);
}

/*
 * At start and on every reload: raise the limit for cf, and hold
 * libcurl's idle connections to what it allows, with a warning when that
 * is fewer than cf asks for. Returns the client connections the limit
 * allows, for the caller to hold the proxy's listener to
 * (listener_set_fd_cap): the listener sits above this file.
 */
int
fdlimit_apply(const struct config *cf)
{
	char *cause = NULL;
	int allowed;

	if (fdlimit_raise(cf, &allowed, &cause) == -1) {
		log_warnx("%s", cause);
		free(cause);
	}
	upstream_set_max_connections(allowed);
	return (allowed);
}
