/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The reservation journal, driven for real on the fixture of ledgertest.h:
 * its records read back field by field, a torn or corrupt tail, what a
 * start-up makes of the segments a run left (replay), a kill -9 copied
 * from the disk as it was, rotation and a segment deleted under the
 * ledger, the probe of a client's request id, the syncer under
 * durability: power, and a journal that cannot be written. The ledger's
 * sources are compiled in with TG_UNITTEST, as in test_ledger.c.
 */
#define TG_UNITTEST 1

#include <sys/eventfd.h>
#include <sys/stat.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>
#include <sqlite3.h>

#include "tollgate/ledger.h"
#include "tollgate/log.h"
#include "tollgate/util.h"

#include "../../src/ledger/store.c"
#include "../../src/ledger/schema.c"
#include "../../src/ledger/ledger.c"
#include "../../src/ledger/writer.c"
#include "../../src/ledger/checkpoint.c"
#include "../../src/ledger/rebuild.c"
#include "../../src/ledger/inflight.c"
#include "../../src/ledger/journal.c"
#include "../../src/ledger/replay.c"
#include "../../src/ledger/syncer.c"
#include "../../src/ledger/turn.c"
#include "../../src/ledger/unwritten.c"

#include "ledgertest.h"

struct answer {
	int fired;
	enum ledger_result result;
	uint64_t syncs; /* ls_journal_syncs when the answer came */
};

static int answers_fired;

static void
answer_cb(void *arg, enum ledger_result r)
{
	struct answer *a = arg;
	struct ledger_stats st;

	ledger_stats(&st);
	a->fired++;
	a->result = r;
	a->syncs = st.ls_journal_syncs;
	answers_fired++;
}

static int
setup(void **state)
{
	(void)state;
	answers_fired = 0;
	return (ledgertest_setup("/tmp/tg-journal-XXXXXX"));
}

/* Reserve id (flags as ledger_reserve's) and run the loop to its answer. */
static enum ledger_result
reserve(const char *id, int flags)
{
	struct ledger_row r = mkrow_at(id, T0);
	struct answer a = {0};

	assert_non_null(ledger_reserve(&r, flags, answer_cb, &a));
	run_until(&a.fired, 1);
	return (a.result);
}

/* Settle id: ok, at cost. */
static void
settle(const char *id, int64_t cost)
{
	struct ledger_row s = mkrow_at(id, T0);

	set_ok(&s);
	s.lr_cost_nusd = cost;
	ledger_settle(&s);
}

/* The records read back, deep copies. */
#define SEEN_MAX 4096

static struct {
	enum journal_rec t;
	struct ledger_item *it; /* the row, in it->li_row */
} seen[SEEN_MAX];
static size_t nseen;

static void
seen_clear(void)
{
	while (nseen > 0)
		free(seen[--nseen].it);
}

static void
seen_cb(enum journal_rec t, const struct ledger_row *row, void *arg)
{
	(void)arg;
	assert_true(nseen < SEEN_MAX);
	seen[nseen].t = t;
	seen[nseen].it = ledger_item_new(LEDGER_OP_RESERVE, row);
	assert_non_null(seen[nseen].it);
	nseen++;
}

/* Read segment seg of the ledger at path into seen[]; whole bytes read. */
static int64_t
read_seg(const char *path, uint64_t seg, size_t *torn)
{
	char *name = journal_name(path, seg), *cause = NULL;
	int64_t got;

	seen_clear();
	got = journal_read(name, seen_cb, NULL, torn, &cause);
	if (got == -1)
		fail_msg("journal_read: %s", cause);
	free(name);
	return (got);
}

/* How many records of type t for id are in seen[]. */
static int
seen_count(enum journal_rec t, const char *id)
{
	size_t i;
	int n = 0;

	for (i = 0; i < nseen; i++)
		if (seen[i].t == t && strcmp(seen[i].it->li_row.lr_id, id) == 0)
			n++;
	return (n);
}

/* The number of journal segments beside the ledger at path. */
static size_t
nsegments(const char *path)
{
	uint64_t *segs;
	size_t n;
	char *cause = NULL;

	if (journal_segments(path, &segs, &n, &cause) != 0)
		fail_msg("journal_segments: %s", cause);
	free(segs);
	return (n);
}

/* The open segment's number. */
static uint64_t
cur_seg(void)
{
	struct ledger_stats st;

	ledger_stats(&st);
	return (st.ls_journal_segment);
}

/* Run the loop until the ledger at fx.path has n segments; 10 s. */
static void
wait_segments(size_t n)
{
	long long deadline = monotime_us() + 10000000LL;

	while (nsegments(fx.path) != n) {
		if (monotime_us() > deadline)
			fail_msg(
			    "%zu segments, not %zu", nsegments(fx.path), n);
		event_base_loop(fx.base, EVLOOP_NONBLOCK);
		usleep(1000);
	}
}

/* Write a segment seg of the ledger at path holding the bytes of b. */
static void
write_seg(const char *path, uint64_t seg, struct buf *b)
{
	struct ledger_journal j;
	char *cause = NULL;

	journal_init(&j, path);
	if (journal_start(&j, seg, &cause) != 0)
		fail_msg("journal_start: %s", cause);
	assert_int_equal(journal_write_bytes(&j, buf_ptr(b), buf_len(b)), 0);
	journal_free(&j);
}

static void
copy_file(const char *from, const char *to)
{
	char data[65536];
	ssize_t n;
	int in, out;

	assert_true((in = open(from, O_RDONLY)) != -1);
	assert_true((out = open(to, O_WRONLY | O_CREAT | O_TRUNC, 0600)) != -1);
	while ((n = read(in, data, sizeof(data))) > 0)
		assert_int_equal(write(out, data, (size_t)n), n);
	assert_int_equal(n, 0);
	close(in);
	close(out);
}

/*
 * Copy every file of the ledger at fx.path (database, -wal, -shm,
 * journal segments) as it is on disk into dir, as a kill -9 leaves
 * them: nothing is closed or flushed first.
 */
static void
copy_ledger_files(const char *dir)
{
	char from[512], to[512];
	struct dirent *de;
	DIR *d;

	assert_int_equal(mkdir(dir, 0700), 0);
	assert_non_null(d = opendir(fx.dir));
	while ((de = readdir(d)) != NULL) {
		if (strncmp(de->d_name, "ledger.db", 9) != 0)
			continue;
		snprintf(from, sizeof(from), "%s/%s", fx.dir, de->d_name);
		snprintf(to, sizeof(to), "%s/%s", dir, de->d_name);
		copy_file(from, to);
	}
	closedir(d);
}

