/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Helpers the policy tests share: UTC times by the C library (not by the
 * code under test), policy_parse run on a YAML string, a call with tags
 * and a fixed worst case, and a check of one scope's spent and reserved.
 * Included by tests/unit/test_policy.c and test_policy_admit.c only.
 */
#ifndef TOLLGATE_POLICYTEST_H
#define TOLLGATE_POLICYTEST_H

#define USD 1000000000LL
#define CENT 10000000LL

/* Unix ms of a UTC time, by the C library rather than the code tested. */
static int64_t
utc(int y, int mo, int d, int h, int mi, int s)
{
	struct tm tm;

	memset(&tm, 0, sizeof(tm));
	tm.tm_year = y - 1900;
	tm.tm_mon = mo - 1;
	tm.tm_mday = d;
	tm.tm_hour = h;
	tm.tm_min = mi;
	tm.tm_sec = s;
	return ((int64_t)timegm(&tm) * 1000);
}

#include "policyload.h"

/* 2026-11-28T12:00:00.500Z, half a second into a minute. */
#define T0 (utc(2026, 11, 28, 12, 0, 0) + 500)

static struct policy_call
mkcall(const char *team, const char *tenant, const char *model, int64_t worst)
{
	struct policy_call c;

	memset(&c, 0, sizeof(c));
	c.pc_attr[TAG_TEAM] = team;
	c.pc_attr[TAG_TENANT] = tenant;
	c.pc_attr[POLICY_ATTR_MODEL] = model;
	c.pc_attr[POLICY_ATTR_PROVIDER] = "openai";
	c.pc_info.ci_max_output = -1;
	c.pc_info.ci_n = 1;
	c.pc_unpriced_nusd = worst;
	return (c);
}

/* spent and reserved of ps's policy i for call c at now. */
static void
budget_is(const struct policyset *ps, size_t i, struct policy_counters *pc,
    const struct policy_call *c, int64_t now, int64_t spent, int64_t reserved)
{
	struct policy_scope sc;

	policy_budget(&ps->ps_pol[i], pc, c->pc_attr, now, &sc);
	assert_int_equal(sc.sc_spent, spent);
	assert_int_equal(sc.sc_reserved, reserved);
}

#endif
