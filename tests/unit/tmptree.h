/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The removal of a test's temp directory and all it holds (a ledger, its
 * -wal and -shm, files a case made), for the unit tests that work on
 * files: the ledger, kills, alerts, policy and spend tests.
 */
#ifndef TOLLGATE_TMPTREE_H
#define TOLLGATE_TMPTREE_H

#include <sys/stat.h>

#include <ftw.h>
#include <stdio.h>

static int
tmptree_rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return (remove(p));
}

/* Remove dir and everything below it, depth first, following no link. */
static void
tmptree_remove(const char *dir)
{
	nftw(dir, tmptree_rm_cb, 8, FTW_DEPTH | FTW_PHYS);
}

#endif /* TOLLGATE_TMPTREE_H */