/* Every field of two rows equal, strings NULL where they are NULL. */
static void
assert_row_equal(const struct ledger_row *a, const struct ledger_row *b)
{
	struct ledger_row x = *a, y = *b;
	const char **fa[LEDGER_ROW_FIELDS_MAX], **fb[LEDGER_ROW_FIELDS_MAX];
	size_t i, n;

	n = ledger_row_fields(&x, fa);
	assert_int_equal(ledger_row_fields(&y, fb), n);
	for (i = 0; i < n; i++) {
		if (*fa[i] == NULL || *fb[i] == NULL) {
			if (*fa[i] != *fb[i])
				fail_msg("string field %zu: %s vs %s", i,
				    *fa[i] != NULL ? *fa[i] : "NULL",
				    *fb[i] != NULL ? *fb[i] : "NULL");
			continue;
		}
		assert_string_equal(*fa[i], *fb[i]);
	}
	assert_int_equal(a->lr_started_ms, b->lr_started_ms);
	assert_int_equal(a->lr_finished_ms, b->lr_finished_ms);
	assert_int_equal(a->lr_stream, b->lr_stream);
	assert_int_equal(a->lr_status, b->lr_status);
	assert_int_equal(a->lr_http_status, b->lr_http_status);
	assert_int_equal(a->lr_input_tokens, b->lr_input_tokens);
	assert_int_equal(a->lr_output_tokens, b->lr_output_tokens);
	assert_int_equal(a->lr_cached_input_tokens, b->lr_cached_input_tokens);
	assert_int_equal(a->lr_cache_write_tokens, b->lr_cache_write_tokens);
	assert_int_equal(a->lr_reasoning_tokens, b->lr_reasoning_tokens);
	assert_int_equal(a->lr_usage_source, b->lr_usage_source);
	assert_int_equal(a->lr_cost_nusd, b->lr_cost_nusd);
	assert_int_equal(a->lr_reserved_nusd, b->lr_reserved_nusd);
	assert_int_equal(a->lr_latency_ms, b->lr_latency_ms);
	assert_int_equal(a->lr_ttfb_ms, b->lr_ttfb_ms);
	assert_int_equal(a->lr_saved_nusd, b->lr_saved_nusd);
	assert_int_equal(a->lr_attempts, b->lr_attempts);
	assert_int_equal(a->lr_cache_hit, b->lr_cache_hit);
}

/* A row with every string set and every number distinct. */
static struct ledger_row
full_row(void)
{
	struct ledger_row r = mkrow_at("full-1", T0);

	r.lr_endpoint = "messages";
	r.lr_upstream = "anthropic-eu";
	r.lr_provider = "anthropic";
	r.lr_tags[TAG_INTENT] = "summarise";
	r.lr_tags[TAG_TENANT] = "acme";
	r.lr_tags[TAG_AGENT_CLASS] = "ticket-agent";
	r.lr_tags[TAG_ENVIRONMENT] = "prod";
	r.lr_key_fingerprint = "0123456789abcdef";
	r.lr_stream = 1;
	r.lr_status = CALL_KILLED;
	r.lr_finished_ms = T0 + 1;
	r.lr_http_status = 529;
	r.lr_input_tokens = 2;
	r.lr_output_tokens = 3;
	r.lr_cached_input_tokens = 4;
	r.lr_cache_write_tokens = 5;
	r.lr_reasoning_tokens = 6;
	r.lr_usage_source = USAGE_ESTIMATED;
	r.lr_cost_nusd = INT64_MAX - 7;
	r.lr_reserved_nusd = 8000000000LL;
	r.lr_price_version = "2026-11-01+fallback:claude";
	r.lr_served_model = "claude-sonnet-4-20250514";
	r.lr_refusal_reason = "kill:k1 \xc3\xa9";
	r.lr_latency_ms = 9;
	r.lr_ttfb_ms = -1;
	r.lr_routed_from = "claude-opus-4-5";
	r.lr_routed_rule = "cheaper-steps";
	r.lr_saved_nusd = -10; /* routed to a dearer model: the sign survives */
	r.lr_attempts = 3;
	r.lr_attempt_log = "[{\"upstream\":\"a\",\"status\":503}]";
	r.lr_cache_hit = 1;
	return (r);
}

/*
 * A segment as an older tollgate wrote it: version ver's magic, and a
 * record of row without the numbers and strings that version lacks.
 */
static void
write_old_seg(const char *path, uint64_t seg, int ver, enum journal_rec t,
    const struct ledger_row *row)
{
	struct ledger_row copy = *row;
	const char **f[LEDGER_ROW_FIELDS_MAX];
	int64_t v[ROW_INTS];
	char rec[4096], *p = rec + JOURNAL_HEAD, *name;
	size_t i, n, len;
	FILE *fp;

	n = ledger_row_fields(&copy, f) -
	    journal_versions[ver - 1].jv_fields_less;
	*p++ = (char)t;
	row_ints(row, v);
	for (i = 0; i < ROW_INTS - journal_versions[ver - 1].jv_ints_less;
	     i++, p += 8)
		put64(p, v[i]);
	for (i = 0; i < n; i++) {
		len = *f[i] != NULL ? strlen(*f[i]) : 0;
		put32(p, *f[i] != NULL ? (uint32_t)len : UINT32_MAX);
		memcpy(p + 4, *f[i] != NULL ? *f[i] : "", len);
		p += 4 + len;
	}
	put32(rec, (uint32_t)(p - rec - JOURNAL_HEAD));
	put32(rec + 4,
	    (uint32_t)crc32_z(0, (const unsigned char *)rec + JOURNAL_HEAD,
		(size_t)(p - rec - JOURNAL_HEAD)));
	name = journal_name(path, seg);
	assert_non_null(fp = fopen(name, "w"));
	assert_int_equal(
	    fwrite(ver == 1 ? JOURNAL_MAGIC_V1 : JOURNAL_MAGIC_V2, 1, 8, fp),
	    8);
	assert_int_equal(
	    fwrite(rec, 1, (size_t)(p - rec), fp), (size_t)(p - rec));
	assert_int_equal(fclose(fp), 0);
	free(name);
}

/*
 * A segment written before the routing columns still reads: every field
 * it has comes back, the routing ones unset; it is one of ours.
 */
static void
test_record_v1(void **state)
{
	struct ledger_row full = full_row(), want;
	char *name;
	size_t torn;

	(void)state;
	write_old_seg(fx.path, 1, 1, JOURNAL_SETTLE, &full);
	assert_true(read_seg(fx.path, 1, &torn) > 8);
	assert_int_equal(torn, 0);
	assert_int_equal(nseen, 1);
	assert_int_equal(seen[0].t, JOURNAL_SETTLE);
	want = full;
	want.lr_routed_from = NULL;
	want.lr_routed_rule = NULL;
	want.lr_saved_nusd = 0;
	want.lr_attempts = 1; /* not refused: it was sent once */
	want.lr_attempt_log = NULL;
	want.lr_cache_hit = 0;
	assert_row_equal(&seen[0].it->li_row, &want);
	name = journal_name(fx.path, 1);
	assert_true(journal_is_ours(name));
	free(name);
	seen_clear();
}

