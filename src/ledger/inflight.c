/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The calls in flight, in memory, on the loop thread: each reserved call's
 * row as it was reserved, by id, from its reservation until its
 * settlement (or withdrawal). Their rows are in the journal, not yet in
 * SQLite, so this is what finds a request id already in use, what is
 * written again at the head of a new journal segment, and what /v1/calls
 * shows as in_flight. A chained hash that doubles, and a list in the
 * order of reservation.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tollgate/util.h"

#include "ledger_int.h"

#define INFLIGHT_BUCKETS_MIN 256

static uint64_t
id_hash(const char *s)
{
	uint64_t h = 1469598103934665603ULL; /* FNV-1a */

	for (; *s != '\0'; s++) {
		h ^= (unsigned char)*s;
		h *= 1099511628211ULL;
	}
	return (h);
}

/* An empty table. */
void
inflight_init(struct ledger_inflight *t)
{
	memset(t, 0, sizeof(*t));
	TAILQ_INIT(&t->if_all);
	t->if_nbuckets = INFLIGHT_BUCKETS_MIN;
	t->if_buckets = xcalloc(t->if_nbuckets, sizeof(*t->if_buckets));
}

static void
grow(struct ledger_inflight *t)
{
	struct ledger_item **nb, *it;
	size_t n = t->if_nbuckets * 2, b;

	nb = xcalloc(n, sizeof(*nb));
	TAILQ_FOREACH(it, &t->if_all, li_open)
	{
		b = id_hash(it->li_row.lr_id) & (n - 1);
		it->li_hnext = nb[b];
		nb[b] = it;
	}
	free(t->if_buckets);
	t->if_buckets = nb;
	t->if_nbuckets = n;
}

/* The call in flight with this id, or NULL. */
struct ledger_item *
inflight_find(const struct ledger_inflight *t, const char *id)
{
	struct ledger_item *it;

	it = t->if_buckets[id_hash(id) & (t->if_nbuckets - 1)];
	for (; it != NULL; it = it->li_hnext)
		if (strcmp(it->li_row.lr_id, id) == 0)
			return (it);
	return (NULL);
}

/* Add a call; its id must not be in the table (inflight_find first). */
void
inflight_add(struct ledger_inflight *t, struct ledger_item *it)
{
	size_t b;

	if (t->if_n >= t->if_nbuckets)
		grow(t);
	b = id_hash(it->li_row.lr_id) & (t->if_nbuckets - 1);
	it->li_hnext = t->if_buckets[b];
	t->if_buckets[b] = it;
	TAILQ_INSERT_TAIL(&t->if_all, it, li_open);
	t->if_n++;
}

/* Take a call out of the table (the caller owns it again). */
void
inflight_remove(struct ledger_inflight *t, struct ledger_item *it)
{
	struct ledger_item **pp;

	pp = &t->if_buckets[id_hash(it->li_row.lr_id) & (t->if_nbuckets - 1)];
	for (; *pp != NULL; pp = &(*pp)->li_hnext)
		if (*pp == it) {
			*pp = it->li_hnext;
			break;
		}
	TAILQ_REMOVE(&t->if_all, it, li_open);
	it->li_hnext = NULL;
	t->if_n--;
}

/* Free every call left and the table. */
void
inflight_free(struct ledger_inflight *t)
{
	struct ledger_item *it;

	while ((it = TAILQ_FIRST(&t->if_all)) != NULL) {
		TAILQ_REMOVE(&t->if_all, it, li_open);
		free(it);
	}
	free(t->if_buckets);
	memset(t, 0, sizeof(*t));
}
