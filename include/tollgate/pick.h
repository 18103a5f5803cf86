/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Which of an upstream's base URLs and keys a call is sent with: by
 * weight among the healthy ones (smooth weighted round robin, so calls
 * are spread by weight however few there are), a URL or key that got a
 * 429 or would not connect left out until a given time. The state is the
 * process's, keyed by upstream name and URL or key fingerprint, so it
 * outlives a reload that keeps them. Times are milliseconds of the
 * monotonic clock (pick_now), so a wall clock stepped back or forward
 * neither keeps a key out for hours nor lets it back early.
 */
#ifndef TOLLGATE_PICK_H
#define TOLLGATE_PICK_H

#include <stdint.h>

struct upstream_conf;

/* What pick_choose chose: indexes into uc_urls and uc_keys. */
struct pick {
	int pk_url;
	int pk_key; /* -1: no key wanted, or the upstream has none */
};

/* pick.c */
int pick_choose(
    const struct upstream_conf *, int, int64_t, struct pick *, int64_t *);
void pick_out_url(const struct upstream_conf *, int, int64_t);
void pick_out_key(const struct upstream_conf *, int, int64_t);
int64_t pick_ready_at(const struct upstream_conf *, int, int64_t);
void pick_reset(void);
int64_t pick_now(void);

#endif
