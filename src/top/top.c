/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tollgate top: the live terminal view of a running tollgate, read from
 * its admin API once a second. The terminal is put in raw mode on the
 * alternate screen and given back as it was on every way out: q, SIGINT,
 * SIGTERM, SIGHUP, or an error; ^Z is ignored, since a stopped top would
 * leave the shell a terminal in raw mode. SIGWINCH redraws at the new
 * size. When
 * the admin API cannot be reached the screen says why and the next
 * refresh tries again.
 *
 *   tollgate top [-c FILE] [--admin URL] [--interval SECONDS]
 *
 * The address and token come from the configuration's admin: (as the
 * other commands find theirs), or --admin URL and TOLLGATE_ADMIN_TOKEN,
 * which wins over the configuration's token.
 *
 * Keys: up/down (or j, n / p) select a budget, s cycles the sort, /
 * filters by a tag value (or policy name), k kills the selected budget's
 * scope and l lifts a kill, each after a y/n question; e extends the
 * selected budget's cap after asking the amount, reason, who grants it
 * and an optional expiry, and a y/n question; q quits.
 */
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>

#include "tollgate/adminc.h"
#include "tollgate/top.h"
#include "tollgate/log.h"
#include "tollgate/util.h"

#include "top_int.h"

#define TOP_DEFAULT_CONFIG "/etc/tollgate/tollgate.yaml"
#define TOP_INPUT_MAX 128
/* A field of an extension: room for the API's longest reason and more. */
#define TOP_FIELD_MAX 1024

/* The fields e asks for, in order. */
enum top_xfield {
	TOP_XF_USD,
	TOP_XF_REASON,
	TOP_XF_BY,
	TOP_XF_EXPIRES,
	TOP_XF_MAX,
};

static const struct {
	const char *xf_label;
	const char *xf_key; /* in the request's body */
	int xf_required;
} top_xfields[TOP_XF_MAX] = {
    {"amount in USD to raise the cap by (e.g. 0.10)", "usd", 1},
    {"reason", "reason", 1},
    {"granted by", "by", 1},
    {"expires (empty: when the window ends; or 90s, 10m, 2h, 7d)", "expires",
	0},
};

static volatile sig_atomic_t top_signal; /* SIGINT, SIGTERM, SIGHUP */
static volatile sig_atomic_t top_winch;
static struct termios top_saved;
static int top_raw;

static void
top_sig_cb(int sig)
{
	if (sig == SIGWINCH)
		top_winch = 1;
	else
		top_signal = sig;
}

/* Give the terminal back as it was: main screen, cursor, cooked mode. */
static void
term_restore(void)
{
	static const char out[] = "\033[?25h\033[?1049l";

	if (!top_raw)
		return;
	top_raw = 0;
	(void)write(STDOUT_FILENO, out, sizeof(out) - 1);
	tcsetattr(STDIN_FILENO, TCSAFLUSH, &top_saved);
}

static int
term_raw(char **cause)
{
	struct termios t;

	if (tcgetattr(STDIN_FILENO, &top_saved) != 0) {
		xasprintf(cause, "the standard input is not a terminal: %s",
		    strerror(errno));
		return (-1);
	}
	t = top_saved;
	/* ISIG stays: ^C is a SIGINT, which restores the terminal. */
	t.c_lflag &= ~(tcflag_t)(ICANON | ECHO | IEXTEN);
	t.c_iflag &= ~(tcflag_t)(IXON | ICRNL);
	t.c_cc[VMIN] = 0;
	t.c_cc[VTIME] = 0;
	if (tcsetattr(STDIN_FILENO, TCSAFLUSH, &t) != 0) {
		xasprintf(
		    cause, "cannot set the terminal: %s", strerror(errno));
		return (-1);
	}
	top_raw = 1;
	fputs("\033[?1049h\033[?25l\033[2J", stdout);
	fflush(stdout);
	return (0);
}

static void
term_size(int *rows, int *cols)
{
	struct winsize ws;

	*rows = 24;
	*cols = 80;
	if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_row > 0 &&
	    ws.ws_col > 0) {
		*rows = ws.ws_row;
		*cols = ws.ws_col;
	}
}

