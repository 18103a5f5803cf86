/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tollgate top's screen: one frame written whole with plain ANSI escapes
 * (cursor home, each line cleared to its end, the rest of the screen
 * cleared), every line cut to the terminal's width. Text from the admin
 * API (tag values come from clients) is shown with control bytes and
 * escape sequences replaced, so nothing it holds can move the cursor or
 * change the terminal.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tollgate/buf.h"
#include "tollgate/util.h"

#include "top_int.h"

#define FRAME_MAX (4 * 1024 * 1024)

static const char *const sort_names[TOP_SORT_MAX] = {
    "burn",
    "% of cap",
    "spent",
    "name",
};

/* The name of a sort order, for the header. */
const char *
top_sort_name(enum top_sort s)
{
	return ((unsigned)s < TOP_SORT_MAX ? sort_names[s] : "?");
}

/*
 * Nano-dollars as dollars: exact to the nano-dollar, with two to nine
 * decimals (trailing zeros dropped), as the dashboard writes them.
 */
void
top_usd(double nusd, char *buf, size_t len)
{
	long long n = (long long)(nusd < 0 ? -nusd + 0.5 : nusd + 0.5);
	char frac[16];
	int i;

	snprintf(frac, sizeof(frac), "%09lld", n % 1000000000LL);
	for (i = 8; i >= 2 && frac[i] == '0'; i--)
		frac[i] = '\0';
	snprintf(buf, len, "%s$%lld.%s", nusd < 0 ? "-" : "", n / 1000000000LL,
	    frac);
}

/*
 * One line into the frame: the text of fmt, made safe and cut to cols
 * columns (a UTF-8 continuation byte takes none), then cleared to the end.
 */