/*
 * A segment written before attempts and cache_hit still reads: the
 * routing fields come back, a refused row made no attempt, others one.
 */
static void
test_record_v2(void **state)
{
	struct ledger_row full = full_row(), refused = full_row(), want;
	char *name;
	size_t torn;

	(void)state;
	refused.lr_id = "refused-2";
	refused.lr_status = CALL_REFUSED;
	refused.lr_http_status = 429;
	write_old_seg(fx.path, 1, 2, JOURNAL_SETTLE, &full);
	write_old_seg(fx.path, 2, 2, JOURNAL_SETTLE, &refused);
	assert_true(read_seg(fx.path, 1, &torn) > 8);
	assert_int_equal(torn, 0);
	assert_int_equal(nseen, 1);
	want = full;
	want.lr_attempts = 1;
	want.lr_attempt_log = NULL;
	want.lr_cache_hit = 0;
	assert_row_equal(&seen[0].it->li_row, &want);
	assert_true(read_seg(fx.path, 2, &torn) > 8);
	assert_int_equal(torn, 0);
	assert_int_equal(nseen, 1);
	want = refused;
	want.lr_attempts = 0;
	want.lr_attempt_log = NULL;
	want.lr_cache_hit = 0;
	assert_row_equal(&seen[0].it->li_row, &want);
	name = journal_name(fx.path, 2);
	assert_true(journal_is_ours(name));
	free(name);
	seen_clear();
}

/* Every field of every record type comes back as it was appended. */
static void
test_record_roundtrip(void **state)
{
	struct ledger_row full = full_row(), bare, w, want;
	struct buf b;
	size_t torn;
	int i;

	(void)state;
	memset(&bare, 0, sizeof(bare));
	bare.lr_id = "bare-2";
	bare.lr_status = CALL_OK;
	bare.lr_started_ms = -5; /* before 1970: the sign survives */
	bare.lr_latency_ms = -1;
	bare.lr_ttfb_ms = -1;
	w = full;
	w.lr_id = "withdrawn-3";

	buf_init(&b, 4096, 1 << 20, 0);
	assert_int_equal(journal_append(&b, JOURNAL_RESERVE, &full), 0);
	assert_int_equal(journal_append(&b, JOURNAL_SETTLE, &bare), 0);
	assert_int_equal(journal_append(&b, JOURNAL_WITHDRAW, &w), 0);
	write_seg(fx.path, 1, &b);
	assert_int_equal(read_seg(fx.path, 1, &torn), 8 + (int64_t)buf_len(&b));
	assert_int_equal(torn, 0);
	assert_int_equal(nseen, 3);
	assert_int_equal(seen[0].t, JOURNAL_RESERVE);
	assert_row_equal(&seen[0].it->li_row, &full);
	assert_int_equal(seen[1].t, JOURNAL_SETTLE);
	assert_row_equal(&seen[1].it->li_row, &bare);
	for (i = 0; i < TAG_MAX; i++)
		assert_null(seen[1].it->li_row.lr_tags[i]);
	/* A withdrawal carries the id alone. */
	assert_int_equal(seen[2].t, JOURNAL_WITHDRAW);
	memset(&want, 0, sizeof(want));
	want.lr_id = "withdrawn-3";
	assert_row_equal(&seen[2].it->li_row, &want);

	/* A row too large for a record is refused, the buffer unchanged. */
	{
		static char huge[JOURNAL_RECORD_MAX + 1];
		size_t before = buf_len(&b);

		memset(huge, 'h', sizeof(huge) - 1);
		full.lr_refusal_reason = huge;
		assert_int_equal(journal_append(&b, JOURNAL_SETTLE, &full), -1);
		assert_int_equal(buf_len(&b), before);
	}
	buf_free(&b);
	seen_clear();
}

/*
 * A crash while a record was written leaves it short; a bad sector or a
 * stray write leaves one whose CRC does not match. The records before it
 * are read, the rest is counted as torn, nothing crashes; and a start-up
 * on such a segment charges what the whole records say.
 */
static void
test_torn_tail(void **state)
{
	struct ledger_row r1 = mkrow_at("t1", T0), r2 = mkrow_at("t2", T0);
	struct ledger_row s2 = r2;
	struct buf b;
	size_t torn, len3, whole;
	char *name;
	int fd, k;
	unsigned char c;

	(void)state;
	set_ok(&s2);
	buf_init(&b, 4096, 1 << 20, 0);
	assert_int_equal(journal_append(&b, JOURNAL_RESERVE, &r1), 0);
	assert_int_equal(journal_append(&b, JOURNAL_RESERVE, &r2), 0);
	whole = buf_len(&b);
	assert_int_equal(journal_append(&b, JOURNAL_SETTLE, &s2), 0);
	len3 = buf_len(&b) - whole;
	name = journal_name(fx.path, 1);

	/* Cut short at every length inside the last record. */
	for (k = 1; k < (int)len3; k += 7) {
		unlink(name);
		write_seg(fx.path, 1, &b);
		assert_int_equal(truncate(name, (off_t)(8 + whole + k)), 0);
		assert_int_equal(
		    read_seg(fx.path, 1, &torn), 8 + (int64_t)whole);
		assert_int_equal(torn, (size_t)k);
		assert_int_equal(nseen, 2);
		assert_int_equal(seen_count(JOURNAL_RESERVE, "t2"), 1);
	}

	/* A byte flipped in the last record's payload, then in its length. */
	for (k = 0; k < 2; k++) {
		unlink(name);
		write_seg(fx.path, 1, &b);
		assert_true((fd = open(name, O_RDWR)) != -1);
		assert_int_equal(
		    pread(fd, &c, 1,
			(off_t)(8 + whole + (k == 0 ? len3 - 3 : 3))),
		    1);
		c ^= 0x40;
		assert_int_equal(
		    pwrite(fd, &c, 1,
			(off_t)(8 + whole + (k == 0 ? len3 - 3 : 3))),
		    1);
		close(fd);
		assert_int_equal(
		    read_seg(fx.path, 1, &torn), 8 + (int64_t)whole);
		assert_int_equal(torn, len3);
		assert_int_equal(nseen, 2);
	}

	/* Created, and killed before its magic was whole. */
	assert_int_equal(truncate(name, 5), 0);
	assert_int_equal(read_seg(fx.path, 1, &torn), 5);
	assert_int_equal(torn, 5);
	assert_int_equal(nseen, 0);

	/*
	 * Started on the segment with the flipped byte: t2's settlement is
	 * not believed, so both calls are interrupted at their reservation.
	 */
	unlink(name);
	write_seg(fx.path, 1, &b);
	assert_true((fd = open(name, O_RDWR)) != -1);
	assert_int_equal(pread(fd, &c, 1, (off_t)(8 + whole + len3 - 1)), 1);
	c ^= 0x01;
	assert_int_equal(pwrite(fd, &c, 1, (off_t)(8 + whole + len3 - 1)), 1);
	close(fd);
	open_ok(DURABILITY_PROCESS, 0);
	assert_int_equal(q_int("SELECT count(*) FROM calls WHERE status = "
			       "'interrupted' AND cost_nusd = 3000000"),
	    2);
	assert_int_equal(access(name, F_OK), -1);
	free(name);
	buf_free(&b);
	seen_clear();
}

