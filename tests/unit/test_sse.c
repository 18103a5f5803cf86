/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The SSE framer: a table of raw streams and the events each must give
 * (name, data, raw length, oversized). Every stream is fed whole, split at
 * every byte offset, split at every pair of offsets (short streams), and
 * byte by byte; all must give exactly the expected events.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tollgate/sse.h"
#include "tollgate/util.h"

#define MAXEV 8

struct want_event {
	const char *name;
	const char *data;
	size_t rawlen;
	int oversized;
};

struct sse_case {
	const char *name;
	const char *input;
	size_t cap; /* 0: 1 MiB */
	size_t nev;
	struct want_event ev[MAXEV];
};

static const struct sse_case cases[] = {
    {"lf", "data: hello\n\n", 0, 1, {{"", "hello", 13, 0}}},
    {"crlf with event name", "event: ping\r\ndata: {}\r\n\r\n", 0, 1,
	{{"ping", "{}", 25, 0}}},
    {"cr only", "data: a\r\rdata: b\r\r", 0, 2,
	{{"", "a", 9, 0}, {"", "b", 9, 0}}},
    {"mixed line ends", "data: a\r\n\ndata: b\n\r\ndata: c\r\r\n", 0, 3,
	{{"", "a", 10, 0}, {"", "b", 10, 0}, {"", "c", 10, 0}}},
    {"crlf blank line owns its lf", "data: x\r\n\r\ndata: y\r\n\r\n", 0, 2,
	{{"", "x", 11, 0}, {"", "y", 11, 0}}},
    {"final cr dispatches at finish", "data: x\r\r", 0, 1, {{"", "x", 9, 0}}},
    {"comments and keepalives", ": keepalive\n\n: ping\ndata: x\n\n", 0, 1,
	{{"", "x", 29, 0}}},
    {"data without a space", "data:nospace\n\n", 0, 1,
	{{"", "nospace", 14, 0}}},
    {"only one space is stripped", "data:  two\n\n", 0, 1,
	{{"", " two", 12, 0}}},
    {"multi-line data", "data: a\ndata: b\ndata:\n\n", 0, 1,
	{{"", "a\nb\n", 23, 0}}},
    {"anthropic trailing spaces",
	"event: message_stop   \ndata: {\"type\":\"message_stop\"}     \n\n", 0,
	1, {{"message_stop", "{\"type\":\"message_stop\"}     ", 59, 0}}},
    {"empty data", "data:\n\n", 0, 1, {{"", "", 7, 0}}},
    {"bare data field", "data\n\n", 0, 1, {{"", "", 6, 0}}},
    {"event without data is dropped", "event: foo\n\ndata: x\n\n", 0, 1,
	{{"", "x", 21, 0}}},
    {"last event name wins", "event: a\nevent: b\ndata: x\n\n", 0, 1,
	{{"b", "x", 27, 0}}},
    {"id and retry ignored", "id: 5\nretry: 100\ndata: x\n\n", 0, 1,
	{{"", "x", 26, 0}}},
    {"unknown and long field names", "dataextra: z\nd: q\ndata: x\n\n", 0, 1,
	{{"", "x", 27, 0}}},
    {"whitespace line is not blank", "data: x\n \n\n", 0, 1,
	{{"", "x", 11, 0}}},
    {"colon in value", "data: a:b\n\n", 0, 1, {{"", "a:b", 11, 0}}},
    {"unterminated event discarded", "data: x\n\ndata: y\n", 0, 1,
	{{"", "x", 9, 0}}},
    {"utf-8 multibyte", "data: h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80\n\n",
	0, 1, {{"", "h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80", 23, 0}}},
    {"leading bom",
	"\xef\xbb\xbf"
	"data: x\n\n",
	0, 1, {{"", "x", 12, 0}}},
    {"oversized event skipped", "data: 0123456789\n\ndata: ok\n\n", 8, 2,
	{{"", "", 18, 1}, {"", "ok", 10, 0}}},
    {"oversized across data lines", "data: 01234\ndata: 5678\n\ndata: k\n\n", 8,
	2, {{"", "", 24, 1}, {"", "k", 9, 0}}},
    {"exactly the cap", "data: 01234567\n\n", 8, 1, {{"", "01234567", 16, 0}}},
    {"gemini crlf chunks", "data: {\"a\":1}\r\n\r\ndata: {\"a\":2}\r\n\r\n", 0,
	2, {{"", "{\"a\":1}", 17, 0}, {"", "{\"a\":2}", 17, 0}}},
    {"openai done", "data: {\"x\":1}\n\ndata: [DONE]\n\n", 0, 2,
	{{"", "{\"x\":1}", 15, 0}, {"", "[DONE]", 14, 0}}},
    {"blank lines between events", "\n\n\r\ndata: x\n\n\n", 0, 1,
	{{"", "x", 13, 0}}},
};

