/* SPDX-License-Identifier: Apache-2.0 */
/*
 * One libcurl multi handle driven by a libevent loop (curl's hiperfifo
 * shape): a driver watches the sockets and the timer curl asks for, runs
 * curl_multi_socket_action when they fire, and hands each finished
 * transfer to its owner. The owner keeps everything else: the easy
 * handles' options, its own multi options, and what to do when a
 * transfer ends. src/upstream/upstream.c (calls to providers) and src/alerts/
 * alerts.c (webhook deliveries) each own one driver.
 */
#ifndef TOLLGATE_CURLEV_H
#define TOLLGATE_CURLEV_H

#include <curl/curl.h>

struct event_base;
struct curlev;

/* Callbacks into the owner of a driver. */
struct curlev_cbs {
	/*
	 * A transfer finished with curl's result. The handle is still in
	 * the multi handle: the owner may remove it (curlev_remove) and
	 * free it here, or start others.
	 */
	void (*cc_done)(void *, CURL *, CURLcode);
	/*
	 * The outermost call into curl has returned (see curlev_inside):
	 * the owner may now remove what it had to keep while inside. NULL
	 * when the owner never ends a transfer from inside curl.
	 */
	void (*cc_after)(void *);
};

/* curlev.c */
struct curlev *curlev_new(
    struct event_base *, const char *, const struct curlev_cbs *, void *);
CURLM *curlev_multi(struct curlev *);
int curlev_add(struct curlev *, CURL *);
void curlev_remove(struct curlev *, CURL *);
int curlev_inside(const struct curlev *);
void curlev_enter(struct curlev *);
void curlev_leave(struct curlev *);
void curlev_free(struct curlev *);

#endif