static void line(struct buf *f, int cols, int inverse, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void
line(struct buf *f, int cols, int inverse, const char *fmt, ...)
{
	char text[1024];
	unsigned char c;
	va_list ap;
	int w = 0;
	size_t i;

	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	if (inverse)
		buf_add(f, "\033[7m", 4);
	for (i = 0; text[i] != '\0'; i++) {
		c = (unsigned char)text[i];
		if ((c & 0xc0) != 0x80 && w++ >= cols)
			break;
		/*
		 * C1 controls (U+0080 to U+009F, 0xc2 0x80-0x9f in UTF-8) are
		 * obeyed as escapes by some terminals, like C0 and DEL.
		 */
		if (c == 0xc2 && (unsigned char)text[i + 1] >= 0x80 &&
		    (unsigned char)text[i + 1] <= 0x9f) {
			buf_add(f, "?", 1);
			i++;
			continue;
		}
		if (c < 0x20 || c == 0x7f)
			c = '?';
		buf_add(f, &c, 1);
	}
	/* Pad an inverse line to the width, so the bar spans the screen. */
	for (; inverse && w < cols; w++)
		buf_add(f, " ", 1);
	if (inverse)
		buf_add(f, "\033[0m", 4);
	buf_add(f, "\033[K\r\n", 5);
}

/* "12.5%", or "-" without a cap. */
static void
pct_text(const struct top_budget *tb, char *buf, size_t len)
{
	if (tb->tb_cap_nusd <= 0)
		snprintf(buf, len, "-");
	else
		snprintf(buf, len, "%.1f%%",
		    100.0 * (tb->tb_spent_nusd + tb->tb_reserved_nusd) /
			tb->tb_cap_nusd);
}

/* "2026-11-29 00:00Z" of an RFC 3339 time, or "-". */
static void
reset_text(const char *t, char *buf, size_t len)
{
	if (t == NULL || strlen(t) < 16)
		snprintf(buf, len, "-");
	else
		snprintf(buf, len, "%.10s %.5sZ", t, t + 11);
}

/*
 * The end of the text being typed that fits in room columns: the start
 * gives way ("<" says so), so what is typed last stays in sight.
 */
static const char *
input_tail(const char *s, int room, int *cut)
{
	int chars = 0;
	const char *p;

	for (p = s; *p != '\0'; p++)
		if (((unsigned char)*p & 0xc0) != 0x80)
			chars++;
	*cut = 0;
	if (room < 1)
		room = 1;
	for (; chars > room; chars--) {
		*cut = 1;
		s++;
		while (((unsigned char)*s & 0xc0) == 0x80)
			s++;
	}
	return (s);
}

/* Draw the whole screen of view v on stdout. */
void
top_draw(struct top_view *v)
{
	const struct top_snap *s = v->tv_snap;
	const struct top_budget *tb;
	char spent[32], cap[32], burn[32], pct[16], reset[32], today[32];
	char ext[32];
	char now[16];
	struct buf f;
	int rows, used, list, scope_w, i, cut;
	size_t nexts;
	const char *tail;
	size_t k;
	time_t t = time(NULL);
	struct tm tm;

	buf_init(&f, FRAME_MAX, 64 * 1024, 0);
	buf_add(&f, "\033[H", 3);
	gmtime_r(&t, &tm);
	strftime(now, sizeof(now), "%H:%M:%SZ", &tm);
	rows = v->tv_rows > 4 ? v->tv_rows : 4;
	line(&f, v->tv_cols, 1, "tollgate top  %s  %s  sort: %s  filter: %s",
	    v->tv_base, now, top_sort_name(v->tv_sort),
	    v->tv_filter[0] != '\0' ? v->tv_filter : "-");
	used = 1;
	if (!s->ts_ok) {
		line(&f, v->tv_cols, 0, "%s", s->ts_error);
		line(&f, v->tv_cols, 0, "retrying every second; q quits");
		used += 2;
	} else {
		top_usd(s->ts_today_nusd, today, sizeof(today));
		line(&f, v->tv_cols, 0,
		    "spend today %s   in flight %ld%s   refusals/s %.2f%s   "
		    "kills %zu",
		    today, s->ts_inflight, s->ts_inflight_more ? "+" : "",
		    (double)s->ts_refused_60s / 60.0,
		    s->ts_refused_more ? "+" : "", s->ts_nkills);
		line(&f, v->tv_cols, 0, "%s", "");
		/*
		 * Extensions take a quarter of the screen at most (up to 1024
		 * may be live), the last line saying how many are not shown.
		 */
		nexts = s->ts_nexts;
		if (nexts > (size_t)(rows / 4))
			nexts = rows / 4 > 1 ? (size_t)(rows / 4) : 1;
		/*
		 * Budgets get what the kills, the extensions and the two
		 * bottom lines leave.
		 */
		list = rows - 3 - 2 - 1 -
		    (s->ts_nkills > 0 ? 2 + (int)s->ts_nkills : 0) -
		    (s->ts_nexts > 0 ? 2 + (int)nexts : 0);
		if (list < 3)
			list = 3;
		scope_w = v->tv_cols - 16 - 9 - 12 - 12 - 10 - 7 - 12 - 17 - 8;
		if (scope_w < 12)
			scope_w = 12;
		line(&f, v->tv_cols, 0,
		    "  %-16.16s %-*.*s %-8s %11s %11s %9s %6s %11s %s",
		    "POLICY", scope_w, scope_w, "SCOPE", "STATE", "SPENT",
		    "CAP", "EXTENDED", "%CAP", "BURN/H", "RESET");
		used += 3;
		if (v->tv_sel < v->tv_top)
			v->tv_top = v->tv_sel;
		if (v->tv_sel >= v->tv_top + (size_t)list)
			v->tv_top = v->tv_sel - (size_t)list + 1;
		for (i = 0, k = v->tv_top; i < list && k < v->tv_norder;
		     i++, k++) {
			tb = &s->ts_budgets[v->tv_order[k]];
			top_usd(tb->tb_spent_nusd, spent, sizeof(spent));
			if (tb->tb_cap_nusd < 0)
				snprintf(cap, sizeof(cap), "none");
			else
				top_usd(tb->tb_cap_nusd, cap, sizeof(cap));
			/* The cap shown is the effective one; this is its raise. */
			ext[0] = '\0';
			if (tb->tb_ext_nusd > 0) {
				ext[0] = '+';
				top_usd(
				    tb->tb_ext_nusd, ext + 1, sizeof(ext) - 1);
			}
			top_usd(tb->tb_burn_nusd_h, burn, sizeof(burn));
			pct_text(tb, pct, sizeof(pct));
			reset_text(tb->tb_reset, reset, sizeof(reset));
			line(&f, v->tv_cols, k == v->tv_sel,
			    "%s %-16.16s %-*.*s %-8.8s %11s %11s %9s %6s %11s "
			    "%s",
			    k == v->tv_sel ? ">" : " ", tb->tb_policy, scope_w,
			    scope_w, tb->tb_scope, tb->tb_state, spent, cap,
			    ext, pct, burn, reset);
			used++;
		}
		if (v->tv_norder == 0) {
			line(&f, v->tv_cols, 0, "  %s",
			    s->ts_nbudgets == 0
				? "no budgets"
				: "no budget matches the filter");
			used++;
		}
		if (s->ts_nkills > 0) {
			line(&f, v->tv_cols, 0, "%s", "");
			line(&f, v->tv_cols, 0, "KILLS");
			used += 2;
			for (k = 0; k < s->ts_nkills && used < rows - 2; k++) {
				line(&f, v->tv_cols, 0,
				    "  %s  %s  until %s  %s",
				    s->ts_kills[k].tk_id,
				    s->ts_kills[k].tk_match,
				    s->ts_kills[k].tk_expires,
				    s->ts_kills[k].tk_reason);
				used++;
			}
		}
		if (s->ts_nexts > 0 && used < rows - 3) {
			line(&f, v->tv_cols, 0, "%s", "");
			line(&f, v->tv_cols, 0, "EXTENSIONS");
			used += 2;
			for (k = 0; k < s->ts_nexts && used < rows - 2; k++) {
				if (nexts < s->ts_nexts && k + 1 == nexts) {
					line(&f, v->tv_cols, 0,
					    "  ... and %zu more (the dashboard "
					    "lists them all)",
					    s->ts_nexts - k);
					used++;
					break;
				}
				top_usd(
				    s->ts_exts[k].tx_nusd, ext, sizeof(ext));
				reset_text(s->ts_exts[k].tx_ends, reset,
				    sizeof(reset));
				line(&f, v->tv_cols, 0,
				    "  %s  +%s  %s %s  by %s  until %s  %s",
				    s->ts_exts[k].tx_id, ext,
				    s->ts_exts[k].tx_policy,
				    s->ts_exts[k].tx_scope, s->ts_exts[k].tx_by,
				    s->ts_exts[k].tx_ends[0] != '\0'
					? reset
					: "revoked",
				    s->ts_exts[k].tx_reason);
				used++;
			}
		}
	}
	/* Blank lines down to the two bottom ones. */
	buf_add(&f, "\033[J", 3);
	buf_addf(&f, "\033[%d;1H", rows - 1);
	if (v->tv_message != NULL && v->tv_message[0] != '\0')
		line(&f, v->tv_cols, 0, "%s", v->tv_message);
	else
		line(&f, v->tv_cols, 0, "%s", "");
	switch (v->tv_mode) {
	case TOP_MODE_FILTER:
		buf_addf(&f, "\033[%d;1H", rows);
		line(&f, v->tv_cols, 0,
		    "filter (Enter applies, Esc cancels): %s", v->tv_input);
		break;
	case TOP_MODE_EXTEND:
		buf_addf(&f, "\033[%d;1H", rows);
		/* The label, ": ", "<", the text and the "_" of the cursor. */
		tail = input_tail(v->tv_input,
		    v->tv_cols - (int)strlen(v->tv_prompt) - 4, &cut);
		line(&f, v->tv_cols, 1, "%s: %s%s_", v->tv_prompt,
		    cut ? "<" : "", tail);
		break;
	case TOP_MODE_KILL:
	case TOP_MODE_LIFT:
	case TOP_MODE_EXTEND_ASK:
		buf_addf(&f, "\033[%d;1H", rows);
		line(&f, v->tv_cols, 1, "%s [y/N]", v->tv_prompt);
		break;
	default:
		buf_addf(&f, "\033[%d;1H", rows);
		line(&f, v->tv_cols, 0,
		    "up/down j/p select  s sort  / filter  k kill  l lift  "
		    "e extend  q quit");
		break;
	}
	/* The last line's "\r\n" would scroll the screen: leave it out. */
	fwrite(buf_ptr(&f), 1, buf_len(&f) - 2, stdout);
	fflush(stdout);
	buf_free(&f);
}