struct got {
	size_t n;
	char *name[MAXEV + 1];
	char *data[MAXEV + 1];
	size_t datalen[MAXEV + 1];
	size_t rawlen[MAXEV + 1];
	int oversized[MAXEV + 1];
};

static void
got_cb(void *arg, const struct sse_event *ev)
{
	struct got *g = arg;

	if (g->n > MAXEV)
		fail_msg("too many events");
	g->name[g->n] = xstrndup(ev->ev_name, ev->ev_namelen);
	g->data[g->n] = xmalloc(ev->ev_datalen + 1);
	memcpy(g->data[g->n], ev->ev_data, ev->ev_datalen);
	g->data[g->n][ev->ev_datalen] = '\0';
	g->datalen[g->n] = ev->ev_datalen;
	g->rawlen[g->n] = ev->ev_rawlen;
	g->oversized[g->n] = ev->ev_oversized;
	g->n++;
}

static void
got_check(const struct sse_case *c, struct got *g, const char *how)
{
	size_t i;

	if (g->n != c->nev)
		fail_msg("%s (%s): %zu events, want %zu", c->name, how, g->n,
		    c->nev);
	for (i = 0; i < g->n; i++) {
		if (strcmp(g->name[i], c->ev[i].name) != 0 ||
		    g->datalen[i] != strlen(c->ev[i].data) ||
		    memcmp(g->data[i], c->ev[i].data, g->datalen[i]) != 0 ||
		    g->rawlen[i] != c->ev[i].rawlen ||
		    g->oversized[i] != c->ev[i].oversized)
			fail_msg("%s (%s): event %zu is [%s] [%s] raw %zu "
				 "over %d; want [%s] [%s] raw %zu over %d",
			    c->name, how, i, g->name[i], g->data[i],
			    g->rawlen[i], g->oversized[i], c->ev[i].name,
			    c->ev[i].data, c->ev[i].rawlen, c->ev[i].oversized);
	}
	for (i = 0; i < g->n; i++) {
		free(g->name[i]);
		free(g->data[i]);
	}
	g->n = 0;
}

/* Feed input in the pieces that end at cuts[0..ncuts). */
static void
run(const struct sse_case *c, const size_t *cuts, size_t ncuts, const char *how)
{
	struct got g = {0};
	struct sse *s;
	size_t len = strlen(c->input), at = 0, i;

	s = sse_new(c->cap ? c->cap : 1024 * 1024, got_cb, &g);
	for (i = 0; i < ncuts; i++) {
		sse_feed(s, c->input + at, cuts[i] - at);
		at = cuts[i];
	}
	sse_feed(s, c->input + at, len - at);
	sse_finish(s);
	sse_free(s);
	got_check(c, &g, how);
}

