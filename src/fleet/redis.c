/* SPDX-License-Identifier: Apache-2.0 */
/*
 * One connection to the fleet's Redis (struct rconn): hiredis's
 * asynchronous context on the event loop, with what hiredis 0.14 leaves
 * to its user. It never blocks the loop: the connect and every command
 * are bounded by timers of this file (connect_timeout, command_timeout);
 * a connection that misses one is dropped, every command waiting on it
 * is answered as failed, and it is tried again after a backoff that
 * doubles from RCONN_BACKOFF_MIN_MS to RCONN_BACKOFF_MAX_MS with jitter.
 * On each connect it authenticates, selects the database and loads the
 * scripts before it says it is up, so commands are only accepted on a
 * connection that is ready; while it is down they fail at once, and the
 * caller acts on that (docs/fleet.md, Redis down). Commands are
 * pipelined: hiredis writes each as it is issued and replies come in
 * order. Scripts run by EVALSHA; a NOSCRIPT answer (Redis restarted or
 * flushed its script cache) sends the script itself once.
 *
 * A connection made for SUBSCRIBE carries only that (Redis allows
 * nothing else on it); its messages go to the subscriber's callback.
 * Loop thread only.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <event2/event.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "tollgate/config.h"
#include "tollgate/log.h"
#include "tollgate/util.h"

#include "fleet_int.h"

#define RCONN_BACKOFF_MIN_MS 100
#define RCONN_BACKOFF_MAX_MS 5000
#define RCONN_TICK_MS 50 /* how often deadlines are looked at */
#define RCONN_LOG_EVERY_MS 60000 /* a connection that stays down */

/* One command sent and not yet answered, in the order sent. */
struct rcmd {
	struct rconn *rc_conn;
	struct rcmd *rc_next;
	rconn_cb rc_cb;
	void *rc_arg;
	long long rc_deadline_us;
	long long rc_sent_us;
	int rc_script; /* -1, or the script an EVALSHA ran */
	int rc_retried; /* NOSCRIPT answered once already */
	int rc_internal; /* AUTH, SELECT, SCRIPT LOAD of the handshake */
	int rc_argc;
	char **rc_argv; /* kept for a NOSCRIPT resend */
	const char **rc_cargv; /* the same, as hiredis takes them */
	size_t *rc_lens;
};

struct rconn {
	struct event_base *r_base;
	const struct fleet_conf *r_conf;
	char r_name[32];
	redisAsyncContext *r_ac;
	int r_state; /* RCONN_DOWN, RCONN_CONNECTING, RCONN_READY */
	int r_handshake; /* replies still due before READY */
	int r_closing; /* rconn_free: no reconnect */
	struct rcmd *r_head, *r_tail;
	struct event *r_tick; /* deadlines */
	struct event *r_retry; /* reconnect after backoff */
	struct event *r_drop; /* drop the context outside hiredis */
	long long r_connect_deadline_us;
	int64_t r_backoff_ms;
	char r_sha[RCONN_SCRIPTS_MAX][41];
	void (*r_state_cb)(int, void *);
	void *r_state_arg;
	/* SUBSCRIBE connections */
	char *r_channel;
	void (*r_msg_cb)(const char *, size_t, void *);
	void *r_msg_arg;
	char r_err[128]; /* why it last went down, for logs */
	long long r_logged_us; /* the last "failed" line */
	struct rconn_stats r_stats;
};

static void rconn_connect(struct rconn *);
static void rconn_fail(struct rconn *, const char *);

/* The reply's error text, or NULL when it is not an error. */
static const char *
reply_error(const redisReply *r)
{
	if (r == NULL)
		return ("no reply");
	if (r->type == REDIS_REPLY_ERROR)
		return (r->str != NULL ? r->str : "error");
	return (NULL);
}

