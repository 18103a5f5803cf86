/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The curl-on-libevent driver, for real on an event loop against a
 * libevent HTTP server on loopback: transfers that remove and free their
 * own handle inside their done callback, a done callback that starts the
 * next transfer, a refused connection's result, an unfinished transfer
 * removed from outside (its socket's event goes with it), and the
 * inside/after bookkeeping that lets an owner defer a removal.
 */
#include <sys/socket.h>

#include <netinet/in.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <curl/curl.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>

#include "tollgate/curlev.h"

#define MAXDONE 8

/* One test's loop, server, driver and what the callbacks saw. */
struct fix {
	struct event_base *base;
	struct evhttp *http;
	struct curlev *cv;
	int port;
	int hits; /* requests the server saw */
	int ndone;
	CURLcode results[MAXDONE];
	long statuses[MAXDONE];
	int inside_at_done; /* curlev_inside was true in every cc_done */
	int nafter;
	int inside_at_after; /* curlev_inside in some cc_after */
	int chain; /* transfers the done callback still starts */
	int want; /* ndone at which the loop stops */
	curl_socket_t sock; /* the last transfer's socket */
};

static void
server_cb(struct evhttp_request *req, void *arg)
{
	struct fix *fx = arg;
	struct evbuffer *out;

	fx->hits++;
	if (strcmp(evhttp_request_get_uri(req), "/hang") == 0)
		return; /* never answered; freed with the server */
	out = evbuffer_new();
	evbuffer_add(out, "ok", 2);
	evhttp_send_reply(req, 200, "OK", out);
	evbuffer_free(out);
}

static size_t
discard(char *buf, size_t size, size_t n, void *arg)
{
	(void)buf;
	(void)arg;
	return (size * n);
}

/* Notes the socket curl made for a transfer. */
static int
sockopt_cb(void *arg, curl_socket_t s, curlsocktype purpose)
{
	struct fix *fx = arg;

	(void)purpose;
	fx->sock = s;
	return (CURL_SOCKOPT_OK);
}

static CURL *
easy_new(struct fix *fx, const char *path, int port)
{
	CURL *e;
	char url[128];

	snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", port, path);
	assert_non_null(e = curl_easy_init());
	curl_easy_setopt(e, CURLOPT_URL, url);
	curl_easy_setopt(e, CURLOPT_PRIVATE, fx);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_PROXY, "");
	/* Bodies are dropped (curl's default writes them to stdout). */
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, discard);
	curl_easy_setopt(e, CURLOPT_SOCKOPTFUNCTION, sockopt_cb);
	curl_easy_setopt(e, CURLOPT_SOCKOPTDATA, fx);
	return (e);
}

static void
start(struct fix *fx, const char *path, int port)
{
	CURL *e = easy_new(fx, path, port);

	assert_int_equal(curlev_add(fx->cv, e), 0);
}

/* Removes and frees its own handle, and may start the next transfer. */
static void
done_cb(void *arg, CURL *e, CURLcode cc)
{
	struct fix *fx = arg;
	long status = 0;

	if (!curlev_inside(fx->cv))
		fx->inside_at_done = 0;
	curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
	if (fx->ndone < MAXDONE) {
		fx->results[fx->ndone] = cc;
		fx->statuses[fx->ndone] = status;
	}
	fx->ndone++;
	curlev_remove(fx->cv, e);
	curl_easy_cleanup(e);
	if (fx->chain > 0) {
		fx->chain--;
		start(fx, "/ok", fx->port);
	}
	if (fx->ndone >= fx->want)
		event_base_loopexit(fx->base, NULL);
}

static void
after_cb(void *arg)
{
	struct fix *fx = arg;

	fx->nafter++;
	if (curlev_inside(fx->cv))
		fx->inside_at_after = 1;
}

static const struct curlev_cbs cbs = {
    .cc_done = done_cb,
    .cc_after = after_cb,
};

static int
setup(void **state)
{
	struct fix *fx;
	struct evhttp_bound_socket *bs;
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin);

	assert_non_null(fx = calloc(1, sizeof(*fx)));
	fx->inside_at_done = 1;
	fx->sock = CURL_SOCKET_BAD;
	assert_non_null(fx->base = event_base_new());
	assert_non_null(fx->http = evhttp_new(fx->base));
	evhttp_set_gencb(fx->http, server_cb, fx);
	assert_non_null(
	    bs = evhttp_bind_socket_with_handle(fx->http, "127.0.0.1", 0));
	assert_int_equal(getsockname(evhttp_bound_socket_get_fd(bs),
			     (struct sockaddr *)&sin, &len),
	    0);
	fx->port = ntohs(sin.sin_port);
	assert_non_null(fx->cv = curlev_new(fx->base, "test", &cbs, fx));
	*state = fx;
	return (0);
}

