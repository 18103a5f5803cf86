/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The glue between one libcurl multi handle and the libevent loop, after
 * curl's docs/examples/hiperfifo.c, and nothing else: curl tells the
 * driver which sockets to watch (sock_cb) and when to wake it
 * (timer_set_cb); libevent tells it when a socket is ready or the timer
 * fired (event_cb, timer_cb), and the driver passes that on to
 * curl_multi_socket_action, then hands every finished transfer to its
 * owner (cc_done). It also counts how deep the loop is inside curl, so
 * an owner whose callbacks may end a transfer knows when it must wait
 * (curlev_inside) and when it may go on (cc_after).
 */
#include <stdlib.h>

#include <curl/curl.h>
#include <event2/event.h>

#include "tollgate/curlev.h"
#include "tollgate/log.h"
#include "tollgate/util.h"

/* A libcurl multi handle on a loop; owned by whoever made it. */
struct curlev {
	struct event_base *cv_base; /* borrowed */
	CURLM *cv_multi;
	struct event *cv_timer; /* curl's one timeout */
	const struct curlev_cbs *cv_cbs; /* borrowed */
	void *cv_arg;
	const char *cv_name; /* for logs; borrowed */
	int cv_running; /* transfers curl still runs */
	int cv_depth; /* >0 while inside curl, see curlev_inside */
};

/* Per-socket watcher that curl asked for; curl holds it (multi_assign). */
struct curlev_sock {
	struct event *cs_ev;
};

/*
 * Hand every finished transfer to the owner. A message lives inside its
 * easy handle, so what it says is read before the owner may remove or
 * free the handle; curl_multi_info_read is safe to call again after
 * that.
 */
static void
curlev_finished(struct curlev *cv)
{
	CURLMsg *msg;
	CURL *e;
	CURLcode result;
	int left;

	while ((msg = curl_multi_info_read(cv->cv_multi, &left)) != NULL) {
		if (msg->msg != CURLMSG_DONE)
			continue;
		e = msg->easy_handle;
		result = msg->data.result;
		cv->cv_cbs->cc_done(cv->cv_arg, e, result);
	}
}

/*
 * Let curl act on fd (or its timeout), then on what finished. The finished
 * transfers' callbacks run inside too: an owner that ends a transfer from
 * there still defers the removal until cc_after, as it must from inside
 * curl's own callbacks.
 */
static void
curlev_action(struct curlev *cv, curl_socket_t fd, int action)
{
	CURLMcode rc;

	curlev_enter(cv);
	rc =
	    curl_multi_socket_action(cv->cv_multi, fd, action, &cv->cv_running);
	if (rc != CURLM_OK)
		log_warnx("%s: %s", cv->cv_name, curl_multi_strerror(rc));
	curlev_finished(cv);
	curlev_leave(cv);
}

static void
event_cb(evutil_socket_t fd, short kind, void *arg)
{
	curlev_action(arg, fd,
	    ((kind & EV_READ) ? CURL_CSELECT_IN : 0) |
		((kind & EV_WRITE) ? CURL_CSELECT_OUT : 0));
}

static void
timer_cb(evutil_socket_t fd, short kind, void *arg)
{
	(void)fd;
	(void)kind;
	curlev_action(arg, CURL_SOCKET_TIMEOUT, 0);
}

/*
 * curl's timer callback: -1 stops the timer, anything else (re)arms it.
 * curl calls this from inside its own calls, where calling back into
 * curl_multi_socket_action would be a recursive call curl refuses, so
 * even 0 ("now") is a timer that fires on the loop's next turn.
 */
static int
timer_set_cb(CURLM *multi, long timeout_ms, void *arg)
{
	struct curlev *cv = arg;
	struct timeval tv;

	(void)multi;
	if (timeout_ms < 0) {
		evtimer_del(cv->cv_timer);
		return (0);
	}
	tv.tv_sec = timeout_ms / 1000;
	tv.tv_usec = (timeout_ms % 1000) * 1000;
	evtimer_add(cv->cv_timer, &tv);
	return (0);
}

/*
 * curl's socket callback. what says everything curl now waits for on s,
 * so a change (say from OUT while sending to IN once the request is out)
 * replaces the socket's event rather than adding to it; REMOVE comes
 * before curl closes s.
 */