static void
rcmd_free(struct rcmd *c)
{
	int i;

	if (c->rc_argv != NULL) {
		/* The handshake's AUTH carries the password: wiped. */
		for (i = 0; i < c->rc_argc; i++)
			if (c->rc_internal)
				freezero(c->rc_argv[i], c->rc_lens[i] + 1);
			else
				free(c->rc_argv[i]);
		free(c->rc_argv);
		free(c->rc_cargv);
		free(c->rc_lens);
	}
	free(c);
}

/* Take c off the pending list (it is answered, in order, so near the head). */
static void
rcmd_unlink(struct rconn *r, struct rcmd *c)
{
	struct rcmd **pp, *prev = NULL;

	for (pp = &r->r_head; *pp != NULL; pp = &(*pp)->rc_next) {
		if (*pp == c) {
			*pp = c->rc_next;
			if (r->r_tail == c)
				r->r_tail = prev;
			return;
		}
		prev = *pp;
	}
}

/* Drop the context on the next loop turn, outside any hiredis callback. */
static void
rconn_schedule_drop(struct rconn *r, const char *why)
{
	if (why != NULL && r->r_err[0] == '\0')
		snprintf(r->r_err, sizeof(r->r_err), "%s", why);
	event_active(r->r_drop, 0, 0);
}

static int rconn_send(struct rconn *, struct rcmd *);

/* hiredis answered c (reply NULL: the connection went away first). */
static void
rcmd_reply_cb(redisAsyncContext *ac, void *reply, void *priv)
{
	struct rcmd *c = priv;
	struct rconn *r = c->rc_conn;
	const redisReply *rep = reply;
	const char *err;

	(void)ac;
	rcmd_unlink(r, c);
	err = reply_error(rep);
	if (rep != NULL) {
		r->r_stats.rs_replies++;
		r->r_stats.rs_last_rtt_us = monotime_us() - c->rc_sent_us;
	}
	if (rep != NULL && err != NULL && c->rc_script >= 0 && !c->rc_retried &&
	    strncmp(err, "NOSCRIPT", 8) == 0 && r->r_state == RCONN_READY) {
		/* The script cache was emptied: send the script itself. */
		c->rc_retried = 1;
		free(c->rc_argv[0]);
		c->rc_argv[0] = xstrdup("EVAL");
		c->rc_lens[0] = 4;
		free(c->rc_argv[1]);
		c->rc_argv[1] = xstrdup(fleet_script_text(c->rc_script));
		c->rc_lens[1] = strlen(c->rc_argv[1]);
		c->rc_cargv[0] = c->rc_argv[0];
		c->rc_cargv[1] = c->rc_argv[1];
		r->r_stats.rs_noscript++;
		if (rconn_send(r, c) == 0)
			return;
		err = "the connection is down";
		rep = NULL;
	}
	if (rep == NULL || err != NULL)
		r->r_stats.rs_errors++;
	if (c->rc_cb != NULL)
		c->rc_cb(rep,
		    rep == NULL ? (r->r_err[0] != '\0' ? r->r_err : "no reply")
				: err,
		    c->rc_arg);
	rcmd_free(c);
}

/* Hand c to hiredis and put it on the pending list. */
static int
rconn_send(struct rconn *r, struct rcmd *c)
{
	if (r->r_ac == NULL)
		return (-1);
	c->rc_sent_us = monotime_us();
	c->rc_deadline_us =
	    c->rc_sent_us + r->r_conf->fc_command_timeout_ms * 1000;
	if (redisAsyncCommandArgv(r->r_ac, rcmd_reply_cb, c, c->rc_argc,
		c->rc_cargv, c->rc_lens) != REDIS_OK)
		return (-1);
	c->rc_next = NULL;
	if (r->r_tail != NULL)
		r->r_tail->rc_next = c;
	else
		r->r_head = c;
	r->r_tail = c;
	r->r_stats.rs_commands++;
	return (0);
}