/*
 * What a start-up makes of the segments a run left: a reservation alone
 * is an interrupted call charged at its reservation, a settlement is its
 * row, a withdrawal is nothing. The segments are read in order and
 * deleted once the rows are in; the same segments read again change
 * nothing; the next segment is numbered past the last.
 */
static void
test_replay(void **state)
{
	struct ledger_row a = mkrow_at("a", T0), b = mkrow_at("b", T0);
	struct ledger_row c = mkrow_at("c", T0), d = mkrow_at("d", T0);
	struct ledger_row sb;
	struct ledger_stats st;
	struct buf b3, b5;
	char keep[2][256], *name;
	int i, seg[2] = {3, 5};

	(void)state;
	d.lr_usage_source = USAGE_REPORTED; /* kept: it had usage */
	d.lr_reserved_nusd = 500;
	sb = b;
	set_ok(&sb);
	sb.lr_cost_nusd = 777;
	buf_init(&b3, 4096, 1 << 20, 0);
	buf_init(&b5, 4096, 1 << 20, 0);
	assert_int_equal(journal_append(&b3, JOURNAL_RESERVE, &a), 0);
	assert_int_equal(journal_append(&b3, JOURNAL_RESERVE, &b), 0);
	assert_int_equal(journal_append(&b3, JOURNAL_RESERVE, &c), 0);
	/* A later segment repeats the calls in flight, as rotation does. */
	assert_int_equal(journal_append(&b5, JOURNAL_RESERVE, &a), 0);
	assert_int_equal(journal_append(&b5, JOURNAL_RESERVE, &b), 0);
	assert_int_equal(journal_append(&b5, JOURNAL_SETTLE, &sb), 0);
	assert_int_equal(journal_append(&b5, JOURNAL_WITHDRAW, &c), 0);
	assert_int_equal(journal_append(&b5, JOURNAL_RESERVE, &d), 0);
	write_seg(fx.path, 3, &b3);
	write_seg(fx.path, 5, &b5);
	for (i = 0; i < 2; i++) {
		name = journal_name(fx.path, (uint64_t)seg[i]);
		snprintf(keep[i], sizeof(keep[i]), "%s/keep.%d", fx.dir, i);
		copy_file(name, keep[i]);
		free(name);
	}

	for (i = 0; i < 2; i++) {
		open_ok(DURABILITY_PROCESS, 0);
		ledger_stats(&st);
		assert_int_equal(st.ls_replayed, i == 0 ? 3 : 0);
		assert_int_equal(st.ls_interrupted, i == 0 ? 2 : 0);
		assert_int_equal(st.ls_journal_segment, 6);
		assert_int_equal(nsegments(fx.path), 1);
		assert_int_equal(q_int("SELECT count(*) FROM calls"), 3);
		assert_string_equal(
		    q_text("SELECT status FROM calls WHERE id = 'a'"),
		    "interrupted");
		assert_int_equal(
		    q_int("SELECT cost_nusd FROM calls WHERE id = 'a'"),
		    3000000);
		assert_string_equal(q_text("SELECT usage_source FROM calls "
					   "WHERE id = 'a'"),
		    "estimated");
		assert_int_equal(q_int("SELECT finished_at IS NOT NULL FROM "
				       "calls WHERE id = 'a'"),
		    1);
		assert_string_equal(
		    q_text("SELECT status FROM calls WHERE id = 'b'"), "ok");
		assert_int_equal(
		    q_int("SELECT cost_nusd FROM calls WHERE id = 'b'"), 777);
		assert_int_equal(
		    q_int("SELECT count(*) FROM calls WHERE id = 'c'"), 0);
		assert_string_equal(q_text("SELECT status || ' ' || "
					   "usage_source || ' ' || cost_nusd "
					   "FROM calls WHERE id = 'd'"),
		    "interrupted reported 500");
		assert_rollup_exact();
		ledger_close();
		/* Closed with nothing in flight: no segment left. */
		assert_int_equal(nsegments(fx.path), 0);
		/* The same segments once more. */
		name = journal_name(fx.path, 3);
		copy_file(keep[0], name);
		free(name);
		name = journal_name(fx.path, 5);
		copy_file(keep[1], name);
		free(name);
	}
	buf_free(&b3);
	buf_free(&b5);
}

/*
 * A file named like a segment that is not a journal: the ledger does not
 * open, the cause names the file, and no segment is deleted (a start-up
 * that cannot read the journal must not lose it).
 */
static void
test_replay_not_journal(void **state)
{
	struct ledger_row r = mkrow_at("n1", T0);
	struct buf b;
	char *name, *good, *cause = NULL;
	int fd;

	(void)state;
	buf_init(&b, 4096, 1 << 20, 0);
	assert_int_equal(journal_append(&b, JOURNAL_RESERVE, &r), 0);
	write_seg(fx.path, 2, &b);
	buf_free(&b);
	good = journal_name(fx.path, 2);
	name = journal_name(fx.path, 7);
	assert_true((fd = open(name, O_WRONLY | O_CREAT, 0600)) != -1);
	assert_int_equal(
	    write(fd, "PK\x03\x04 a zip file, not ours\n", 26), 26);
	close(fd);
	assert_int_equal(
	    ledger_open(fx.base, fx.path, DURABILITY_PROCESS, 0, &cause), -1);
	assert_non_null(strstr(cause, name));
	assert_non_null(strstr(cause, "not a tollgate journal"));
	free(cause);
	assert_int_equal(access(name, F_OK), 0);
	assert_int_equal(access(good, F_OK), 0);
	assert_int_equal(q_int("SELECT count(*) FROM calls"), 0);

	/* Too large to be a segment (sparse): refused, not read whole. */
	assert_int_equal(unlink(name), 0);
	assert_true((fd = open(name, O_WRONLY | O_CREAT, 0600)) != -1);
	assert_int_equal(ftruncate(fd, (off_t)1 << 40), 0);
	close(fd);
	assert_int_equal(
	    ledger_open(fx.base, fx.path, DURABILITY_PROCESS, 0, &cause), -1);
	assert_non_null(strstr(cause, name));
	assert_non_null(strstr(cause, "larger than any journal segment"));
	free(cause);
	assert_int_equal(access(good, F_OK), 0);

	/* Taken away, the ledger opens and replays what is there; a name
	 * tollgate never writes (a leading zero) is not read, nor deleted. */
	assert_int_equal(unlink(name), 0);
	free(name);
	xasprintf(&name, "%s.journal.007", fx.path);
	assert_true((fd = open(name, O_WRONLY | O_CREAT, 0600)) != -1);
	close(fd);
	open_ok(DURABILITY_PROCESS, 0);
	assert_string_equal(
	    q_text("SELECT status FROM calls WHERE id = 'n1'"), "interrupted");
	assert_int_equal(access(good, F_OK), -1);
	assert_int_equal(access(name, F_OK), 0);
	free(name);
	free(good);
}

