/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The choice of base URL and key for one attempt of a call, and the
 * health that choice reads. An upstream's URLs (base_url, one or a
 * weighted list) and keys (api_key_env, or keys_env's list) are each
 * chosen by smooth weighted round robin (nginx's: every candidate gains
 * its weight, the richest is chosen and pays the total back), which
 * spreads calls exactly by weight over any run of them; keys all weigh
 * one, so they take turns. A candidate that got a 429 is left out for
 * its retry-after, one that would not connect for a short while
 * (relay.c and session_retry.c say when); left out, it is skipped until
 * then, and when every candidate is out the one back soonest is given,
 * with the time it is back, so the caller can wait for it or go
 * elsewhere.
 *
 * The state is one small table for the process, keyed by upstream name
 * and URL or key fingerprint (never the key), so a reload that keeps an
 * upstream's URLs and keys keeps their health and turns; entries of
 * names no config has any more are reused once full. It lives on the
 * event loop's thread only.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "tollgate/config.h"
#include "tollgate/pick.h"
#include "tollgate/util.h"

#define PICK_STATE_MAX 256
#define PICK_ID_MAX 200

enum pick_kind {
	PICK_URL,
	PICK_KEY,
};

/* One URL or key of one upstream. */
struct pstate {
	int ps_used;
	enum pick_kind ps_kind;
	char ps_up[65]; /* the upstream's name */
	char ps_id[PICK_ID_MAX]; /* its URL, or its key's fingerprint */
	int64_t ps_until; /* pick_now ms: left out until then; 0: healthy */
	int64_t ps_cw; /* its current weight, for the round robin */
	int64_t ps_seen; /* pick_now ms it was last looked up, to reuse */
};

static struct pstate pick_state[PICK_STATE_MAX];

/* The entry of candidate i of uc (a URL or key), made if need be. */
static struct pstate *
state_get(
    const struct upstream_conf *uc, enum pick_kind kind, int i, int64_t now)
{
	struct pstate *ps, *old = NULL;
	const char *id =
	    kind == PICK_URL ? uc->uc_urls[i].uu_url : uc->uc_key_fps[i];
	size_t n;

	for (n = 0; n < PICK_STATE_MAX; n++) {
		ps = &pick_state[n];
		if (!ps->ps_used) {
			if (old == NULL || old->ps_used)
				old = ps;
			continue;
		}
		if (ps->ps_kind == kind &&
		    strcmp(ps->ps_up, uc->uc_name) == 0 &&
		    strncmp(ps->ps_id, id, sizeof(ps->ps_id) - 1) == 0) {
			ps->ps_seen = now;
			return (ps);
		}
		/* Reuse the longest unseen entry when the table is full. */
		if (old == NULL || (old->ps_used && ps->ps_seen < old->ps_seen))
			old = ps;
	}
	memset(old, 0, sizeof(*old));
	old->ps_used = 1;
	old->ps_kind = kind;
	strcopy(old->ps_up, sizeof(old->ps_up), uc->uc_name);
	strcopy(old->ps_id, sizeof(old->ps_id), id);
	old->ps_seen = now;
	return (old);
}

/*
 * Choose among n candidates of uc by weight, the healthy ones first.
 * Returns the index; *back is 0, or when none is healthy the time the
 * chosen one (the one back soonest) is back.
 */
static int
choose(const struct upstream_conf *uc, enum pick_kind kind, int n, int64_t now,
    int64_t *back)
{
	struct pstate *ps[UPSTREAM_URLS_MAX > UPSTREAM_KEYS_MAX
		? UPSTREAM_URLS_MAX
		: UPSTREAM_KEYS_MAX];
	int64_t total = 0, w;
	int i, best = -1, soon = 0;

	*back = 0;
	for (i = 0; i < n; i++) {
		ps[i] = state_get(uc, kind, i, now);
		if (ps[i]->ps_until != 0 && ps[i]->ps_until <= now)
			ps[i]->ps_until = 0; /* its time out is over */
		if (ps[i]->ps_until < ps[soon]->ps_until)
			soon = i;
		if (ps[i]->ps_until != 0)
			continue;
		w = kind == PICK_URL ? uc->uc_urls[i].uu_weight : 1;
		ps[i]->ps_cw += w;
		total += w;
		if (best == -1 || ps[i]->ps_cw > ps[best]->ps_cw)
			best = i;
	}
	if (best == -1) {
		*back = ps[soon]->ps_until;
		return (soon);
	}
	ps[best]->ps_cw -= total;
	return (best);
}

/*
 * Choose the URL, and when want_key the key, uc's next attempt goes
 * with, into *pk. Returns 0 when both are healthy, or 1 with *back the
 * Unix ms at which the ones chosen (the soonest back) are.
 */
int
pick_choose(const struct upstream_conf *uc, int want_key, int64_t now,
    struct pick *pk, int64_t *back)
{
	int64_t ub, kb = 0;

	pk->pk_url = choose(uc, PICK_URL, (int)uc->uc_nurls, now, &ub);
	pk->pk_key = -1;
	if (want_key && uc->uc_nkeys > 0)
		pk->pk_key = choose(uc, PICK_KEY, (int)uc->uc_nkeys, now, &kb);
	*back = ub > kb ? ub : kb;
	return (*back != 0);
}

/* When the first of n candidates of uc is back (Unix ms); 0: one is in. */
static int64_t
soonest(const struct upstream_conf *uc, enum pick_kind kind, int n, int64_t now)
{
	struct pstate *ps;
	int64_t best = -1;
	int i;

	for (i = 0; i < n; i++) {
		ps = state_get(uc, kind, i, now);
		if (ps->ps_until != 0 && ps->ps_until <= now)
			ps->ps_until = 0;
		if (best == -1 || ps->ps_until < best)
			best = ps->ps_until;
	}
	return (best < 0 ? 0 : best);
}

/*
 * When uc can next be sent a call (Unix ms): one of its URLs in and,
 * when want_key, one of its keys; 0 when it can now. A lookup that
 * takes no turn.
 */
int64_t
pick_ready_at(const struct upstream_conf *uc, int want_key, int64_t now)
{
	int64_t u, k = 0;

	u = soonest(uc, PICK_URL, (int)uc->uc_nurls, now);
	if (want_key && uc->uc_nkeys > 0)
		k = soonest(uc, PICK_KEY, (int)uc->uc_nkeys, now);
	return (u > k ? u : k);
}

/* Leave uc's URL number url out until Unix ms until. */
void
pick_out_url(const struct upstream_conf *uc, int url, int64_t until)
{
	struct pstate *ps;

	if (url < 0 || (size_t)url >= uc->uc_nurls)
		return;
	ps = state_get(uc, PICK_URL, url, pick_now());
	if (until > ps->ps_until)
		ps->ps_until = until;
}

/* Leave uc's key number key out until Unix ms until. */
void
pick_out_key(const struct upstream_conf *uc, int key, int64_t until)
{
	struct pstate *ps;

	if (key < 0 || (size_t)key >= uc->uc_nkeys)
		return;
	ps = state_get(uc, PICK_KEY, key, pick_now());
	if (until > ps->ps_until)
		ps->ps_until = until;
}

/* Forget every health and turn (the unit tests start afresh). */
void
pick_reset(void)
{
	memset(pick_state, 0, sizeof(pick_state));
}

/* The clock of every time here: monotonic milliseconds. */
int64_t
pick_now(void)
{
	return ((int64_t)(monotime_us() / 1000));
}