static struct rcmd *
rcmd_new(struct rconn *r, rconn_cb cb, void *arg, int argc, const char **argv,
    const size_t *lens)
{
	struct rcmd *c;
	int i;

	c = xcalloc(1, sizeof(*c));
	c->rc_conn = r;
	c->rc_cb = cb;
	c->rc_arg = arg;
	c->rc_script = -1;
	c->rc_argc = argc;
	c->rc_argv = xreallocarray(NULL, (size_t)argc, sizeof(char *));
	c->rc_cargv = xreallocarray(NULL, (size_t)argc, sizeof(char *));
	c->rc_lens = xreallocarray(NULL, (size_t)argc, sizeof(size_t));
	for (i = 0; i < argc; i++) {
		c->rc_lens[i] = lens != NULL ? lens[i] : strlen(argv[i]);
		c->rc_argv[i] = xmalloc(c->rc_lens[i] + 1);
		memcpy(c->rc_argv[i], argv[i], c->rc_lens[i]);
		c->rc_argv[i][c->rc_lens[i]] = '\0';
		c->rc_cargv[i] = c->rc_argv[i];
	}
	return (c);
}

/* The handshake is over: the connection takes commands. */
static void
rconn_ready(struct rconn *r)
{
	r->r_state = RCONN_READY;
	r->r_backoff_ms = 0;
	r->r_err[0] = '\0';
	r->r_stats.rs_connects++;
	log_info(
	    "fleet: %s connection to %s ready", r->r_name, r->r_conf->fc_url);
	if (r->r_state_cb != NULL)
		r->r_state_cb(1, r->r_state_arg);
}

/* One reply of the handshake (AUTH, SELECT, SCRIPT LOAD, SUBSCRIBE). */
static void
handshake_cb(const redisReply *rep, const char *err, void *arg)
{
	struct rconn *r = arg;

	if (r->r_state != RCONN_CONNECTING)
		return;
	if (err != NULL) {
		/* Never the password: Redis's own message names no secret. */
		char why[128];

		snprintf(why, sizeof(why), "handshake refused: %.100s", err);
		rconn_fail(r, why);
		return;
	}
	if (rep->type == REDIS_REPLY_STRING && rep->len == 40) {
		/* A SCRIPT LOAD: which one is in the order sent. */
		int i;

		for (i = 0; i < RCONN_SCRIPTS_MAX; i++) {
			if (r->r_sha[i][0] == '\0') {
				memcpy(r->r_sha[i], rep->str, 40);
				r->r_sha[i][40] = '\0';
				break;
			}
		}
	}
	if (--r->r_handshake == 0)
		rconn_ready(r);
}

/* A message on a subscribed connection (or its SUBSCRIBE answer). */
static void
sub_cb(redisAsyncContext *ac, void *reply, void *priv)
{
	struct rconn *r = priv;
	const redisReply *rep = reply;

	(void)ac;
	if (rep == NULL || rep->type != REDIS_REPLY_ARRAY || rep->elements < 3)
		return;
	if (rep->element[0]->type == REDIS_REPLY_STRING &&
	    strcmp(rep->element[0]->str, "subscribe") == 0) {
		if (r->r_state == RCONN_CONNECTING && --r->r_handshake == 0)
			rconn_ready(r);
		return;
	}
	if (rep->element[0]->type == REDIS_REPLY_STRING &&
	    strcmp(rep->element[0]->str, "message") == 0 &&
	    rep->element[2]->type == REDIS_REPLY_STRING &&
	    r->r_state == RCONN_READY && r->r_msg_cb != NULL) {
		r->r_stats.rs_messages++;
		r->r_msg_cb(
		    rep->element[2]->str, rep->element[2]->len, r->r_msg_arg);
	}
}

