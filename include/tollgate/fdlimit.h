/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The open files limit (RLIMIT_NOFILE) against what the configuration
 * needs: each client connection is a descriptor and its call upstream is
 * another, so limits.max_connections needs about twice as many, plus the
 * admin API's connections, the webhooks' and a base for the ledger, the
 * listeners and the event loop. At start and on every reload the soft
 * limit is raised towards that (never past the hard limit); when it still
 * falls short, a warning names both numbers and the proxy accepts only as
 * many clients as the descriptors left allow, so calls in flight never
 * fail for want of a socket upstream.
 */
#ifndef TOLLGATE_FDLIMIT_H
#define TOLLGATE_FDLIMIT_H

struct config;

/*
 * Descriptors besides the client connections, their upstream connections,
 * the admin API's and the webhooks': standard streams, the event loop, the
 * listening sockets, the ledger's files on three connections, syslog and
 * name resolution. An idle tollgate holds 24.
 */
#define FDLIMIT_BASE 64

/* fdlimit.c */
long fdlimit_need(const struct config *);
int fdlimit_raise(const struct config *, int *, char **);
int fdlimit_check(const struct config *, char **);
int fdlimit_apply(const struct config *);

#endif
