/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Costs that are not LLM calls: a search API, a tool, compute minutes, a
 * SaaS seat, reported by the agent or its platform through POST /v1/usage
 * (src/admin/usage.c). Each is one ledger row (provider = its source,
 * endpoint = "external"), idempotent by its id, that counts against the
 * budgets whose match it meets, fires their alerts, and is in spend, the
 * CSV export and the metrics like any call's cost. Loop thread only.
 */
#ifndef TOLLGATE_EXTERNAL_H
#define TOLLGATE_EXTERNAL_H

#include <stdint.h>

#include "tollgate/tags.h"

struct external_req;

/* One cost, as the admin API read it; strings borrowed. */
struct external_cost {
	const char *ec_id; /* the caller's idempotency key: the row's id */
	const char *ec_source; /* [a-z0-9_.-], the row's provider */
	const char *ec_unit; /* [a-z0-9_.-] or NULL; the row's model */
	int64_t ec_units; /* > 0 when priced from external:; else 0 */
	int64_t ec_nusd; /* the amount when given; -1: price the units */
	const char *ec_tags[TAG_MAX]; /* NULL when unset */
};

enum external_result {
	EXTERNAL_RECORDED, /* a new row, counted */
	EXTERNAL_DUPLICATE, /* a row with this id exists: nothing counted */
	EXTERNAL_UNAVAILABLE, /* the ledger could not take it */
};

/* Runs on the loop with the outcome and the cost, in nano-USD. */
typedef void (*external_cb)(void *, enum external_result, int64_t);

/* Why external_record refused a cost at once. */
enum external_refusal {
	EXTERNAL_BAD_UNIT, /* the price file has no price for it (400) */
	EXTERNAL_BAD_AMOUNT, /* more than EXTERNAL_COST_MAX_NUSD (400) */
	EXTERNAL_BUSY, /* the ledger takes no more writes now (503) */
	EXTERNAL_IN_PROGRESS, /* its id is being recorded now (409) */
};

/* The largest cost one request may record: $1,000,000, in nano-USD. */
#define EXTERNAL_COST_MAX_NUSD 1000000000000000LL

/* external.c */
struct external_req *external_record(const struct external_cost *, external_cb,
    void *, enum external_refusal *, char **);
void external_cancel(struct external_req *);

#endif