/*
 * kill -9 in-process: the files are copied as they are on disk, with the
 * ledger still open and nothing closed or flushed, and a ledger opened on
 * the copy. Calls settled have their rows (the settlement only in the
 * journal included), calls never settled are interrupted, a call
 * cancelled before it was forwarded is nothing.
 */
static void
test_kill9(void **state)
{
	static const char *const ids[] = {"k0", "k1", "k2", "k3", "k4", "k5"};
	struct answer cancelled = {0};
	struct ledger_ticket *t;
	struct ledger_row r;
	char crash[sizeof(fx.dir) + 8];
	size_t i;

	(void)state;
	open_ok(DURABILITY_PROCESS, 0);
	for (i = 0; i < nitems(ids); i++)
		assert_int_equal(reserve(ids[i], 0), LEDGER_OK);
	settle("k0", 100);
	settle("k1", 101);
	flush(); /* k0 and k1 in the database */
	ledger_test_pause(1);
	settle("k2", 102); /* only in the journal */
	r = mkrow_at("k9", T0);
	assert_non_null(t = ledger_reserve(&r, 0, answer_cb, &cancelled));
	ledger_ticket_cancel(t);
	for (i = 0; i < 5; i++) /* the turn's write, then the withdrawal */
		event_base_loop(fx.base, EVLOOP_NONBLOCK);
	assert_int_equal(q_int("SELECT count(*) FROM calls"), 2);

	snprintf(crash, sizeof(crash), "%s/crash", fx.dir);
	copy_ledger_files(crash);
	ledger_close();
	assert_int_equal(cancelled.fired, 0);
	snprintf(fx.path, sizeof(fx.path), "%s/ledger.db", crash);
	open_ok(DURABILITY_PROCESS, 0);
	assert_int_equal(q_int("SELECT count(*) FROM calls"), 6);
	assert_int_equal(q_int("SELECT sum(cost_nusd) FROM calls WHERE id IN "
			       "('k0', 'k1', 'k2') AND status = 'ok'"),
	    303);
	assert_int_equal(q_int("SELECT count(*) FROM calls WHERE status = "
			       "'interrupted' AND cost_nusd = 3000000 AND id "
			       "IN ('k3', 'k4', 'k5')"),
	    3);
	assert_int_equal(
	    q_int("SELECT count(*) FROM calls WHERE id = 'k9'"), 0);
	assert_rollup_exact();
	assert_string_equal(q_text("PRAGMA integrity_check"), "ok");
}

/*
 * A ledger closed with calls in flight keeps its journal for the next
 * start, and a reservation still waiting for the turn's write when the
 * close came is refused: it was never forwarded, so the next start must
 * not charge it.
 */
static void
test_close_pending(void **state)
{
	struct answer b = {0};
	struct ledger_row r;
	struct ledger_stats st;
	size_t torn;

	(void)state;
	open_ok(DURABILITY_PROCESS, 0);
	assert_int_equal(reserve("a", 0), LEDGER_OK);
	r = mkrow_at("b", T0);
	assert_non_null(ledger_reserve(&r, 0, answer_cb, &b));
	ledger_close();
	assert_int_equal(b.fired, 1);
	assert_int_equal(b.result, LEDGER_UNAVAILABLE);
	assert_int_equal(nsegments(fx.path), 1);
	(void)read_seg(fx.path, 1, &torn);
	assert_int_equal(seen_count(JOURNAL_RESERVE, "a"), 1);
	assert_int_equal(seen_count(JOURNAL_RESERVE, "b") -
		seen_count(JOURNAL_WITHDRAW, "b"),
	    0);
	seen_clear();
	/* And a row an older version left in flight: both are recovered. */
	rw_exec("INSERT INTO calls (id, started_at, status, usage_source, "
		"reserved_nusd, cost_nusd) VALUES ('old', "
		"'2026-11-28T14:23:00.123Z', 'in_flight', 'none', 500, 0)");

	open_ok(DURABILITY_PROCESS, 0);
	ledger_stats(&st);
	assert_int_equal(st.ls_interrupted, 2);
	assert_string_equal(
	    q_text("SELECT status FROM calls WHERE id = 'a'"), "interrupted");
	assert_string_equal(q_text("SELECT status || ' ' || cost_nusd FROM "
				   "calls WHERE id = 'old'"),
	    "interrupted 500");
	assert_int_equal(q_int("SELECT count(*) FROM calls WHERE id = 'b'"), 0);
}

/*
 * A settlement SQLite itself refuses (a constraint; here a trigger stands
 * for any the checks before the queue do not know) is given up by the
 * writer, and the journal that holds it is kept: the next start must
 * still open, writing everything else the journal holds.
 */
static void
test_replay_refused_row(void **state)
{
	struct ledger_stats st;
	char *cause = NULL;

	(void)state;
	open_ok(DURABILITY_PROCESS, 0);
	ledger_close();
	rw_exec("CREATE TRIGGER refuse_p1 BEFORE INSERT ON calls WHEN "
		"NEW.id = 'p1' BEGIN SELECT RAISE(ABORT, 'not p1'); END");
	open_ok(DURABILITY_PROCESS, 0);
	assert_int_equal(reserve("p1", 0), LEDGER_OK);
	assert_int_equal(reserve("p2", 0), LEDGER_OK);
	assert_int_equal(reserve("p3", 0), LEDGER_OK);
	settle("p1", 111);
	settle("p2", 222);
	flush();
	ledger_stats(&st);
	assert_int_equal(st.ls_dropped, 1);
	ledger_close(); /* p3 in flight, and a row given up: kept */
	assert_int_equal(nsegments(fx.path), 1);

	if (ledger_open(fx.base, fx.path, DURABILITY_PROCESS, 0, &cause) != 0)
		fail_msg("ledger_open after a refused row: %s", cause);
	assert_int_equal(nsegments(fx.path), 1); /* the new one */
	assert_int_equal(
	    q_int("SELECT count(*) FROM calls WHERE id = 'p1'"), 0);
	assert_int_equal(
	    q_int("SELECT cost_nusd FROM calls WHERE id = 'p2'"), 222);
	assert_string_equal(
	    q_text("SELECT status FROM calls WHERE id = 'p3'"), "interrupted");
}

