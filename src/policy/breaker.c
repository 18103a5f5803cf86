/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Runaway breakers as a pure library: no clock, no I/O, no kills. The
 * caller passes the time and turns a trip into a timed kill and an alert.
 *
 * State lives in one table of scopes, keyed by the breaker kind and the
 * policy's scope key (match patterns and per values, as for budgets, so a
 * renamed or re-capped policy keeps its breaker state):
 *
 *	loop:<scope key>|intent=<v>	one per intent (else agent class)
 *	velocity:<scope key>		spend per second over the last 60 s
 *	error:<scope key>|<window ms>	calls, errors and spend in buckets
 *
 * A loop scope remembers at most BREAKER_LOOP_DIGESTS request bodies (by
 * SHA-256), each with the times of its last `count` sightings; the body
 * seen least recently is evicted first. The table holds at most
 * BREAKER_SCOPES_MAX scopes, the one touched least recently evicted
 * first, and breaker_gc drops scopes that can no longer trip. So memory is
 * bounded whatever the traffic.
 *
 * A scope that tripped does not trip again until its kill's TTL has
 * passed (bs_quiet_until); kills_trip also refuses to add a second live
 * kill for the same breaker and match, which covers a restart. The
 * semantics are spelled out in docs/internals/policy.md.
 */
#include <sys/queue.h>

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tollgate/breaker.h"
#include "tollgate/policy.h"
#include "tollgate/tags.h"
#include "tollgate/util.h"

#include "policy_int.h"

#define BREAKER_SLOTS 60 /* buckets of velocity and error_spike */
#define BREAKER_TAB 8192 /* hash buckets, a power of two */
#define NUSD_PER_USD 1000000000LL

enum bscope_kind {
	BS_LOOP,
	BS_VELOCITY,
	BS_ERROR,
};

/* One request body of a loop scope: the times of its last sightings. */
struct bdigest {
	unsigned char bd_sha[32];
	int64_t bd_last; /* last seen, ms */
	size_t bd_n; /* sightings kept, at most bs_count */
	size_t bd_head; /* next slot to write */
	int64_t bd_t[]; /* a ring of bs_count times */
};

/* One scope; owned by the table. */
struct bscope {
	char *bs_key;
	uint64_t bs_hash;
	struct bscope *bs_next; /* hash chain */
	TAILQ_ENTRY(bscope) bs_lru; /* least recently touched first */
	enum bscope_kind bs_kind;
	int64_t bs_last; /* last touched, ms */
	int64_t bs_quiet_until; /* tripped: no trip before this */
	int64_t bs_span_ms; /* how long an event counts */

	/* loop */
	int bs_count; /* ring length of each digest */
	struct bdigest *bs_dig[BREAKER_LOOP_DIGESTS];
	size_t bs_ndig;

	/* velocity and error_spike: bucket id per slot */
	int64_t bs_width; /* bucket width, ms */
	int64_t bs_id[BREAKER_SLOTS];
	int64_t bs_spend[BREAKER_SLOTS];
	int64_t bs_calls[BREAKER_SLOTS];
	int64_t bs_errors[BREAKER_SLOTS];
};
TAILQ_HEAD(bscopes, bscope);

struct breaker_state {
	struct bscope *bst_tab[BREAKER_TAB];
	struct bscopes bst_lru;
	size_t bst_n;
	size_t bst_nloop; /* of which loop scopes (half the cap each) */
};

/* FNV-1a over the key. */
static uint64_t
key_hash(const char *s)
{
	uint64_t h = 14695981039346656037ULL;

	for (; *s != '\0'; s++) {
		h ^= (unsigned char)*s;
		h *= 1099511628211ULL;
	}
	return (h);
}

/* A new, empty breaker state. */
struct breaker_state *
breaker_state_new(void)
{
	struct breaker_state *st;

	st = xcalloc(1, sizeof(*st));
	TAILQ_INIT(&st->bst_lru);
	return (st);
}

static void
bscope_free(struct bscope *bs)
{
	size_t i;

	for (i = 0; i < bs->bs_ndig; i++)
		free(bs->bs_dig[i]);
	free(bs->bs_key);
	free(bs);
}