static void
connect_cb(const redisAsyncContext *ac, int status)
{
	struct rconn *r = ac->data;
	const char *argv[4];
	struct rcmd *c;
	char db[16];
	int i;

	if (r == NULL || r->r_ac != ac)
		return;
	if (status != REDIS_OK) {
		/* hiredis frees the context after this callback. */
		r->r_ac = NULL;
		rconn_fail(
		    r, ac->errstr[0] != '\0' ? ac->errstr : "connect failed");
		return;
	}
	r->r_handshake = 0;
	memset(r->r_sha, 0, sizeof(r->r_sha));
	if (r->r_conf->fc_password != NULL) {
		argv[0] = "AUTH";
		argv[1] = r->r_conf->fc_password;
		c = rcmd_new(r, handshake_cb, r, 2, argv, NULL);
		c->rc_internal = 1;
		r->r_handshake++;
		if (rconn_send(r, c) == -1) {
			rcmd_free(c);
			rconn_fail(r, "cannot send AUTH");
			return;
		}
	}
	if (r->r_channel != NULL) {
		/* SUBSCRIBE answers through sub_cb, every message after. */
		r->r_handshake++;
		if (redisAsyncCommand(r->r_ac, sub_cb, r, "SUBSCRIBE %s",
			r->r_channel) != REDIS_OK)
			rconn_fail(r, "cannot send SUBSCRIBE");
		return;
	}
	if (r->r_conf->fc_db != 0) {
		snprintf(db, sizeof(db), "%d", r->r_conf->fc_db);
		argv[0] = "SELECT";
		argv[1] = db;
		c = rcmd_new(r, handshake_cb, r, 2, argv, NULL);
		c->rc_internal = 1;
		r->r_handshake++;
		if (rconn_send(r, c) == -1) {
			rcmd_free(c);
			rconn_fail(r, "cannot send SELECT");
			return;
		}
	}
	for (i = 0; i < RCONN_SCRIPTS_MAX && fleet_script_text(i) != NULL;
	     i++) {
		argv[0] = "SCRIPT";
		argv[1] = "LOAD";
		argv[2] = fleet_script_text(i);
		c = rcmd_new(r, handshake_cb, r, 3, argv, NULL);
		c->rc_internal = 1;
		r->r_handshake++;
		if (rconn_send(r, c) == -1) {
			rcmd_free(c);
			rconn_fail(r, "cannot send SCRIPT LOAD");
			return;
		}
	}
	if (r->r_handshake == 0)
		rconn_ready(r);
}

static void
disconnect_cb(const redisAsyncContext *ac, int status)
{
	struct rconn *r = ac->data;

	(void)status;
	if (r == NULL || r->r_ac != ac)
		return;
	/* hiredis frees the context after this callback. */
	r->r_ac = NULL;
	rconn_fail(r, ac->errstr[0] != '\0' ? ac->errstr : "disconnected");
}

/*
 * The connection is lost (or never made): say so once, answer what waits
 * as failed, and try again after the backoff. The context, if any, is
 * dropped on the next loop turn.
 */
static void
rconn_fail(struct rconn *r, const char *why)
{
	struct timeval tv;
	int64_t ms;
	uint32_t rnd;
	int was = r->r_state;

	if (r->r_err[0] == '\0')
		snprintf(r->r_err, sizeof(r->r_err), "%s", why);
	r->r_state = RCONN_DOWN;
	if (r->r_ac != NULL)
		rconn_schedule_drop(r, why);
	if (was == RCONN_READY) {
		log_warnx("fleet: %s connection to %s lost: %s", r->r_name,
		    r->r_conf->fc_url, r->r_err);
		r->r_stats.rs_downs++;
		if (r->r_state_cb != NULL)
			r->r_state_cb(0, r->r_state_arg);
	} else if (r->r_backoff_ms == 0 ||
	    monotime_us() - r->r_logged_us > RCONN_LOG_EVERY_MS * 1000) {
		/* The first failure, then one line a minute while down. */
		r->r_logged_us = monotime_us();
		log_warnx("fleet: %s connection to %s failed: %s; retrying",
		    r->r_name, r->r_conf->fc_url, r->r_err);
	}
	if (r->r_closing || event_pending(r->r_retry, EV_TIMEOUT, NULL))
		return;
	r->r_backoff_ms =
	    r->r_backoff_ms == 0 ? RCONN_BACKOFF_MIN_MS : r->r_backoff_ms * 2;
	if (r->r_backoff_ms > RCONN_BACKOFF_MAX_MS)
		r->r_backoff_ms = RCONN_BACKOFF_MAX_MS;
	if (getrandom(&rnd, sizeof(rnd), GRND_NONBLOCK) != sizeof(rnd))
		rnd = (uint32_t)monotime_us();
	ms = r->r_backoff_ms / 2 + (int64_t)(rnd % (r->r_backoff_ms / 2 + 1));
	tv.tv_sec = ms / 1000;
	tv.tv_usec = (ms % 1000) * 1000;
	event_add(r->r_retry, &tv);
}