/*
 * Segments rotate past their size: the new one starts with the
 * reservations of the calls in flight, the old one is deleted once the
 * writer has committed what it led to, and a call in flight across
 * several rotations is still charged by the next start.
 */
static void
test_rotation(void **state)
{
	struct ledger_stats st;
	char id[16];
	size_t torn;
	int i, d;

	(void)state;
	for (d = 0; d < 2; d++) {
		open_ok(d == 0 ? DURABILITY_PROCESS : DURABILITY_POWER, 0);
		ledger_test_segment_max(600);
		assert_int_equal(
		    reserve(d == 0 ? "long0" : "long1", 0), LEDGER_OK);
		for (i = 0; i < 60; i++) {
			snprintf(id, sizeof(id), "r%d-%02d", d, i);
			assert_int_equal(reserve(id, 0), LEDGER_OK);
			settle(id, 1000 + i);
			flush();
		}
		ledger_stats(&st);
		assert_true(st.ls_journal_rotations >= 5);
		assert_int_equal(st.ls_journal_failures, 0);
		/* The marks come back: only the open segment is left. */
		wait_segments(1);
		(void)read_seg(fx.path, cur_seg(), &torn);
		assert_int_equal(torn, 0);
		assert_true(nseen >= 1);
		assert_int_equal(seen[0].t, JOURNAL_RESERVE);
		assert_string_equal(
		    seen[0].it->li_row.lr_id, d == 0 ? "long0" : "long1");
		seen_clear();
		ledger_close();
		assert_true(nsegments(fx.path) >= 1); /* kept: long in flight */
		open_ok(DURABILITY_PROCESS, 0);
		assert_string_equal(q_text("SELECT status FROM calls WHERE "
					   "id = '%s'",
					d == 0 ? "long0" : "long1"),
		    "interrupted");
		assert_int_equal(q_int("SELECT count(*) FROM calls WHERE id "
				       "LIKE 'r%d-%%' AND status = 'ok'",
				     d),
		    60);
		ledger_close();
	}
	assert_int_equal(q_int("SELECT count(*) FROM calls"), 122);
	assert_rollup_exact();
}

/*
 * A rotation with many calls in flight (more than 64 KiB of their
 * reservations) writes them all at the head of the new segment, and a
 * loop turn that admits hundreds of calls writes them all: neither
 * buffer may refuse what the journal must hold.
 */
static void
test_rotation_many(void **state)
{
	static struct answer ans[1000];
	static char ids[1000][16];
	struct ledger_stats st;
	struct ledger_row r;
	size_t torn;
	int i, n = 1000;

	(void)state;
	open_ok(DURABILITY_PROCESS, 0);
	/* In turns of 100: each turn's write stays small. */
	for (i = 0; i < n; i++) {
		snprintf(ids[i], sizeof(ids[i]), "m%04d", i);
		r = mkrow_at(ids[i], T0);
		assert_non_null(ledger_reserve(&r, 0, answer_cb, &ans[i]));
		if (i % 100 == 99)
			run_until(&answers_fired, i + 1);
	}
	for (i = 0; i < n; i++)
		assert_int_equal(ans[i].result, LEDGER_OK);
	ledger_test_segment_max(1);
	assert_int_equal(reserve("after", 0), LEDGER_OK);
	ledger_stats(&st);
	assert_int_equal(st.ls_journal_failures, 0);
	assert_int_equal(st.ls_journal_rotations, 1);
	(void)read_seg(fx.path, cur_seg(), &torn);
	assert_int_equal(nseen, (size_t)n + 1);
	assert_int_equal(torn, 0);
	seen_clear();
	ledger_test_segment_max(0);

	/* A thousand more in one turn. */
	answers_fired = 0;
	for (i = 0; i < n; i++) {
		snprintf(ids[i], sizeof(ids[i]), "o%04d", i);
		r = mkrow_at(ids[i], T0);
		memset(&ans[i], 0, sizeof(ans[i]));
		assert_non_null(ledger_reserve(&r, 0, answer_cb, &ans[i]));
	}
	run_until(&answers_fired, n);
	for (i = 0; i < n; i++)
		assert_int_equal(ans[i].result, LEDGER_OK);
	ledger_stats(&st);
	assert_int_equal(st.ls_in_flight, (size_t)2 * n + 1);
}

/*
 * The open segment deleted under the ledger: within about a second a new
 * segment holds the calls in flight, so a crash still finds them.
 */