/* Take bs out of the table and free it. */
static void
bscope_drop(struct breaker_state *st, struct bscope *bs)
{
	struct bscope **pp;

	pp = &st->bst_tab[bs->bs_hash & (BREAKER_TAB - 1)];
	while (*pp != bs)
		pp = &(*pp)->bs_next;
	*pp = bs->bs_next;
	TAILQ_REMOVE(&st->bst_lru, bs, bs_lru);
	st->bst_n--;
	if (bs->bs_kind == BS_LOOP)
		st->bst_nloop--;
	bscope_free(bs);
}

/* Free the state and every scope in it. */
void
breaker_state_free(struct breaker_state *st)
{
	struct bscope *bs;

	if (st == NULL)
		return;
	while ((bs = TAILQ_FIRST(&st->bst_lru)) != NULL)
		bscope_drop(st, bs);
	free(st);
}

/* How many scopes the state holds. */
size_t
breaker_count(const struct breaker_state *st)
{
	return (st->bst_n);
}

/*
 * The scope named key, made if missing (evicting the least recently
 * touched one at the cap), and marked touched at now. Takes key.
 */
static struct bscope *
bscope_get(
    struct breaker_state *st, char *key, enum bscope_kind kind, int64_t now)
{
	struct bscope *bs;
	uint64_t h = key_hash(key);

	for (bs = st->bst_tab[h & (BREAKER_TAB - 1)]; bs != NULL;
	     bs = bs->bs_next)
		if (bs->bs_hash == h && strcmp(bs->bs_key, key) == 0)
			break;
	if (bs != NULL) {
		free(key);
		TAILQ_REMOVE(&st->bst_lru, bs, bs_lru);
	} else {
		/*
		 * Loop scopes (one per intent, which callers choose) and the
		 * others each have half the cap, so a flood of intents can
		 * never push out the velocity and error windows.
		 */
		if ((kind == BS_LOOP ? st->bst_nloop
				     : st->bst_n - st->bst_nloop) >=
		    BREAKER_SCOPES_MAX / 2) {
			TAILQ_FOREACH(bs, &st->bst_lru, bs_lru)
			if ((bs->bs_kind == BS_LOOP) == (kind == BS_LOOP))
				break;
			bscope_drop(st, bs);
		}
		bs = xcalloc(1, sizeof(*bs));
		bs->bs_key = key;
		bs->bs_hash = h;
		bs->bs_kind = kind;
		bs->bs_next = st->bst_tab[h & (BREAKER_TAB - 1)];
		st->bst_tab[h & (BREAKER_TAB - 1)] = bs;
		st->bst_n++;
		if (kind == BS_LOOP)
			st->bst_nloop++;
	}
	TAILQ_INSERT_TAIL(&st->bst_lru, bs, bs_lru);
	if (now > bs->bs_last)
		bs->bs_last = now;
	return (bs);
}

/* "loop:" + the scope key + extra, as a string to free. */
static char *
bkey(const char *kind, const struct policy *po, const char *const *attr,
    const char *extra)
{
	char *scope, *key;

	scope = policy_scope_key(po, attr);
	xasprintf(&key, "%s:%s%s", kind, scope, extra);
	free(scope);
	return (key);
}

static int64_t
floor_div(int64_t a, int64_t b)
{
	int64_t q = a / b;

	return (q * b > a ? q - 1 : q);
}

/* $1.5 as "1.50": at least two decimals, no trailing zeros beyond. */
static void
fmt_usd(int64_t nusd, char *buf, size_t len)
{
	char frac[16];
	size_t n;

	snprintf(
	    frac, sizeof(frac), "%09lld", (long long)(nusd % NUSD_PER_USD));
	for (n = 9; n > 2 && frac[n - 1] == '0'; n--)
		;
	frac[n] = '\0';
	snprintf(buf, len, "%lld.%s", (long long)(nusd / NUSD_PER_USD), frac);
}

/* A duration the way the config writes it: 90s, 10m, 2h, 7d, or ms. */
static void
fmt_dur(int64_t ms, char *buf, size_t len)
{
	if (ms % DAY_MS == 0)
		snprintf(buf, len, "%lldd", (long long)(ms / DAY_MS));
	else if (ms % (60 * MIN_MS) == 0)
		snprintf(buf, len, "%lldh", (long long)(ms / (60 * MIN_MS)));
	else if (ms % MIN_MS == 0)
		snprintf(buf, len, "%lldm", (long long)(ms / MIN_MS));
	else if (ms % 1000 == 0)
		snprintf(buf, len, "%llds", (long long)(ms / 1000));
	else
		snprintf(buf, len, "%lldms", (long long)ms);
}

