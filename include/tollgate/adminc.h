/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A client of a running tollgate's admin API, for the command line tools
 * that talk to the daemon rather than read its ledger (tollgate top,
 * tollgate usage): where the API is and its token (the configuration's
 * admin: section, or --admin URL and TOLLGATE_ADMIN_TOKEN), and one
 * blocking request at a time over libcurl. The token is a secret: it is
 * only ever sent in the Authorization header, and wiped when freed.
 */
#ifndef TOLLGATE_ADMINC_H
#define TOLLGATE_ADMINC_H

/* The largest answer read. */
#define ADMINC_BODY_MAX (16 * 1024 * 1024)

struct adminc {
	char *ac_base; /* "http://127.0.0.1:8788", no trailing '/' */
	char *ac_auth; /* "Authorization: Bearer ...", or NULL; a secret */
	void *ac_curl; /* CURL *, reused between requests */
	long ac_timeout_ms; /* a whole request; 0: 5000 */
};

/* adminc.c */
int adminc_setup(struct adminc *, const char *, const char *, const char *);
int adminc_request(struct adminc *, const char *, const char *, const char *,
    char **, long *, char **);
void adminc_free(struct adminc *);

#endif