/* Free the context now: hiredis answers what it still holds with NULL. */
static void
drop_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct rconn *r = arg;
	redisAsyncContext *ac = r->r_ac;

	(void)fd;
	(void)ev;
	if (ac == NULL)
		return;
	r->r_ac = NULL;
	ac->data = NULL; /* its callbacks no longer reach r */
	redisAsyncFree(ac);
	/* Anything hiredis did not hold (never the case) is answered too. */
	while (r->r_head != NULL) {
		struct rcmd *c = r->r_head;

		r->r_head = c->rc_next;
		if (c->rc_cb != NULL)
			c->rc_cb(NULL, r->r_err, c->rc_arg);
		rcmd_free(c);
	}
	r->r_tail = NULL;
}

static void
retry_cb(evutil_socket_t fd, short ev, void *arg)
{
	(void)fd;
	(void)ev;
	rconn_connect(arg);
}

/* Deadlines: the connect's and the oldest command's. */
static void
tick_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct rconn *r = arg;
	long long now = monotime_us();
	char why[96];

	(void)fd;
	(void)ev;
	if (r->r_state == RCONN_CONNECTING && now > r->r_connect_deadline_us) {
		snprintf(why, sizeof(why), "no answer within %lld ms",
		    (long long)r->r_conf->fc_connect_timeout_ms);
		r->r_stats.rs_timeouts++;
		rconn_fail(r, why);
		return;
	}
	if (r->r_head != NULL && now > r->r_head->rc_deadline_us &&
	    r->r_ac != NULL) {
		snprintf(why, sizeof(why),
		    "a command had no answer within %lld ms",
		    (long long)r->r_conf->fc_command_timeout_ms);
		r->r_stats.rs_timeouts++;
		rconn_fail(r, why);
	}
}

static void
rconn_connect(struct rconn *r)
{
	const struct fleet_conf *fc = r->r_conf;
	redisAsyncContext *ac;

	if (r->r_closing || r->r_ac != NULL)
		return;
	r->r_err[0] = '\0';
	if (fc->fc_path != NULL)
		ac = redisAsyncConnectUnix(fc->fc_path);
	else
		ac = redisAsyncConnect(fc->fc_host, fc->fc_port);
	if (ac == NULL) {
		rconn_fail(r, "out of memory");
		return;
	}
	if (ac->err != 0) {
		char why[128];

		snprintf(why, sizeof(why), "%s", ac->errstr);
		redisAsyncFree(ac);
		rconn_fail(r, why);
		return;
	}
	ac->data = r;
	r->r_ac = ac;
	r->r_state = RCONN_CONNECTING;
	r->r_connect_deadline_us =
	    monotime_us() + fc->fc_connect_timeout_ms * 1000;
	redisLibeventAttach(ac, r->r_base);
	redisAsyncSetConnectCallback(ac, connect_cb);
	redisAsyncSetDisconnectCallback(ac, disconnect_cb);
}

/*
 * A connection to the Redis fc names, made at once and remade whenever it
 * is lost; state_cb(1) when it is ready, state_cb(0) when a ready one is
 * lost. name is for log lines. With channel, the connection only
 * subscribes to it and hands each message to msg_cb.
 */
