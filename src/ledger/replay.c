/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Start-up's reading of the journal a stopped or crashed run left beside
 * the ledger: every segment, in order, record by record (journal.c).
 * A settlement becomes its final row; a reservation with no settlement
 * after it becomes an interrupted row charged at its reservation (the
 * call went upstream and a crash never frees budget); a withdrawal cancels
 * its reservation. All of it is inserted in one transaction, a row whose
 * id the ledger has already skipped, so reading the same journal twice
 * changes nothing; a row SQLite itself refuses is given up alone, as the
 * writer gave it up; the segments are deleted only after the commit. See
 * docs/internals/ledger.md, The reservation journal.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "tollgate/ledger.h"
#include "tollgate/log.h"
#include "tollgate/util.h"

#include "ledger_int.h"

struct replay {
	struct ledger_inflight rp_open; /* reserved, not (yet) settled */
	struct ledger_items rp_final; /* the rows to insert, in order */
	uint64_t rp_records;
	uint64_t rp_bad; /* records whose row the ledger refuses */
};

static void
forget(struct replay *rp, const char *id)
{
	struct ledger_item *it;

	if ((it = inflight_find(&rp->rp_open, id)) != NULL) {
		inflight_remove(&rp->rp_open, it);
		free(it);
	}
}

static void
replay_cb(enum journal_rec t, const struct ledger_row *row, void *arg)
{
	struct replay *rp = arg;
	struct ledger_item *it;

	rp->rp_records++;
	if (row->lr_id == NULL || row->lr_id[0] == '\0') {
		rp->rp_bad++;
		return;
	}
	forget(rp, row->lr_id);
	if (t == JOURNAL_WITHDRAW)
		return;
	it = ledger_item_new(
	    t == JOURNAL_RESERVE ? LEDGER_OP_RESERVE : LEDGER_OP_SETTLE, row);
	if (it == NULL) {
		rp->rp_bad++;
		return;
	}
	if (t == JOURNAL_RESERVE)
		inflight_add(&rp->rp_open, it);
	else
		TAILQ_INSERT_TAIL(&rp->rp_final, it, li_entry);
}

/*
 * Replay the journal beside the ledger at path into d (open, before the
 * writer starts). *next is the number for the next segment; *settled and
 * *interrupted count the rows written. 0, or -1 with *cause: nothing was
 * written and the segments are kept.
 */
int
ledger_replay(struct ledger_db *d, const char *path, uint64_t *next,
    uint64_t *settled, uint64_t *interrupted, char **cause)
{
	struct replay rp;
	struct ledger_item *it;
	uint64_t *segs = NULL, nint = 0;
	int64_t now = ledger_now_ms();
	size_t i, nsegs, torn;
	char *name, idbuf[80];
	int rv = -1;

	*next = 1;
	*settled = *interrupted = 0;
	if (journal_segments(path, &segs, &nsegs, cause) != 0)
		return (-1);
	if (nsegs == 0)
		return (0);
	memset(&rp, 0, sizeof(rp));
	inflight_init(&rp.rp_open);
	TAILQ_INIT(&rp.rp_final);
	for (i = 0; i < nsegs; i++) {
		name = journal_name(path, segs[i]);
		if (journal_read(name, replay_cb, &rp, &torn, cause) == -1) {
			free(name);
			goto out;
		}
		if (torn > 0)
			log_warnx("ledger: journal %s: the last %zu bytes are "
				  "a record cut short (a crash while it was "
				  "written); ignored",
			    name, torn);
		free(name);
	}
	/* What never settled went upstream: charged at its reservation. */
	while ((it = TAILQ_FIRST(&rp.rp_open.if_all)) != NULL) {
		inflight_remove(&rp.rp_open, it);
		it->li_op = LEDGER_OP_SETTLE;
		it->li_row.lr_status = CALL_INTERRUPTED;
		it->li_row.lr_finished_ms = now;
		it->li_row.lr_cost_nusd = it->li_row.lr_reserved_nusd;
		if (it->li_row.lr_usage_source == USAGE_NONE)
			it->li_row.lr_usage_source = USAGE_ESTIMATED;
		it->li_seq = 1; /* counted below as interrupted */
		TAILQ_INSERT_TAIL(&rp.rp_final, it, li_entry);
	}
	/*
	 * A row SQLite itself refuses (a constraint) was given up by the
	 * writer too, and would be refused at every start: it is given up
	 * alone, so the rest is written and tollgate starts.
	 */
	while (!TAILQ_EMPTY(&rp.rp_final) &&
	    ledger_db_apply(d, &rp.rp_final) != 0) {
		if ((it = d->db_failed_item) == NULL ||
		    !ledger_db_blames_row(d->db_err)) {
			xasprintf(cause,
			    "replaying the journal: %s (SQLite error %d); its "
			    "segments are kept",
			    d->db_errmsg, d->db_err);
			goto out;
		}
		log_warnx("ledger: journal: %s: its row is refused: %s "
			  "(SQLite error %d); not written",
		    ledger_item_what(it, idbuf, sizeof(idbuf)), d->db_errmsg,
		    d->db_err);
		TAILQ_REMOVE(&rp.rp_final, it, li_entry);
		free(it);
		rp.rp_bad++;
	}
	TAILQ_FOREACH(it, &rp.rp_final, li_entry)
	{
		if (!it->li_changed)
			continue;
		if (it->li_seq == 1)
			nint++;
		else
			(*settled)++;
	}
	*interrupted = nint;
	if (rp.rp_bad > 0)
		log_warnx("ledger: journal: %" PRIu64 " records could not be "
			  "read as rows; skipped",
		    rp.rp_bad);
	log_info("ledger: journal: %" PRIu64
		 " records in %zu segment%s: %" PRIu64 " rows written, %" PRIu64
		 " of them interrupted calls "
		 "charged at their reservation",
	    rp.rp_records, nsegs, nsegs == 1 ? "" : "s", *settled + nint, nint);
	if (nint > 0)
		log_warnx("ledger: %" PRIu64 " calls in flight when the last "
			  "run stopped are now interrupted, charged at their "
			  "reservation",
		    nint);
	for (i = 0; i < nsegs; i++)
		journal_unlink(path, segs[i]);
	*next = segs[nsegs - 1] + 1;
	rv = 0;
out:
	while ((it = TAILQ_FIRST(&rp.rp_final)) != NULL) {
		TAILQ_REMOVE(&rp.rp_final, it, li_entry);
		free(it);
	}
	inflight_free(&rp.rp_open);
	free(segs);
	return (rv);
}
