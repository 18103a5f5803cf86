/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Private to src/alerts/: what query.c, reading the ledger, hands to
 * alerts.c, which owns the deliveries. The public contract is
 * include/tollgate/alerts.h.
 */
#ifndef TOLLGATE_ALERTS_INT_H
#define TOLLGATE_ALERTS_INT_H

struct alert;

/* alerts.c */
void alerts_requeue(const struct alert *, const char *);

#endif
