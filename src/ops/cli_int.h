/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What the commands that read the ledger file share (cli.c,
 * cli_intent.c): finding the file.
 */
#ifndef TOLLGATE_CLI_INT_H
#define TOLLGATE_CLI_INT_H

/* cli.c */
char *cli_ledger_path(const char *, const char *);

#endif