static int
sock_cb(CURL *e, curl_socket_t s, int what, void *arg, void *sockp)
{
	struct curlev *cv = arg;
	struct curlev_sock *cs = sockp;
	short kind;

	(void)e;
	if (what == CURL_POLL_REMOVE) {
		if (cs != NULL) {
			event_free(cs->cs_ev);
			free(cs);
			curl_multi_assign(cv->cv_multi, s, NULL);
		}
		return (0);
	}
	kind = EV_PERSIST | ((what & CURL_POLL_IN) ? EV_READ : 0) |
	    ((what & CURL_POLL_OUT) ? EV_WRITE : 0);
	if (cs == NULL) {
		cs = xcalloc(1, sizeof(*cs));
		curl_multi_assign(cv->cv_multi, s, cs);
	} else
		event_free(cs->cs_ev);
	if ((cs->cs_ev = event_new(cv->cv_base, s, kind, event_cb, cv)) == NULL)
		fatalx("%s: event_new", __func__);
	event_add(cs->cs_ev, NULL);
	return (0);
}

/*
 * A driver for a new multi handle on base, reporting to cbs with arg; name
 * prefixes its log lines. All three are borrowed for its life. NULL if
 * curl cannot be set up.
 */
struct curlev *
curlev_new(struct event_base *base, const char *name,
    const struct curlev_cbs *cbs, void *arg)
{
	struct curlev *cv;

	/* Counted by curl: each driver holds one reference. */
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		return (NULL);
	cv = xcalloc(1, sizeof(*cv));
	cv->cv_base = base;
	cv->cv_name = name;
	cv->cv_cbs = cbs;
	cv->cv_arg = arg;
	if ((cv->cv_multi = curl_multi_init()) == NULL)
		goto fail;
	if ((cv->cv_timer = evtimer_new(base, timer_cb, cv)) == NULL)
		goto fail;
	curl_multi_setopt(cv->cv_multi, CURLMOPT_SOCKETFUNCTION, sock_cb);
	curl_multi_setopt(cv->cv_multi, CURLMOPT_SOCKETDATA, cv);
	curl_multi_setopt(cv->cv_multi, CURLMOPT_TIMERFUNCTION, timer_set_cb);
	curl_multi_setopt(cv->cv_multi, CURLMOPT_TIMERDATA, cv);
	return (cv);

fail:
	if (cv->cv_multi != NULL)
		curl_multi_cleanup(cv->cv_multi);
	free(cv);
	curl_global_cleanup();
	return (NULL);
}

/* The multi handle, for the owner's own options (connection limits). */
CURLM *
curlev_multi(struct curlev *cv)
{
	return (cv->cv_multi);
}

/* Start e on the driver; 0, or -1 if curl refuses it. */
int
curlev_add(struct curlev *cv, CURL *e)
{
	return (curl_multi_add_handle(cv->cv_multi, e) == CURLM_OK ? 0 : -1);
}

/*
 * Take e off the driver, ending it if it still runs (its connection is
 * closed). Not from inside one of curl's callbacks on this driver's
 * transfers (curlev_inside): libcurl forbids it there.
 */
void
curlev_remove(struct curlev *cv, CURL *e)
{
	curl_multi_remove_handle(cv->cv_multi, e);
}

/*
 * Is the loop inside curl: in curl_multi_socket_action (and so maybe in
 * one of curl's callbacks on a transfer), in a cc_done, or between an
 * owner's curlev_enter and curlev_leave? A transfer ended there must be
 * kept until cc_after.
 */
int
curlev_inside(const struct curlev *cv)
{
	return (cv->cv_depth > 0);
}

/*
 * Mark a call into curl made by the owner (curl_easy_pause, which may run
 * the transfer's callbacks at once); curlev_leave ends it. Calls nest.
 */
void
curlev_enter(struct curlev *cv)
{
	cv->cv_depth++;
}

/* End what curlev_enter began; the outermost runs cc_after. */
void
curlev_leave(struct curlev *cv)
{
	if (--cv->cv_depth == 0 && cv->cv_cbs->cc_after != NULL)
		cv->cv_cbs->cc_after(cv->cv_arg);
}

/*
 * Free the driver and its multi handle; the owner has removed every
 * transfer. curl closes the connections it kept, which removes their
 * sockets' events.
 */
void
curlev_free(struct curlev *cv)
{
	if (cv == NULL)
		return;
	curl_multi_cleanup(cv->cv_multi);
	event_free(cv->cv_timer);
	free(cv);
	curl_global_cleanup();
}
