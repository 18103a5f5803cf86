/* SPDX-License-Identifier: Apache-2.0 */
/*
 * HTTP header lists shared by the listener (request headers) and the
 * upstream module (response headers): an ordered array of name/value pairs,
 * names kept as received, looked up case-insensitively.
 */
#ifndef TOLLGATE_HTTP_H
#define TOLLGATE_HTTP_H

#include <stddef.h>

struct evbuffer;

struct hdr {
	char *h_name; /* owns the allocation that holds both strings */
	char *h_value; /* points into h_name's allocation */
};

/* An ordered header list; owns its strings. */
struct hdrs {
	struct hdr *hs_v;
	size_t hs_n;
	size_t hs_cap;
	size_t hs_bytes; /* sum of name and value lengths */
};

/* One request as received; owned by the connection, then the session. */
struct http_request {
	char *hr_method;
	char *hr_target; /* raw request-target */
	int hr_minor; /* HTTP/1.hr_minor */
	struct hdrs hr_headers;
	struct evbuffer *hr_body;
	size_t hr_content_length;
	int hr_keepalive; /* the client allows another request */
	int hr_expect_continue; /* the client waits for 100 Continue */
};

/* Limits the head parser enforces. */
struct head_limits {
	size_t hl_max_header_bytes; /* request line + headers */
	size_t hl_max_headers;
	size_t hl_max_body_bytes;
};

/* Progress through one request head; zero it before the first byte. */
struct head_parser {
	size_t hp_bytes; /* head bytes consumed so far */
	int hp_crlf_skipped; /* empty lines before the request line */
	int hp_status; /* on HEAD_ERROR: the status to answer */
	const char *hp_code; /* ... a short reason code */
	const char *hp_msg; /* ... and a sentence */
};

enum head_result {
	HEAD_NEED_MORE,
	HEAD_DONE,
	HEAD_ERROR,
};

/* http.c */
enum head_result http_head_parse(struct head_parser *, struct evbuffer *,
    const struct head_limits *, struct http_request *);
void http_request_free(struct http_request *);
void hdrs_add(struct hdrs *, const char *, size_t, const char *, size_t);
const char *hdrs_get(const struct hdrs *, const char *);
size_t hdrs_count(const struct hdrs *, const char *);
void hdrs_clear(struct hdrs *);
int http_token_has(const char *, const char *);
int http_is_hop_by_hop(const char *);
int http_is_secret_header(const char *);

#endif
