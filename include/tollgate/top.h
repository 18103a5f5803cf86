/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tollgate top (src/top/): the live terminal view of a running tollgate,
 * read from its admin API. Takes the arguments after "top" and returns
 * the exit status.
 */
#ifndef TOLLGATE_TOP_H
#define TOLLGATE_TOP_H

/* top.c */
int top_main(int, char **);

#endif