/*
 * Fill bt with a trip of po: the kill matches po's patterns narrowed to
 * this call's per values, and to the tag named by who (the loop's intent
 * or agent class, -1 for none). Never an empty match: a policy that
 * matches everything gives a kill on team "*".
 */
static void
trip_fill(struct breaker_trip *bt, const struct policy *po,
    const char *const *attr, int who, const char *kind, int64_t kill_ms)
{
	int a, any = 0;

	memset(bt, 0, sizeof(*bt));
	bt->bt_policy = po;
	bt->bt_kind = kind;
	bt->bt_shadow = po->po_shadow;
	bt->bt_kill_ms = kill_ms;
	for (a = 0; a < POLICY_ATTR_MAX; a++) {
		if ((a < TAG_MAX && po->po_per[a]) || a == who)
			bt->bt_match[a] =
			    xstrdup(attr[a] != NULL ? attr[a] : "");
		else if (po->po_match[a] != NULL)
			bt->bt_match[a] = xstrdup(po->po_match[a]);
		any |= bt->bt_match[a] != NULL;
	}
	if (!any)
		bt->bt_match[TAG_TEAM] = xstrdup("*");
}

/* Free what a trip owns; it may be cleared again. */
void
breaker_trip_clear(struct breaker_trip *bt)
{
	int a;

	for (a = 0; a < POLICY_ATTR_MAX; a++) {
		free(bt->bt_match[a]);
		bt->bt_match[a] = NULL;
	}
}

/* The digest entry of sha in a loop scope, made (or recycled) if new. */
static struct bdigest *
loop_digest(struct bscope *bs, const unsigned char sha[32], int count)
{
	struct bdigest *bd;
	size_t i, old = 0;

	if (bs->bs_count != count) { /* new, or count changed by a reload */
		for (i = 0; i < bs->bs_ndig; i++)
			free(bs->bs_dig[i]);
		bs->bs_ndig = 0;
		bs->bs_count = count;
	}
	for (i = 0; i < bs->bs_ndig; i++) {
		if (memcmp(bs->bs_dig[i]->bd_sha, sha, 32) == 0)
			return (bs->bs_dig[i]);
		if (bs->bs_dig[i]->bd_last < bs->bs_dig[old]->bd_last)
			old = i;
	}
	if (bs->bs_ndig < BREAKER_LOOP_DIGESTS) {
		bd = xmalloc(sizeof(*bd) + (size_t)count * sizeof(int64_t));
		bs->bs_dig[bs->bs_ndig++] = bd;
	} else
		bd = bs->bs_dig[old]; /* seen least recently: evicted */
	memcpy(bd->bd_sha, sha, 32);
	bd->bd_n = bd->bd_head = 0;
	bd->bd_last = 0;
	return (bd);
}

/*
 * Before forwarding: record one request of body digest sha for every
 * policy with a loop breaker that matches the call. Returns 1 and fills
 * *out (clear it with breaker_trip_clear) when this request is the
 * count-th with the same body, for the same intent (or agent class when
 * the call has no intent), in less than `within`; else 0. Only the first
 * policy to trip is reported; the others trip on a later request.
 */
int
breaker_request(const struct policyset *ps, struct breaker_state *st,
    const char *const *attr, const unsigned char sha[32], int64_t now,
    struct breaker_trip *out)
{
	const struct policy *po;
	const struct policy_breakers *b;
	struct bscope *bs;
	struct bdigest *bd;
	char extra[TAG_VALUE_MAX + 96], within[32];
	int64_t first;
	size_t i;
	int who, tripped = 0;

