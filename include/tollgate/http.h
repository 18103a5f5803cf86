/* SPDX-License-Identifier: Apache-2.0 */
/*
 * HTTP header lists shared by the listener (request headers) and the
 * upstream module (response headers): an ordered array of name/value pairs,
 * names kept as received, looked up case-insensitively.
 */
#ifndef TOLLGATE_HTTP_H
#define TOLLGATE_HTTP_H

#include <stddef.h>

struct hdr {
	char *h_name;
	char *h_value;
};

/* An ordered header list; owns its strings. */
struct hdrs {
	struct hdr *hs_v;
	size_t hs_n;
	size_t hs_cap;
	size_t hs_bytes; /* sum of name and value lengths */
};

/* http.c */
void hdrs_add(struct hdrs *, const char *, size_t, const char *, size_t);
const char *hdrs_get(const struct hdrs *, const char *);
size_t hdrs_count(const struct hdrs *, const char *);
void hdrs_clear(struct hdrs *);
int http_token_has(const char *, const char *);
int http_is_hop_by_hop(const char *);
int http_is_secret_header(const char *);

#endif
