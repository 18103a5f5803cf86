/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The command line's reports (src/ops/): tollgate spend and calls, read
 * straight from the ledger file, tollgate prices import and tollgate
 * ship init. Each takes
 * the arguments after its command's name and returns the exit status.
 */
#ifndef TOLLGATE_CLI_H
#define TOLLGATE_CLI_H

/* cli.c */
int cli_spend(int, char **);
int cli_calls(int, char **);

/* cli_intent.c */
int cli_intent(int, char **);

/* cli_usage.c */
int cli_usage_post(int, char **);

/* cli_prices.c */
int cli_prices(int, char **);

/* cli_ship.c */
int cli_ship(int, char **);

#endif