	for (i = 0; ps != NULL && i < ps->ps_n; i++) {
		po = &ps->ps_pol[i];
		b = &po->po_breakers;
		if (b->pb_loop_count == 0 || !policy_matches(po, attr))
			continue;
		who = -1;
		if (attr[TAG_INTENT] != NULL && attr[TAG_INTENT][0] != '\0')
			who = TAG_INTENT;
		else if (attr[TAG_AGENT_CLASS] != NULL &&
		    attr[TAG_AGENT_CLASS][0] != '\0')
			who = TAG_AGENT_CLASS;
		snprintf(extra, sizeof(extra), "|%d,%lld,%d|%s=%s",
		    b->pb_loop_count, (long long)b->pb_loop_within_ms,
		    po->po_shadow, who == -1 ? "" : tag_name((enum tag)who),
		    who == -1 ? "" : attr[who]);
		bs =
		    bscope_get(st, bkey("loop", po, attr, extra), BS_LOOP, now);
		if (b->pb_loop_within_ms > bs->bs_span_ms)
			bs->bs_span_ms = b->pb_loop_within_ms;
		bd = loop_digest(bs, sha, b->pb_loop_count);
		bd->bd_last = now;
		bd->bd_t[bd->bd_head] = now;
		bd->bd_head = (bd->bd_head + 1) % (size_t)bs->bs_count;
		if (bd->bd_n < (size_t)bs->bs_count)
			bd->bd_n++;
		if (tripped || bd->bd_n < (size_t)bs->bs_count ||
		    now < bs->bs_quiet_until)
			continue;
		/* Full ring: the slot about to be written is the oldest. */
		first = bd->bd_t[bd->bd_head];
		if (now - first >= b->pb_loop_within_ms)
			continue;
		trip_fill(out, po, attr, who, "loop", b->pb_loop_kill_ms);
		fmt_dur(b->pb_loop_within_ms, within, sizeof(within));
		snprintf(out->bt_evidence, sizeof(out->bt_evidence),
		    "loop: the same request body (sha256 "
		    "%02x%02x%02x%02x%02x%02x...) %d times in %lld ms%s%.80s "
		    "(limit: %d within %.16s)",
		    sha[0], sha[1], sha[2], sha[3], sha[4], sha[5],
		    bs->bs_count, (long long)(now - first),
		    who == -1 ? "" : " for ",
		    who == -1 ? "" : strrchr(extra, '|') + 1, bs->bs_count,
		    within);
		bd->bd_n = bd->bd_head = 0; /* N fresh repeats to trip again */
		bs->bs_quiet_until = now + b->pb_loop_kill_ms;
		tripped = 1;
	}
	return (tripped);
}

/* Add to the bucket of now, clearing it if it held an older one. */
static void
ring_add(struct bscope *bs, int64_t now, int64_t nusd, int is_error)
{
	int64_t id = floor_div(now, bs->bs_width);
	size_t s =
	    (size_t)(((id % BREAKER_SLOTS) + BREAKER_SLOTS) % BREAKER_SLOTS);

	if (bs->bs_id[s] != id) {
		bs->bs_id[s] = id;
		bs->bs_spend[s] = bs->bs_calls[s] = bs->bs_errors[s] = 0;
	}
	bs->bs_spend[s] += nusd;
	bs->bs_calls[s]++;
	bs->bs_errors[s] += is_error != 0;
}

/* Sums over the bucket of now and the BREAKER_SLOTS - 1 before it. */
static void
ring_sum(const struct bscope *bs, int64_t now, int64_t *spend, int64_t *calls,
    int64_t *errors)
{
	int64_t id = floor_div(now, bs->bs_width);
	size_t s;

	*spend = *calls = *errors = 0;
	for (s = 0; s < BREAKER_SLOTS; s++) {
		if (bs->bs_id[s] > id || bs->bs_id[s] <= id - BREAKER_SLOTS)
			continue;
		*spend += bs->bs_spend[s];
		*calls += bs->bs_calls[s];
		*errors += bs->bs_errors[s];
	}
}

/* A bucketed scope with the given bucket width; reset if it changed. */
static struct bscope *
ring_scope(struct breaker_state *st, char *key, enum bscope_kind kind,
    int64_t width, int64_t now)
{
	struct bscope *bs = bscope_get(st, key, kind, now);
	size_t s;

	if (bs->bs_width != width) {
		bs->bs_width = width;
		for (s = 0; s < BREAKER_SLOTS; s++) {
			bs->bs_id[s] = INT64_MIN;
			bs->bs_spend[s] = bs->bs_calls[s] = 0;
			bs->bs_errors[s] = 0;
		}
	}
	bs->bs_span_ms = width * BREAKER_SLOTS;
	return (bs);
}

/*
 * After a call has ended: count its cost (nano-USD) and whether it was an
 * error on every matching policy with a velocity or error_spike breaker,
 * and fill up to max trips into out. Returns how many were filled; a
 * breaker beyond max is not marked and trips on a later call.
 *
 * velocity trips when the spend settled in the last 60 s (one-second
 * buckets) is above usd_per_minute. error_spike trips when, over the
 * window (60 buckets of window/60), at least min_calls calls ended, the
 * errors among them reach ratio, and their spend reaches min_spend_usd.
 */
