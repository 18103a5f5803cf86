/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Upstream transfers: one libcurl multi handle driven by the libevent loop
 * (curl's hiperfifo shape). A transfer reports its response headers once,
 * then body bytes as they arrive, then its end. The data callback may ask
 * for a pause (backpressure); xfer_resume continues it.
 */
#ifndef TOLLGATE_UPSTREAM_H
#define TOLLGATE_UPSTREAM_H

#include <stddef.h>

struct event_base;
struct upstream_conf;
struct hdrs;
struct xfer;

enum xfer_result {
	XFER_OK,
	XFER_TIMEOUT, /* libcurl's connect timeout */
	XFER_CONNECT, /* could not connect, resolve or handshake */
	XFER_FAILED, /* reset, malformed response, anything else */
};

#define XFER_PAUSE ((size_t)-1)

/* Callbacks into the owner of a transfer (a session). */
struct xfer_cbs {
	/* Final response headers (1xx skipped); called at most once. */
	void (*xc_headers)(void *, long, const struct hdrs *);
	/* Body bytes; return len when consumed, or XFER_PAUSE. */
	size_t (*xc_data)(void *, const char *, size_t);
	/* The transfer ended; the xfer must then be freed by the owner. */
	void (*xc_done)(void *, enum xfer_result, const char *);
};

/* upstream.c */
int upstream_init(struct event_base *, int);
void upstream_set_max_connections(int);
void upstream_shutdown(void);
struct xfer *xfer_start(const struct upstream_conf *, const char *,
    const char *, const char *, const struct hdrs *, const char *, size_t, int,
    const struct xfer_cbs *, void *);
int xfer_sent(const struct xfer *);
long upstream_retry_after(const struct hdrs *);
void xfer_resume(struct xfer *);
void xfer_free(struct xfer *);

#endif