struct rconn *
rconn_new(struct event_base *base, const struct fleet_conf *fc,
    const char *name, const char *channel,
    void (*msg_cb)(const char *, size_t, void *), void (*state_cb)(int, void *),
    void *arg)
{
	struct rconn *r;
	struct timeval tick = {0, RCONN_TICK_MS * 1000};

	r = xcalloc(1, sizeof(*r));
	r->r_base = base;
	r->r_conf = fc;
	snprintf(r->r_name, sizeof(r->r_name), "%s", name);
	r->r_state_cb = state_cb;
	r->r_state_arg = arg;
	r->r_msg_cb = msg_cb;
	r->r_msg_arg = arg;
	if (channel != NULL)
		r->r_channel = xstrdup(channel);
	r->r_tick = event_new(base, -1, EV_PERSIST, tick_cb, r);
	r->r_retry = event_new(base, -1, 0, retry_cb, r);
	r->r_drop = event_new(base, -1, 0, drop_cb, r);
	event_add(r->r_tick, &tick);
	rconn_connect(r);
	return (r);
}

/* Is the connection ready for commands? */
int
rconn_ready_p(const struct rconn *r)
{
	return (r != NULL && r->r_state == RCONN_READY);
}

/* Are commands sent on r still waiting for their answers? */
int
rconn_pending(const struct rconn *r)
{
	return (r != NULL && r->r_head != NULL);
}

/* Why the connection last went down; "" when it has not. */
const char *
rconn_error(const struct rconn *r)
{
	return (r->r_err);
}

/* The connection's counters. */
const struct rconn_stats *
rconn_stats(const struct rconn *r)
{
	return (&r->r_stats);
}

/*
 * Send one command (argv with lens; lens NULL: C strings). cb gets the
 * reply, or NULL and why, exactly once, never before this returns.
 * Returns -1 without calling cb when the connection is not ready.
 */
int
rconn_command(struct rconn *r, rconn_cb cb, void *arg, int argc,
    const char **argv, const size_t *lens)
{
	struct rcmd *c;

	if (!rconn_ready_p(r) || r->r_channel != NULL)
		return (-1);
	c = rcmd_new(r, cb, arg, argc, argv, lens);
	if (rconn_send(r, c) == -1) {
		rcmd_free(c);
		return (-1);
	}
	return (0);
}

/*
 * Run script (an index into fleet_script_text's table) with nkeys keys
 * followed by its arguments: EVALSHA, and on NOSCRIPT the script itself.
 * As rconn_command otherwise.
 */
int
rconn_eval(struct rconn *r, int script, rconn_cb cb, void *arg, int nkeys,
    int argc, const char **argv, const size_t *lens)
{
	const char **av;
	size_t *al;
	char nk[16];
	struct rcmd *c;
	int i, rv = -1;

	if (!rconn_ready_p(r) || r->r_channel != NULL || script < 0 ||
	    script >= RCONN_SCRIPTS_MAX || r->r_sha[script][0] == '\0')
		return (-1);
	snprintf(nk, sizeof(nk), "%d", nkeys);
	av = xreallocarray(NULL, (size_t)argc + 3, sizeof(*av));
	al = xreallocarray(NULL, (size_t)argc + 3, sizeof(*al));
	av[0] = "EVALSHA";
	al[0] = 7;
	av[1] = r->r_sha[script];
	al[1] = 40;
	av[2] = nk;
	al[2] = strlen(nk);
	for (i = 0; i < argc; i++) {
		av[i + 3] = argv[i];
		al[i + 3] = lens != NULL ? lens[i] : strlen(argv[i]);
	}
	c = rcmd_new(r, cb, arg, argc + 3, av, al);
	c->rc_script = script;
	if (rconn_send(r, c) == 0)
		rv = 0;
	else
		rcmd_free(c);
	free(av);
	free(al);
	return (rv);
}

/*
 * Close the connection for good. Commands still waiting are answered as
 * failed before this returns.
 */
void
rconn_free(struct rconn *r)
{
	if (r == NULL)
		return;
	r->r_closing = 1;
	if (r->r_ac != NULL) {
		snprintf(r->r_err, sizeof(r->r_err), "%s", "shutting down");
		drop_cb(-1, 0, r);
	}
	event_free(r->r_tick);
	event_free(r->r_retry);
	event_free(r->r_drop);
	free(r->r_channel);
	free(r);
}