static int
teardown(void **state)
{
	struct fix *fx = *state;

	curlev_free(fx->cv);
	evhttp_free(fx->http);
	event_base_free(fx->base);
	free(fx);
	return (0);
}

/* Run the loop until the callbacks stop it, or 10 s. */
static void
run(struct fix *fx)
{
	struct timeval tv = {10, 0};

	event_base_loopexit(fx->base, &tv);
	event_base_dispatch(fx->base);
}

static void
test_done_removes_own_handle(void **state)
{
	struct fix *fx = *state;
	int i;

	fx->want = 3;
	for (i = 0; i < 3; i++)
		start(fx, "/ok", fx->port);
	run(fx);
	assert_int_equal(fx->ndone, 3);
	assert_int_equal(fx->hits, 3);
	for (i = 0; i < 3; i++) {
		assert_int_equal(fx->results[i], CURLE_OK);
		assert_int_equal(fx->statuses[i], 200);
	}
	assert_true(fx->inside_at_done);
	/* After every pass through curl, outside it. */
	assert_true(fx->nafter >= 1);
	assert_false(fx->inside_at_after);
	assert_false(curlev_inside(fx->cv));
}

static void
test_done_starts_next(void **state)
{
	struct fix *fx = *state;
	int i;

	fx->want = 4;
	fx->chain = 3;
	start(fx, "/ok", fx->port);
	run(fx);
	assert_int_equal(fx->ndone, 4);
	assert_int_equal(fx->hits, 4);
	for (i = 0; i < 4; i++)
		assert_int_equal(fx->statuses[i], 200);
}

static void
test_refused(void **state)
{
	struct fix *fx = *state;
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin);
	int s, port;

	/* A port that was just free: nothing listens there. */
	assert_true((s = socket(AF_INET, SOCK_STREAM, 0)) >= 0);
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(s, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(getsockname(s, (struct sockaddr *)&sin, &len), 0);
	port = ntohs(sin.sin_port);
	close(s);

	fx->want = 1;
	start(fx, "/ok", port);
	run(fx);
	assert_int_equal(fx->ndone, 1);
	assert_int_equal(fx->results[0], CURLE_COULDNT_CONNECT);
}

static void
stop_cb(evutil_socket_t fd, short kind, void *arg)
{
	(void)fd;
	(void)kind;
	event_base_loopexit(arg, NULL);
}

/* Counts the events added on the fd *arg points at. */
static int
count_fd(const struct event_base *base, const struct event *ev, void *arg)
{
	int *fdn = arg;

	(void)base;
	if (event_get_fd(ev) == fdn[0])
		fdn[1]++;
	return (0);
}

static void
test_remove_unfinished(void **state)
{
	struct fix *fx = *state;
	struct timeval tv = {0, 1000};
	CURL *e;
	int i, fdn[2];

	e = easy_new(fx, "/hang", fx->port);
	assert_int_equal(curlev_add(fx->cv, e), 0);
	/* Turn the loop until the request reached the server. */
	for (i = 0; i < 2000 && fx->hits == 0; i++) {
		event_base_once(
		    fx->base, -1, EV_TIMEOUT, stop_cb, fx->base, &tv);
		event_base_dispatch(fx->base);
	}
	assert_int_equal(fx->hits, 1);
	/* curl waits for the answer on its socket. */
	fdn[0] = (int)fx->sock;
	fdn[1] = 0;
	event_base_foreach_event(fx->base, count_fd, fdn);
	assert_int_equal(fdn[1], 1);
	curlev_remove(fx->cv, e);
	curl_easy_cleanup(e);
	/* The connection is closed and its event gone; no done. */
	fdn[1] = 0;
	event_base_foreach_event(fx->base, count_fd, fdn);
	assert_int_equal(fdn[1], 0);
	assert_int_equal(fx->ndone, 0);
}

static void
test_enter_leave(void **state)
{
	struct fix *fx = *state;

	assert_false(curlev_inside(fx->cv));
	curlev_enter(fx->cv);
	curlev_enter(fx->cv);
	assert_true(curlev_inside(fx->cv));
	curlev_leave(fx->cv);
	/* Only the outermost leave runs cc_after. */
	assert_int_equal(fx->nafter, 0);
	assert_true(curlev_inside(fx->cv));
	curlev_leave(fx->cv);
	assert_int_equal(fx->nafter, 1);
	assert_false(fx->inside_at_after);
	assert_false(curlev_inside(fx->cv));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(
		test_done_removes_own_handle, setup, teardown),
	    cmocka_unit_test_setup_teardown(
		test_done_starts_next, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_refused, setup, teardown),
	    cmocka_unit_test_setup_teardown(
		test_remove_unfinished, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_enter_leave, setup, teardown),
	};

	return (cmocka_run_group_tests(tests, NULL, NULL));
}
