/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What puts a configuration in force: the one every new call takes a
 * reference to (config_current, src/config/current.c), swapped whole by
 * a reload, with its generation and the ports the daemon really started
 * with (src/daemon/server.c).
 */
#ifndef TOLLGATE_SERVER_H
#define TOLLGATE_SERVER_H

struct config;
struct cfgerrs;

/* server.c */
void server_set_config(struct config *);
void server_started(int, int);
unsigned long long server_generation(void);
int server_reload(const char *, struct cfgerrs *);

#endif