static void
test_segment_deleted(void **state)
{
	struct ledger_stats st;
	uint64_t seg;
	long long deadline;
	char *name;
	size_t torn;

	(void)state;
	open_ok(DURABILITY_PROCESS, 0);
	assert_int_equal(reserve("a", 0), LEDGER_OK);
	assert_int_equal(reserve("b", 0), LEDGER_OK);
	settle("b", 5);
	flush();
	seg = cur_seg();
	name = journal_name(fx.path, seg);
	assert_int_equal(unlink(name), 0);
	free(name);
	deadline = monotime_us() + 5000000LL;
	while (cur_seg() == seg) {
		assert_true(monotime_us() < deadline);
		event_base_loop(fx.base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
		usleep(5000);
	}
	assert_int_equal(nsegments(fx.path), 1);
	(void)read_seg(fx.path, cur_seg(), &torn);
	assert_int_equal(nseen, 1);
	assert_int_equal(seen_count(JOURNAL_RESERVE, "a"), 1);
	seen_clear();
	ledger_stats(&st);
	assert_int_equal(st.ls_journal_rotations, 1);

	/* The ledger goes on: a crash now still charges a. */
	assert_int_equal(reserve("c", 0), LEDGER_OK);
	ledger_close();
	open_ok(DURABILITY_PROCESS, 0);
	assert_int_equal(q_int("SELECT count(*) FROM calls WHERE status = "
			       "'interrupted' AND id IN ('a', 'c')"),
	    2);
	assert_int_equal(
	    q_int("SELECT cost_nusd FROM calls WHERE id = 'b'"), 5);
}

/*
 * A request id the client chose: a row with it in the ledger is a
 * duplicate (the writer is asked), one in flight is a duplicate at once
 * (the writer is not), a free one goes to the journal only once the
 * writer has said it is free.
 */
static void
test_client_probe(void **state)
{
	struct answer a = {0}, b = {0}, c = {0};
	struct ledger_row r;
	struct ledger_stats st;
	size_t torn;
	int i;

	(void)state;
	open_ok(DURABILITY_PROCESS, 0);
	r = mkrow_at("taken", T0);
	r.lr_status = CALL_REFUSED;
	r.lr_finished_ms = T0;
	assert_int_equal(ledger_record(&r), 0);
	flush();
	assert_int_equal(reserve("taken", LEDGER_ID_CLIENT), LEDGER_DUPLICATE);
	/* Our own ids are not probed. */
	assert_int_equal(reserve("ours", 0), LEDGER_OK);

	ledger_test_pause(1);
	r = mkrow_at("free", T0);
	assert_non_null(ledger_reserve(&r, LEDGER_ID_CLIENT, answer_cb, &a));
	for (i = 0; i < 20; i++) {
		event_base_loop(fx.base, EVLOOP_NONBLOCK);
		usleep(1000);
	}
	assert_int_equal(a.fired, 0);
	/* In flight, though unanswered: a duplicate, the writer held. */
	assert_non_null(ledger_reserve(&r, LEDGER_ID_CLIENT, answer_cb, &b));
	run_until(&b.fired, 1);
	assert_int_equal(b.result, LEDGER_DUPLICATE);
	r = mkrow_at("ours", T0);
	assert_non_null(ledger_reserve(&r, LEDGER_ID_CLIENT, answer_cb, &c));
	run_until(&c.fired, 1);
	assert_int_equal(c.result, LEDGER_DUPLICATE);
	(void)read_seg(fx.path, cur_seg(), &torn);
	assert_int_equal(seen_count(JOURNAL_RESERVE, "free"), 0);
	ledger_test_pause(0);
	run_until(&a.fired, 1);
	assert_int_equal(a.result, LEDGER_OK);
	(void)read_seg(fx.path, cur_seg(), &torn);
	assert_int_equal(seen_count(JOURNAL_RESERVE, "free"), 1);
	assert_int_equal(seen_count(JOURNAL_RESERVE, "taken"), 0);
	seen_clear();

	/* A settlement queued before the probe is seen by it. */
	ledger_test_pause(1);
	settle("free", 9);
	memset(&a, 0, sizeof(a));
	r = mkrow_at("free", T0);
	assert_non_null(ledger_reserve(&r, LEDGER_ID_CLIENT, answer_cb, &a));
	ledger_test_pause(0);
	run_until(&a.fired, 1);
	assert_int_equal(a.result, LEDGER_DUPLICATE);
	ledger_stats(&st);
	assert_int_equal(st.ls_in_flight, 1); /* ours */
	assert_int_equal(
	    q_int("SELECT cost_nusd FROM calls WHERE id = 'free'"), 9);
}

/*
 * Under durability: power a reservation is answered only once a sync
 * covers its record, and the calls of one loop turn share syncs.
 */
static void
test_power_sync(void **state)
{
	static struct answer ans[200];
	static char ids[200][16];
	struct answer one = {0}, gone = {0};
	struct ledger_ticket *t;
	struct ledger_row r;
	struct ledger_stats st;
	uint64_t before, prev;
	size_t torn;
	int i, n = 200;

	(void)state;
	open_ok(DURABILITY_POWER, 0);
	/* The syncer's first work (the new segment) done: quiet. */
	ledger_stats(&st);
	for (i = 0; i < 100; i++) {
		prev = st.ls_journal_syncs;
		usleep(50000);
		ledger_stats(&st);
		if (st.ls_journal_syncs == prev && prev > 0)
			break;
	}
	before = st.ls_journal_syncs;
	r = mkrow_at("one", T0);
	assert_non_null(ledger_reserve(&r, 0, answer_cb, &one));
	run_until(&one.fired, 1);
	assert_int_equal(one.result, LEDGER_OK);
	assert_true(one.syncs > before);

	ledger_stats(&st);
	before = st.ls_journal_syncs;
	for (i = 0; i < n; i++) {
		snprintf(ids[i], sizeof(ids[i]), "p%03d", i);
		r = mkrow_at(ids[i], T0);
		assert_non_null(ledger_reserve(&r, 0, answer_cb, &ans[i]));
	}
	run_until(&answers_fired, n + 1);
	ledger_stats(&st);
	for (i = 0; i < n; i++) {
		assert_int_equal(ans[i].result, LEDGER_OK);
		assert_true(ans[i].syncs > before);
	}
	print_message("power: %d calls in one turn, %" PRIu64 " syncs\n", n,
	    st.ls_journal_syncs - before);
	assert_true(st.ls_journal_syncs - before < 10);

	/*
	 * Cancelled before its answer: written, it waits for the sync like
	 * any other, and is then withdrawn, never answered.
	 */
	r = mkrow_at("gone", T0);
	assert_non_null(t = ledger_reserve(&r, 0, answer_cb, &gone));
	ledger_ticket_cancel(t);
	event_base_loop(fx.base, EVLOOP_NONBLOCK); /* the write */
	ledger_stats(&st);
	before = st.ls_journal_syncs;
	while (st.ls_journal_syncs == before) {
		usleep(1000);
		ledger_stats(&st);
	}
	for (i = 0; i < 20; i++) {
		event_base_loop(fx.base, EVLOOP_NONBLOCK);
		usleep(1000);
	}
	assert_int_equal(gone.fired, 0);
	(void)read_seg(fx.path, cur_seg(), &torn);
	assert_int_equal(seen_count(JOURNAL_RESERVE, "gone"), 1);
	assert_int_equal(seen_count(JOURNAL_WITHDRAW, "gone"), 1);
	seen_clear();
	ledger_stats(&st);
	assert_int_equal(st.ls_in_flight, (size_t)n + 1);
}

/*
 * The journal cannot be written (here its descriptor made read-only):
 * reservations are answered UNAVAILABLE and never forwarded, settlements
 * still reach the ledger, and once the journal takes writes again so do
 * reservations.
 */
static void
test_journal_write_fail(void **state)
{
	struct ledger_stats st;
	struct ledger_row *rows;
	char *name;
	size_t torn;
	int rofd, saved;

	(void)state;
	open_ok(DURABILITY_PROCESS, 0);
	assert_int_equal(reserve("a", 0), LEDGER_OK);
	name = journal_name(fx.path, cur_seg());
	assert_true((rofd = open(name, O_RDONLY)) != -1);
	free(name);
	saved = ledger->l_journal.j_fd;
	ledger->l_journal.j_fd = rofd;

	assert_int_equal(reserve("b", 0), LEDGER_UNAVAILABLE);
	assert_int_equal(reserve("b2", LEDGER_ID_CLIENT), LEDGER_UNAVAILABLE);
	ledger_stats(&st);
	assert_true(st.ls_journal_failures >= 2);
	assert_int_equal(st.ls_in_flight, 1);
	assert_int_equal(ledger_unwritten(&rows), 1);
	assert_string_equal(rows[0].lr_id, "a");
	free(rows);
	settle("a", 42); /* its record waits for the next write */
	flush();
	assert_int_equal(
	    q_int("SELECT cost_nusd FROM calls WHERE id = 'a'"), 42);

	ledger->l_journal.j_fd = saved;
	close(rofd);
	assert_int_equal(reserve("c", 0), LEDGER_OK);
	(void)read_seg(fx.path, cur_seg(), &torn);
	assert_int_equal(torn, 0);
	assert_int_equal(seen_count(JOURNAL_RESERVE, "b"), 0);
	assert_int_equal(seen_count(JOURNAL_RESERVE, "b2"), 0);
	assert_int_equal(seen_count(JOURNAL_RESERVE, "c"), 1);
	assert_int_equal(seen_count(JOURNAL_SETTLE, "a"), 1);
	seen_clear();
	ledger_close();
	open_ok(DURABILITY_PROCESS, 0);
	assert_int_equal(q_int("SELECT count(*) FROM calls WHERE id IN ('b', "
			       "'b2')"),
	    0);
	assert_string_equal(
	    q_text("SELECT status FROM calls WHERE id = 'c'"), "interrupted");
	assert_int_equal(
	    q_int("SELECT cost_nusd FROM calls WHERE id = 'a'"), 42);
}

/*
 * A segment must not go while the ledger's file is lost: what it led to
 * is then only in the file tollgate has open, which a restart does not
 * find. Segment 1 holds a's settlement; its mark is queued behind that
 * settlement while the writer is held; the file at the path is replaced
 * and the writer finds it lost before it commits the batch: the mark is
 * refused and segment 1 stays.
 */
static void
test_lost_keeps_segment(void **state)
{
	char other[sizeof(fx.dir) + 16], *name;
	struct stat st;
	sqlite3 *db;
	uint64_t first;

	(void)state;
	open_ok(DURABILITY_PROCESS, 0);
	first = cur_seg();
	assert_int_equal(reserve("a", 0), LEDGER_OK);
	ledger_test_pause(1);
	settle("a", 100);
	event_base_loop(fx.base, EVLOOP_NONBLOCK); /* SETTLE a in segment 1 */
	ledger_test_segment_max(1);
	assert_int_equal(reserve("b", 0), LEDGER_OK); /* rotates: a mark */
	assert_true(cur_seg() > first);

	/* Another database takes the ledger's path. */
	snprintf(other, sizeof(other), "%s/other.db", fx.dir);
	assert_int_equal(sqlite3_open(other, &db), SQLITE_OK);
	assert_int_equal(
	    sqlite3_exec(db, "CREATE TABLE t (x)", NULL, NULL, NULL),
	    SQLITE_OK);
	sqlite3_close(db);
	assert_int_equal(rename(other, fx.path), 0);
	usleep(1100000); /* past the writer's once-a-second check */
	ledger_test_pause(0);
	flush();
	for (int i = 0; i < 50; i++) {
		event_base_loop(fx.base, EVLOOP_NONBLOCK);
		usleep(2000);
	}
	name = journal_name(fx.path, first);
	assert_int_equal(stat(name, &st), 0);
	free(name);
	ledger_close();
}

/*
 * A segment whose sync failed is never said to be on disk, not even once
 * a later segment has been synced: after a failed fsync the kernel may
 * report the next one as a success. fdatasync of a pipe fails (EINVAL).
 */
static void
test_syncer_bad_segment(void **state)
{
	struct ledger_syncer *sy;
	char file[sizeof(fx.dir) + 16], *cause = NULL;
	long long deadline;
	int efd, p[2], fd;

	(void)state;
	assert_true((efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) != -1);
	assert_int_equal(pipe(p), 0);
	sy = syncer_start(fx.path, efd, &cause);
	assert_non_null(sy);
	syncer_segment(sy, 1, p[1]);
	syncer_want(sy, 1, 100);
	deadline = monotime_us() + 10000000LL;
	while (!syncer_failed_take(sy)) {
		assert_true(monotime_us() < deadline);
		usleep(1000);
	}
	snprintf(file, sizeof(file), "%s/seg2", fx.dir);
	assert_true((fd = open(file, O_RDWR | O_CREAT, 0600)) != -1);
	assert_int_equal(write(fd, "0123456789", 10), 10);
	syncer_segment(sy, 2, fd);
	syncer_want(sy, 2, 10);
	while (!syncer_covers(sy, 2, 10)) {
		assert_true(monotime_us() < deadline);
		usleep(1000);
	}
	assert_false(syncer_covers(sy, 1, 100));
	assert_false(syncer_covers(sy, 1, 1));
	assert_false(syncer_failed_take(sy)); /* told once */
	syncer_stop(sy);
	close(fd);
	close(p[0]);
	close(p[1]);
	close(efd);
}

/*
 * While SQLite writes fail, the writer waits out its backoff: settlements
 * that keep coming (calls go on, their rows in the journal) gather, and
 * do not each set off a retry of the whole backlog.
 */
static void
test_failing_backoff(void **state)
{
	static char big[6001];
	struct ledger_stats st;
	struct ledger_row s;
	char id[16];
	int i;

	(void)state;
	memset(big, 'z', sizeof(big) - 1);
	open_ok(DURABILITY_PROCESS, 0);
	assert_int_equal(reserve("f0", 0), LEDGER_OK);
	settle("f0", 1);
	flush();
	ledger_test_max_pages(1);
	for (i = 0; i < 200; i++) {
		snprintf(id, sizeof(id), "f%d", i + 1);
		assert_int_equal(reserve(id, 0), LEDGER_OK);
		s = mkrow_at(id, T0);
		set_ok(&s);
		s.lr_refusal_reason = big;
		ledger_settle(&s);
		event_base_loop(fx.base, EVLOOP_NONBLOCK);
		usleep(1000);
	}
	ledger_stats(&st);
	assert_int_equal(st.ls_failing, 1);
	if (st.ls_failures > 20)
		fail_msg("%" PRIu64 " failed transactions for 200 settlements "
			 "in %s",
		    st.ls_failures, "about 0.3 s");
	ledger_test_max_pages(1000000);
	flush();
	assert_int_equal(q_int("SELECT count(*) FROM calls"), 201);
	ledger_close();
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(
		test_record_roundtrip, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_record_v1, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_record_v2, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_torn_tail, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_replay, setup, teardown),
	    cmocka_unit_test_setup_teardown(
		test_replay_not_journal, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_kill9, setup, teardown),
	    cmocka_unit_test_setup_teardown(
		test_close_pending, setup, teardown),
	    cmocka_unit_test_setup_teardown(
		test_replay_refused_row, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_rotation, setup, teardown),
	    cmocka_unit_test_setup_teardown(
		test_rotation_many, setup, teardown),
	    cmocka_unit_test_setup_teardown(
		test_segment_deleted, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_client_probe, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_power_sync, setup, teardown),
	    cmocka_unit_test_setup_teardown(
		test_journal_write_fail, setup, teardown),
	    cmocka_unit_test_setup_teardown(
		test_lost_keeps_segment, setup, teardown),
	    cmocka_unit_test_setup_teardown(
		test_syncer_bad_segment, setup, teardown),
	    cmocka_unit_test_setup_teardown(
		test_failing_backoff, setup, teardown),
	};

	log_init(1, 0);
	return (cmocka_run_group_tests(tests, NULL, NULL));
}