static void
test_sse_table(void **state)
{
	const struct sse_case *c;
	size_t i, j, k, len, cuts[2], *all;
	char how[64];

	(void)state;
	for (i = 0; i < nitems(cases); i++) {
		c = &cases[i];
		len = strlen(c->input);
		run(c, NULL, 0, "whole");
		for (j = 0; j <= len; j++) {
			cuts[0] = j;
			snprintf(how, sizeof(how), "split at %zu", j);
			run(c, cuts, 1, how);
		}
		for (j = 1; j < len; j++) {
			for (k = j; k < len; k++) {
				cuts[0] = j;
				cuts[1] = k;
				snprintf(
				    how, sizeof(how), "split at %zu,%zu", j, k);
				run(c, cuts, 2, how);
			}
		}
		all = xcalloc(len + 1, sizeof(*all));
		for (j = 0; j < len; j++)
			all[j] = j;
		run(c, all, len, "byte by byte");
		free(all);
	}
}

/* Nothing after finish; feeding nothing and finishing twice are fine. */
static void
test_sse_empty(void **state)
{
	struct got g = {0};
	struct sse *s;

	(void)state;
	s = sse_new(16, got_cb, &g);
	sse_feed(s, "", 0);
	sse_finish(s);
	sse_finish(s);
	sse_free(s);
	sse_free(NULL);
	assert_int_equal(g.n, 0);
}

/* A data buffer cap of 0 makes any non-empty data oversized. */
static void
test_sse_zero_cap(void **state)
{
	static const struct sse_case c = {"zero cap", "data: x\n\ndata:\n\n", 0,
	    2, {{"", "", 9, 1}, {"", "", 7, 0}}};
	struct got g = {0};
	struct sse *s;

	(void)state;
	s = sse_new(0, got_cb, &g);
	sse_feed(s, c.input, strlen(c.input));
	sse_finish(s);
	sse_free(s);
	got_check(&c, &g, "whole");
}

/*
 * A long stream of small events fed in tiny pieces takes linear time; a
 * quadratic framer would take minutes here.
 */
static void
test_sse_linear(void **state)
{
	static const char ev[] = "data: {\"choices\":[{\"delta\":"
				 "{\"content\":\"hello\"}}]}\n\n";
	struct got g = {0};
	struct sse *s;
	char *big;
	size_t n = 200000, len = n * (sizeof(ev) - 1), i, count = 0;

	(void)state;
	big = xmalloc(len);
	for (i = 0; i < n; i++)
		memcpy(big + i * (sizeof(ev) - 1), ev, sizeof(ev) - 1);
	s = sse_new(1024, got_cb, &g);
	for (i = 0; i < len; i += 7) {
		sse_feed(s, big + i, len - i < 7 ? len - i : 7);
		count += g.n;
		while (g.n > 0) {
			g.n--;
			free(g.name[g.n]);
			free(g.data[g.n]);
		}
	}
	sse_finish(s);
	sse_free(s);
	free(big);
	assert_int_equal(count, n);
}

/* One event much larger than the cap, fed in pieces, stays bounded. */
static void
test_sse_huge_event(void **state)
{
	struct got g = {0};
	struct sse *s;
	char chunk[4096];
	size_t i;

	(void)state;
	memset(chunk, 'x', sizeof(chunk));
	s = sse_new(64 * 1024, got_cb, &g);
	sse_feed(s, "data: ", 6);
	for (i = 0; i < 1024; i++) /* 4 MiB */
		sse_feed(s, chunk, sizeof(chunk));
	sse_feed(s, "\n\ndata: after\n\n", 15);
	sse_finish(s);
	sse_free(s);
	assert_int_equal(g.n, 2);
	assert_int_equal(g.oversized[0], 1);
	assert_int_equal(g.datalen[0], 0);
	assert_int_equal(g.rawlen[0], 6 + 4096 * 1024 + 2);
	assert_string_equal(g.data[1], "after");
	for (i = 0; i < g.n; i++) {
		free(g.name[i]);
		free(g.data[i]);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_sse_table),
	    cmocka_unit_test(test_sse_empty),
	    cmocka_unit_test(test_sse_zero_cap),
	    cmocka_unit_test(test_sse_linear),
	    cmocka_unit_test(test_sse_huge_event),
	};

	return (cmocka_run_group_tests(tests, NULL, NULL));
}