size_t
breaker_settle(const struct policyset *ps, struct breaker_state *st,
    const char *const *attr, int64_t cost_nusd, int is_error, int64_t now,
    struct breaker_trip *out, size_t max)
{
	const struct policy *po;
	const struct policy_breakers *b;
	struct bscope *bs;
	char key[128], a1[32], a2[32], a3[32];
	int64_t spend, calls, errors;
	size_t i, n = 0;

	if (cost_nusd < 0)
		cost_nusd = 0;
	for (i = 0; ps != NULL && i < ps->ps_n; i++) {
		po = &ps->ps_pol[i];
		b = &po->po_breakers;
		if ((b->pb_vel_nusd < 0 && b->pb_err_ppm < 0) ||
		    !policy_matches(po, attr))
			continue;
		if (b->pb_vel_nusd >= 0) {
			snprintf(key, sizeof(key), "|%lld,%d",
			    (long long)b->pb_vel_nusd, po->po_shadow);
			bs = ring_scope(st, bkey("velocity", po, attr, key),
			    BS_VELOCITY, 1000, now);
			ring_add(bs, now, cost_nusd, is_error);
			ring_sum(bs, now, &spend, &calls, &errors);
			if (n < max && spend > b->pb_vel_nusd &&
			    now >= bs->bs_quiet_until) {
				trip_fill(&out[n], po, attr, -1, "velocity",
				    b->pb_vel_kill_ms);
				fmt_usd(spend, a1, sizeof(a1));
				fmt_usd(b->pb_vel_nusd, a2, sizeof(a2));
				snprintf(out[n].bt_evidence,
				    sizeof(out[n].bt_evidence),
				    "velocity: $%s settled in the last minute "
				    "over %lld calls (limit: $%s per minute)",
				    a1, (long long)calls, a2);
				bs->bs_quiet_until = now + b->pb_vel_kill_ms;
				n++;
			}
		}
		if (b->pb_err_ppm >= 0) {
			snprintf(key, sizeof(key), "|%lld,%lld,%lld,%d,%d",
			    (long long)b->pb_err_window_ms,
			    (long long)b->pb_err_ppm,
			    (long long)b->pb_err_min_nusd, b->pb_err_min_calls,
			    po->po_shadow);
			bs = ring_scope(st, bkey("error", po, attr, key),
			    BS_ERROR, b->pb_err_window_ms / BREAKER_SLOTS, now);
			ring_add(bs, now, cost_nusd, is_error);
			ring_sum(bs, now, &spend, &calls, &errors);
			if (n < max && calls >= b->pb_err_min_calls &&
			    errors * 1000000 >= b->pb_err_ppm * calls &&
			    spend >= b->pb_err_min_nusd &&
			    now >= bs->bs_quiet_until) {
				trip_fill(&out[n], po, attr, -1, "error_spike",
				    b->pb_err_kill_ms);
				fmt_usd(spend, a1, sizeof(a1));
				fmt_dur(b->pb_err_window_ms, a2, sizeof(a2));
				fmt_usd(b->pb_err_ppm * 1000, a3, sizeof(a3));
				snprintf(out[n].bt_evidence,
				    sizeof(out[n].bt_evidence),
				    "error_spike: %lld of %lld calls failed "
				    "with $%s spent in the last %s (limit: "
				    "ratio %s over at least %d calls)",
				    (long long)errors, (long long)calls, a1, a2,
				    a3, b->pb_err_min_calls);
				bs->bs_quiet_until = now + b->pb_err_kill_ms;
				n++;
			}
		}
	}
	return (n);
}

/*
 * Drop the scopes that can no longer trip: nothing they hold still
 * counts at now, and no trip keeps them quiet. Returns how many.
 */
size_t
breaker_gc(struct breaker_state *st, int64_t now)
{
	struct bscope *bs, *next;
	size_t n = 0;

	for (bs = TAILQ_FIRST(&st->bst_lru); bs != NULL; bs = next) {
		next = TAILQ_NEXT(bs, bs_lru);
		if (now - bs->bs_last < bs->bs_span_ms ||
		    now < bs->bs_quiet_until)
			continue;
		bscope_drop(st, bs);
		n++;
	}
	return (n);
}