static int64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return ((int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
}

static int64_t
mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ((int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
}

/* Everything the loop holds. */
struct top {
	struct adminc t_client;
	struct top_snap t_snap;
	struct top_hist *t_hist;
	size_t t_nhist;
	struct top_view t_view;
	size_t *t_order;
	char t_filter[TOP_INPUT_MAX];
	char t_input[TOP_INPUT_MAX];
	char t_prompt[1024];
	char t_message[512];
	char *t_selkey; /* the selected budget's key, kept across refreshes */
	char *t_pending; /* the kill body to post, or the kill id to lift */
	/* The extension being asked for: its budget as e found it. */
	char *t_xpolicy;
	char *t_xscope; /* the scope as the API gave it (JSON) */
	char *t_xscope_text;
	double t_xcap_nusd; /* the effective cap when e was pressed */
	int t_xendless; /* a total window: no end but a revocation */
	int t_xstep; /* the field being typed */
	char t_xf[TOP_XF_MAX][TOP_FIELD_MAX];
};

static struct top *sort_top; /* qsort has no argument */

static double
budget_pct(const struct top_budget *tb)
{
	if (tb->tb_cap_nusd <= 0)
		return (-1);
	return ((tb->tb_spent_nusd + tb->tb_reserved_nusd) / tb->tb_cap_nusd);
}

static int
order_cmp(const void *a, const void *b)
{
	const struct top_budget *x =
	    &sort_top->t_snap.ts_budgets[*(const size_t *)a];
	const struct top_budget *y =
	    &sort_top->t_snap.ts_budgets[*(const size_t *)b];
	double dx = 0, dy = 0;
	int c;

	switch (sort_top->t_view.tv_sort) {
	case TOP_SORT_BURN:
		dx = x->tb_burn_nusd_h;
		dy = y->tb_burn_nusd_h;
		break;
	case TOP_SORT_PCT:
		dx = budget_pct(x);
		dy = budget_pct(y);
		break;
	case TOP_SORT_SPENT:
		dx = x->tb_spent_nusd;
		dy = y->tb_spent_nusd;
		break;
	default:
		break;
	}
	/* Highest first; ties (and the name order) by policy, then scope. */
	if (dx != dy)
		return (dx > dy ? -1 : 1);
	if ((c = strcmp(x->tb_policy, y->tb_policy)) != 0)
		return (c);
	return (strcmp(x->tb_scope, y->tb_scope));
}

/* Does budget tb show under the filter (a substring of policy or scope)? */
static int
budget_shown(const struct top *t, const struct top_budget *tb)
{
	if (t->t_filter[0] == '\0')
		return (1);
	return (strstr(tb->tb_policy, t->t_filter) != NULL ||
	    strstr(tb->tb_scope, t->t_filter) != NULL);
}

/* The budgets shown, sorted; the selection follows its budget. */
static void
top_order(struct top *t)
{
	struct top_view *v = &t->t_view;
	size_t i, n = 0;

	free(t->t_order);
	t->t_order = xcalloc(t->t_snap.ts_nbudgets + 1, sizeof(size_t));
	for (i = 0; i < t->t_snap.ts_nbudgets; i++)
		if (budget_shown(t, &t->t_snap.ts_budgets[i]))
			t->t_order[n++] = i;
	sort_top = t;
	qsort(t->t_order, n, sizeof(size_t), order_cmp);
	v->tv_order = t->t_order;
	v->tv_norder = n;
	if (t->t_selkey != NULL)
		for (i = 0; i < n; i++)
			if (strcmp(t->t_snap.ts_budgets[t->t_order[i]].tb_key,
				t->t_selkey) == 0) {
				v->tv_sel = i;
				return;
			}
	if (v->tv_sel >= n)
		v->tv_sel = n > 0 ? n - 1 : 0;
}

static const struct top_budget *
selected(const struct top *t)
{
	if (!t->t_snap.ts_ok || t->t_view.tv_norder == 0)
		return (NULL);
	return (&t->t_snap.ts_budgets[t->t_order[t->t_view.tv_sel]]);
}

static void
remember_sel(struct top *t)
{
	const struct top_budget *tb = selected(t);

	free(t->t_selkey);
	t->t_selkey = tb != NULL ? xstrdup(tb->tb_key) : NULL;
}

static void
top_refresh(struct top *t)
{
	top_fetch(&t->t_client, &t->t_snap, now_ms());
	if (t->t_snap.ts_ok)
		top_burn(&t->t_snap, &t->t_hist, &t->t_nhist, now_ms());
	top_order(t);
	/* The selection follows its budget when the order changes. */
	if (t->t_snap.ts_ok)
		remember_sel(t);
}

/* The API's answer to an action, as the message line. */
static void
action_result(struct top *t, const char *what, int rc, long status,
    const char *body, const char *cause)
{
	const cJSON *e, *p;
	cJSON *doc;

	if (rc != 0) {
		snprintf(t->t_message, sizeof(t->t_message),
		    "%s failed: admin API unreachable: %s", what, cause);
		return;
	}
	if (status >= 200 && status < 300) {
		snprintf(t->t_message, sizeof(t->t_message), "%s: done", what);
		return;
	}
	doc = cJSON_Parse(body);
	e = cJSON_GetObjectItemCaseSensitive(doc, "error");
	/* A 400 names the field it refused: first, as the text may be cut. */
	p = cJSON_GetObjectItemCaseSensitive(doc, "parameter");
	snprintf(t->t_message, sizeof(t->t_message), "%s refused (%ld%s%s): %s",
	    what, status, cJSON_IsString(p) ? ", parameter " : "",
	    cJSON_IsString(p) ? p->valuestring : "",
	    cJSON_IsString(e) ? e->valuestring : "no reason");
	cJSON_Delete(doc);
}

static void
do_kill(struct top *t)
{
	char *body = NULL, *cause = NULL;
	long status;
	int rc;

	rc = adminc_request(&t->t_client, "POST", "/v1/kills", t->t_pending,
	    &body, &status, &cause);
	action_result(t, "kill", rc, status, body, cause);
	free(body);
	free(cause);
}

static void
do_lift(struct top *t)
{
	char *body = NULL, *cause = NULL, *path = NULL;
	long status;
	int rc;

	xasprintf(&path, "/v1/kills/%s", t->t_pending);
	rc = adminc_request(
	    &t->t_client, "DELETE", path, NULL, &body, &status, &cause);
	action_result(t, "lift", rc, status, body, cause);
	free(path);
	free(body);
	free(cause);
}

/* The extension posted after y: what the answer says was made. */
static void
do_extend(struct top *t)
{
	char *body = NULL, *cause = NULL, amount[32], ends[64];
	const cJSON *id, *nusd, *end, *rec;
	cJSON *doc;
	long status;
	int rc;

	rc = adminc_request(&t->t_client, "POST", "/v1/budgets/extend",
	    t->t_pending, &body, &status, &cause);
	if (rc != 0 || status < 200 || status >= 300) {
		action_result(t, "extend", rc, status, body, cause);
		goto out;
	}
	doc = cJSON_Parse(body);
	id = cJSON_GetObjectItemCaseSensitive(doc, "id");
	nusd = cJSON_GetObjectItemCaseSensitive(doc, "nusd");
	end = cJSON_GetObjectItemCaseSensitive(doc, "ends_at");
	rec = cJSON_GetObjectItemCaseSensitive(doc, "recorded");
	top_usd(cJSON_IsNumber(nusd) ? nusd->valuedouble : 0, amount,
	    sizeof(amount));
	if (cJSON_IsString(end))
		snprintf(ends, sizeof(ends), "ends %s", end->valuestring);
	else
		snprintf(ends, sizeof(ends), "until revoked");
	snprintf(t->t_message, sizeof(t->t_message),
	    "extend: done: %s raises %s by %s, %s%s",
	    cJSON_IsString(id) ? id->valuestring : "?", t->t_xpolicy, amount,
	    ends,
	    cJSON_IsFalse(rec) ? " (in force; the ledger has not recorded it "
				 "yet)"
			       : "");
	cJSON_Delete(doc);
out:
	free(body);
	free(cause);
}

static void
extend_clear(struct top *t)
{
	free(t->t_xpolicy);
	free(t->t_xscope);
	free(t->t_xscope_text);
	t->t_xpolicy = t->t_xscope = t->t_xscope_text = NULL;
	memset(t->t_xf, 0, sizeof(t->t_xf));
	t->t_xstep = 0;
}

/* The prompt of the field being typed. */
static void
extend_prompt(struct top *t)
{
	snprintf(t->t_prompt, sizeof(t->t_prompt), "%s",
	    top_xfields[t->t_xstep].xf_label);
	t->t_view.tv_input = t->t_xf[t->t_xstep];
}

/* Is s fit to be typed into a field: no control characters? */
static int
field_ok(const char *s)
{
	for (; *s != '\0'; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return (0);
	return (1);
}

/* 'e': start asking for an extension of the selected budget. */
static void
ask_extend(struct top *t)
{
	const struct top_budget *tb = selected(t);
	const char *user;

	if (tb == NULL) {
		snprintf(
		    t->t_message, sizeof(t->t_message), "no budget selected");
		return;
	}
	if (tb->tb_hard_cap_nusd < 0) {
		snprintf(t->t_message, sizeof(t->t_message),
		    "budget %s has no hard cap: nothing to extend",
		    tb->tb_policy);
		return;
	}
	extend_clear(t);
	t->t_xpolicy = xstrdup(tb->tb_policy);
	t->t_xscope = xstrdup(tb->tb_scope_json);
	t->t_xscope_text = xstrdup(tb->tb_scope);
	t->t_xcap_nusd = tb->tb_cap_nusd;
	t->t_xendless = tb->tb_reset[0] == '\0';
	/* Who grants it: the login name, which the user may change. */
	user = getenv("USER");
	if (user != NULL && field_ok(user) &&
	    strlen(user) < sizeof(t->t_xf[TOP_XF_BY]))
		snprintf(
		    t->t_xf[TOP_XF_BY], sizeof(t->t_xf[TOP_XF_BY]), "%s", user);
	snprintf(t->t_message, sizeof(t->t_message),
	    "extend %s (%s): Enter goes on, Esc cancels", t->t_xpolicy,
	    t->t_xscope_text);
	extend_prompt(t);
	t->t_view.tv_mode = TOP_MODE_EXTEND;
}

/* Enter on a field: the next one, or the question once all are typed. */
static void
extend_next(struct top *t)
{
	char cap[32];
	cJSON *doc, *scope;
	int i;

	if (top_xfields[t->t_xstep].xf_required &&
	    t->t_xf[t->t_xstep][0] == '\0') {
		snprintf(t->t_message, sizeof(t->t_message),
		    "%s: required (Esc cancels)",
		    top_xfields[t->t_xstep].xf_key);
		return;
	}
	if (++t->t_xstep < TOP_XF_MAX) {
		extend_prompt(t);
		return;
	}
	/* The scope goes back exactly as the API gave it. */
	if ((doc = cJSON_CreateObject()) == NULL ||
	    cJSON_AddStringToObject(doc, "policy", t->t_xpolicy) == NULL)
		fatalx("%s: cJSON", __func__);
	if ((scope = cJSON_Parse(t->t_xscope)) == NULL)
		scope = cJSON_CreateObject();
	if (scope == NULL || !cJSON_AddItemToObject(doc, "scope", scope))
		fatalx("%s: cJSON", __func__);
	for (i = 0; i < TOP_XF_MAX; i++)
		if ((top_xfields[i].xf_required || t->t_xf[i][0] != '\0') &&
		    cJSON_AddStringToObject(
			doc, top_xfields[i].xf_key, t->t_xf[i]) == NULL)
			fatalx("%s: cJSON", __func__);
	free(t->t_pending);
	if ((t->t_pending = cJSON_PrintUnformatted(doc)) == NULL)
		fatalx("%s: cJSON", __func__);
	cJSON_Delete(doc);
	top_usd(t->t_xcap_nusd, cap, sizeof(cap));
	/*
	 * The budget on the line above, the question on the last: a long
	 * scope cannot push the question off the screen. Fields longer than
	 * these are refused by the API anyway.
	 */
	snprintf(t->t_message, sizeof(t->t_message), "extend %s (%s)",
	    t->t_xpolicy, t->t_xscope_text);
	snprintf(t->t_prompt, sizeof(t->t_prompt),
	    "raise its cap of %s by $%.32s %s%.40s, granted by %.128s?", cap,
	    t->t_xf[TOP_XF_USD],
	    t->t_xf[TOP_XF_EXPIRES][0] != '\0'
		? "for "
		: (t->t_xendless ? "until revoked" : "until the window ends"),
	    t->t_xf[TOP_XF_EXPIRES], t->t_xf[TOP_XF_BY]);
	t->t_view.tv_mode = TOP_MODE_EXTEND_ASK;
}

/* One key while a field of the extension is typed. */
static void
extend_key(struct top *t, const char *buf, size_t n)
{
	char *f = t->t_xf[t->t_xstep];
	size_t len = strlen(f);
	char c = buf[0];

	if (c == '\r' || c == '\n')
		extend_next(t);
	else if (c == '\033' && n == 1) {
		extend_clear(t);
		t->t_view.tv_mode = TOP_MODE_NORMAL;
		t->t_view.tv_input = t->t_input;
		snprintf(
		    t->t_message, sizeof(t->t_message), "extend cancelled");
	} else if (c == 0x7f || c == '\b') {
		/* A whole UTF-8 character goes, not the last byte of one. */
		while (len > 0 && ((unsigned char)f[len - 1] & 0xc0) == 0x80)
			len--;
		if (len > 0)
			len--;
		f[len] = '\0';
	} else if ((unsigned char)c >= 0x20 && c != 0x7f && c != '\033' &&
	    len + n < TOP_FIELD_MAX) {
		memcpy(f + len, buf, n);
		f[len + n] = '\0';
	}
}

/* 'k': ask whether to kill the selected budget's scope. */
static void
ask_kill(struct top *t)
{
	const struct top_budget *tb = selected(t);
	cJSON *doc, *m;

	if (tb == NULL) {
		snprintf(
		    t->t_message, sizeof(t->t_message), "no budget selected");
		return;
	}
	if (tb->tb_match == NULL) {
		snprintf(t->t_message, sizeof(t->t_message),
		    "budget %s has no tag to match (it covers every call): "
		    "kill through the admin API",
		    tb->tb_policy);
		return;
	}
	if ((doc = cJSON_CreateObject()) == NULL ||
	    (m = cJSON_Parse(tb->tb_match)) == NULL ||
	    !cJSON_AddItemToObject(doc, "match", m) ||
	    cJSON_AddStringToObject(
		doc, "reason", "killed from tollgate top") == NULL)
		fatalx("%s: cJSON", __func__);
	free(t->t_pending);
	if ((t->t_pending = cJSON_PrintUnformatted(doc)) == NULL)
		fatalx("%s: cJSON", __func__);
	cJSON_Delete(doc);
	snprintf(t->t_prompt, sizeof(t->t_prompt),
	    "kill every call matching %s (budget %s)?", tb->tb_match,
	    tb->tb_policy);
	t->t_view.tv_mode = TOP_MODE_KILL;
}

/* 'l': ask whether to lift the selected budget's kill, or the newest. */
static void
ask_lift(struct top *t)
{
	const struct top_budget *tb = selected(t);
	const struct top_kill *k = NULL;
	size_t i;

	if (!t->t_snap.ts_ok || t->t_snap.ts_nkills == 0) {
		snprintf(t->t_message, sizeof(t->t_message), "no live kills");
		return;
	}
	for (i = 0;
	     tb != NULL && tb->tb_match != NULL && i < t->t_snap.ts_nkills; i++)
		if (t->t_snap.ts_kills[i].tk_match_json != NULL &&
		    strcmp(t->t_snap.ts_kills[i].tk_match_json, tb->tb_match) ==
			0)
			k = &t->t_snap.ts_kills[i];
	if (k == NULL)
		k = &t->t_snap.ts_kills[t->t_snap.ts_nkills - 1];
	free(t->t_pending);
	t->t_pending = xstrdup(k->tk_id);
	snprintf(t->t_prompt, sizeof(t->t_prompt), "lift kill %s (%s)?",
	    k->tk_id, k->tk_match);
	t->t_view.tv_mode = TOP_MODE_LIFT;
}

static void
move_sel(struct top *t, int d)
{
	struct top_view *v = &t->t_view;

	if (v->tv_norder == 0)
		return;
	if (d < 0 && v->tv_sel > 0)
		v->tv_sel--;
	else if (d > 0 && v->tv_sel + 1 < v->tv_norder)
		v->tv_sel++;
	remember_sel(t);
}

/*
 * One key (or an escape sequence, whole in buf) in the current mode.
 * Returns 1 when the screen must be read again (after an action), -1 to
 * quit, else 0.
 */
static int
top_key(struct top *t, const char *buf, size_t n)
{
	struct top_view *v = &t->t_view;
	size_t len;
	char c = buf[0];

	if (v->tv_mode == TOP_MODE_FILTER) {
		len = strlen(t->t_input);
		if (c == '\r' || c == '\n') {
			snprintf(
			    t->t_filter, sizeof(t->t_filter), "%s", t->t_input);
			v->tv_mode = TOP_MODE_NORMAL;
			v->tv_sel = 0;
			top_order(t);
			remember_sel(t);
		} else if (c == '\033' && n == 1)
			v->tv_mode = TOP_MODE_NORMAL;
		else if ((c == 0x7f || c == '\b') && len > 0)
			t->t_input[len - 1] = '\0';
		else if ((unsigned char)c >= 0x20 && c != 0x7f &&
		    len + n < sizeof(t->t_input) && c != '\033') {
			memcpy(t->t_input + len, buf, n);
			t->t_input[len + n] = '\0';
		}
		return (0);
	}
	if (v->tv_mode == TOP_MODE_EXTEND) {
		extend_key(t, buf, n);
		return (0);
	}
	if (v->tv_mode == TOP_MODE_EXTEND_ASK) {
		v->tv_mode = TOP_MODE_NORMAL;
		v->tv_input = t->t_input;
		if (c == 'y' || c == 'Y') {
			do_extend(t);
			extend_clear(t);
			return (1);
		}
		extend_clear(t);
		snprintf(
		    t->t_message, sizeof(t->t_message), "extend cancelled");
		return (0);
	}
	if (v->tv_mode == TOP_MODE_KILL || v->tv_mode == TOP_MODE_LIFT) {
		if (c == 'y' || c == 'Y') {
			if (v->tv_mode == TOP_MODE_KILL)
				do_kill(t);
			else
				do_lift(t);
			v->tv_mode = TOP_MODE_NORMAL;
			return (1);
		}
		snprintf(t->t_message, sizeof(t->t_message), "%s cancelled",
		    v->tv_mode == TOP_MODE_KILL ? "kill" : "lift");
		v->tv_mode = TOP_MODE_NORMAL;
		return (0);
	}
	if (n == 3 && buf[0] == '\033' && buf[1] == '[') {
		if (buf[2] == 'A')
			move_sel(t, -1);
		else if (buf[2] == 'B')
			move_sel(t, 1);
		return (0);
	}
	switch (c) {
	case 'q':
	case 'Q':
		return (-1);
	case 'j':
	case 'n':
		move_sel(t, 1);
		break;
	case 'p':
		move_sel(t, -1);
		break;
	case 's':
		v->tv_sort = (enum top_sort)((v->tv_sort + 1) % TOP_SORT_MAX);
		top_order(t);
		break;
	case '/':
		snprintf(t->t_input, sizeof(t->t_input), "%s", t->t_filter);
		v->tv_mode = TOP_MODE_FILTER;
		break;
	case 'k':
		ask_kill(t);
		break;
	case 'l':
		ask_lift(t);
		break;
	case 'e':
		ask_extend(t);
		break;
	default:
		break;
	}
	return (0);
}

/*
 * The keys of one read, one at a time: typed ahead or pasted keys come in
 * one read. An arrow is ESC [ and a letter; a UTF-8 character is whole.
 * Returns as top_key, 1 if any asked for a refresh.
 */
static int
top_keys(struct top *t, const char *kb, size_t n)
{
	size_t i, k;
	int r, any = 0;

	for (i = 0; i < n; i += k) {
		k = 1;
		if (kb[i] == '\033' && i + 2 < n && kb[i + 1] == '[')
			k = 3;
		else if (((unsigned char)kb[i] & 0xe0) == 0xc0)
			k = 2;
		else if (((unsigned char)kb[i] & 0xf0) == 0xe0)
			k = 3;
		else if (((unsigned char)kb[i] & 0xf8) == 0xf0)
			k = 4;
		if (k > n - i)
			k = n - i;
		if ((r = top_key(t, kb + i, k)) < 0)
			return (-1);
		any |= r;
	}
	return (any);
}

static void
top_usage(FILE *f)
{
	fprintf(f,
	    "usage: tollgate top [-c FILE] [--admin URL] [--interval SECONDS]\n"
	    "  the admin address and token from FILE's admin: (default %s),\n"
	    "  or --admin http://127.0.0.1:8788 and TOLLGATE_ADMIN_TOKEN\n",
	    TOP_DEFAULT_CONFIG);
}

/* The admin URL and token from the configuration at path. */
static int
top_args(struct adminc *tc, int argc, char **argv, int *interval_ms)
{
	static const struct option longopts[] = {
	    {"admin", required_argument, NULL, 'a'},
	    {"interval", required_argument, NULL, 'i'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	const char *config = NULL, *admin = NULL;
	char *end;
	double secs;
	int ch;

	optind = 1;
	while ((ch = getopt_long(argc, argv, "c:h", longopts, NULL)) != -1) {
		switch (ch) {
		case 'c':
			config = optarg;
			break;
		case 'a':
			admin = optarg;
			break;
		case 'i':
			secs = strtod(optarg, &end);
			if (end == optarg || *end != '\0' || secs < 0.2 ||
			    secs > 3600) {
				fprintf(stderr,
				    "--interval: expected seconds from 0.2 "
				    "to 3600, got '%s'\n",
				    optarg);
				return (2);
			}
			*interval_ms = (int)(secs * 1000);
			break;
		case 'h':
			top_usage(stdout);
			return (0);
		default:
			top_usage(stderr);
			return (2);
		}
	}
	if (optind < argc) {
		top_usage(stderr);
		return (2);
	}
	switch (adminc_setup(tc, admin, config, TOP_DEFAULT_CONFIG)) {
	case 0:
		return (-1);
	case 2:
		return (2);
	default:
		return (1);
	}
}

static void
top_free(struct top *t)
{
	top_snap_free(&t->t_snap);
	top_hist_free(t->t_hist, t->t_nhist);
	free(t->t_order);
	free(t->t_selkey);
	free(t->t_pending);
	extend_clear(t);
	adminc_free(&t->t_client);
}

/* tollgate top: the loop; returns the exit status. */
int
top_main(int argc, char **argv)
{
	struct top t;
	struct sigaction sa;
	struct pollfd pfd;
	int64_t next = 0, wait;
	char kb[16], *cause = NULL;
	ssize_t n;
	int interval_ms = 1000, rc, r, dirty = 1;

	memset(&t, 0, sizeof(t));
	if ((rc = top_args(&t.t_client, argc, argv, &interval_ms)) >= 0) {
		top_free(&t);
		return (rc);
	}
	if (!isatty(STDIN_FILENO) || !isatty(STDOUT_FILENO)) {
		fprintf(stderr,
		    "tollgate top: needs a terminal (stdin and "
		    "stdout); for scripts, use the admin API\n");
		top_free(&t);
		return (2);
	}
	curl_global_init(CURL_GLOBAL_DEFAULT);
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = top_sig_cb;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	sigaction(SIGWINCH, &sa, NULL);
	/* Stopped with ^Z, the shell would get a terminal still in raw mode. */
	signal(SIGTSTP, SIG_IGN);
	if (term_raw(&cause) != 0) {
		fprintf(stderr, "tollgate top: %s\n", cause);
		free(cause);
		top_free(&t);
		curl_global_cleanup();
		return (1);
	}
	t.t_view.tv_snap = &t.t_snap;
	t.t_view.tv_base = t.t_client.ac_base;
	t.t_view.tv_filter = t.t_filter;
	t.t_view.tv_input = t.t_input;
	t.t_view.tv_prompt = t.t_prompt;
	t.t_view.tv_message = t.t_message;
	term_size(&t.t_view.tv_rows, &t.t_view.tv_cols);
	rc = 0;
	while (!top_signal) {
		if (mono_ms() >= next) {
			top_refresh(&t);
			next = mono_ms() + interval_ms;
			dirty = 1;
		}
		if (top_winch) {
			top_winch = 0;
			term_size(&t.t_view.tv_rows, &t.t_view.tv_cols);
			fputs("\033[2J", stdout);
			dirty = 1;
		}
		if (dirty) {
			top_draw(&t.t_view);
			dirty = 0;
		}
		pfd.fd = STDIN_FILENO;
		pfd.events = POLLIN;
		wait = next - mono_ms();
		if (poll(&pfd, 1, wait > 0 ? (int)wait : 0) <= 0)
			continue;
		if ((n = read(STDIN_FILENO, kb, sizeof(kb) - 1)) <= 0) {
			if (n == 0)
				break; /* the terminal went away */
			continue;
		}
		kb[n] = '\0';
		if ((r = top_keys(&t, kb, (size_t)n)) < 0)
			break;
		if (r > 0)
			next = 0;
		dirty = 1;
	}
	term_restore();
	if (top_signal == SIGINT || top_signal == SIGTERM ||
	    top_signal == SIGHUP)
		rc = 128 + top_signal;
	top_free(&t);
	curl_global_cleanup();
	return (rc);
}
