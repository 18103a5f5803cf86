/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The journal's syncer thread, under durability: power. The loop writes a
 * turn's records and tells the syncer how far the segment must reach the
 * disk (syncer_want); the syncer runs fdatasync on its own copy of the
 * segment's descriptor and says how far it got (syncer_done), waking the
 * loop through the ledger's eventfd. Calls admitted while a sync runs
 * share the next one, and each call waits only for the sync that covers
 * its record. A segment the loop has moved on from is synced whole, and
 * its directory entry with the first sync of the next, before anything
 * later is said to be on disk. A sync that fails marks its segment bad
 * for good: after a failed fsync Linux may report the next one of the
 * same file as a success though the pages never reached the disk, so
 * nothing in a bad segment is ever said to be on disk, and the loop,
 * told once (syncer_failed_take), refuses what waits and starts another
 * segment. See docs/internals/ledger.md.
 */
#include <sys/queue.h>

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tollgate/log.h"
#include "tollgate/util.h"

#include "ledger_int.h"

/* A segment the loop has left: synced whole, then closed. */
struct sync_old {
	TAILQ_ENTRY(sync_old) so_entry;
	int so_fd;
	uint64_t so_seg;
};
TAILQ_HEAD(sync_olds, sync_old);

struct ledger_syncer {
	pthread_t sy_thread;
	pthread_mutex_t sy_lock;
	pthread_cond_t sy_wake;
	int sy_efd; /* the ledger's eventfd: wakes the loop; borrowed */
	int sy_dirfd; /* the journal's directory */

	/* Under sy_lock. */
	int sy_stop;
	int sy_fd; /* the current segment (a dup), or -1 */
	uint64_t sy_seg;
	int64_t sy_want; /* its bytes to sync */
	int sy_dir_dirty; /* a segment was created since the last fsync */
	struct sync_olds sy_old;
	uint64_t sy_done_seg; /* what is on disk: every segment before */
	int64_t sy_done; /* and this many bytes of sy_done_seg */
	uint64_t sy_bad_seg; /* the last segment whose sync failed, or 0 */
	int sy_failed; /* a sync failed since syncer_failed_take */
	uint64_t sy_syncs;
	uint64_t sy_sync_us_total;
};

/* fdatasync, and note how long it took. Lock not held. */
static int
timed_sync(struct ledger_syncer *sy, int fd, int full)
{
	long long t0 = monotime_us(), us;
	int rc;

	rc = full ? fsync(fd) : fdatasync(fd);
	us = monotime_us() - t0;
	pthread_mutex_lock(&sy->sy_lock);
	sy->sy_syncs++;
	sy->sy_sync_us_total += (uint64_t)us;
	pthread_mutex_unlock(&sy->sy_lock);
	return (rc);
}

static void
wake_loop(struct ledger_syncer *sy)
{
	uint64_t one = 1;

	if (write(sy->sy_efd, &one, sizeof(one)) == -1 && errno != EAGAIN)
		log_warn("ledger: eventfd write");
}

/* Segment seg could not be synced: it is bad for good. Lock held. */
static void
failed(struct ledger_syncer *sy, uint64_t seg)
{
	sy->sy_failed = 1;
	if (seg > sy->sy_bad_seg)
		sy->sy_bad_seg = seg;
}

static void *
syncer_main(void *arg)
{
	struct ledger_syncer *sy = arg;
	struct sync_old *so;
	uint64_t seg;
	int64_t want;
	int fd, dir, rc;

	pthread_mutex_lock(&sy->sy_lock);
	for (;;) {
		if ((so = TAILQ_FIRST(&sy->sy_old)) != NULL) {
			TAILQ_REMOVE(&sy->sy_old, so, so_entry);
			if (so->so_seg <= sy->sy_bad_seg) {
				/* Bad already: nothing to gain by trying. */
				close(so->so_fd);
				free(so);
				continue;
			}
			pthread_mutex_unlock(&sy->sy_lock);
			rc = timed_sync(sy, so->so_fd, 0);
			if (rc == -1)
				log_warn("ledger: journal segment %llu: "
					 "fdatasync",
				    (unsigned long long)so->so_seg);
			close(so->so_fd);
			pthread_mutex_lock(&sy->sy_lock);
			if (rc == -1)
				failed(sy, so->so_seg);
			else if (so->so_seg >= sy->sy_done_seg &&
			    so->so_seg > sy->sy_bad_seg) {
				sy->sy_done_seg = so->so_seg;
				sy->sy_done = INT64_MAX;
			}
			free(so);
			continue;
		}
		/* A bad segment is never synced again: the loop leaves it. */
		if (sy->sy_fd != -1 && sy->sy_seg > sy->sy_bad_seg &&
		    (sy->sy_done_seg != sy->sy_seg ||
			sy->sy_done < sy->sy_want)) {
			fd = sy->sy_fd;
			seg = sy->sy_seg;
			want = sy->sy_want;
			dir = sy->sy_dir_dirty;
			sy->sy_dir_dirty = 0;
			pthread_mutex_unlock(&sy->sy_lock);
			/* The new segment's name first, then its bytes. */
			rc = dir ? timed_sync(sy, sy->sy_dirfd, 1) : 0;
			if (rc == 0)
				rc = timed_sync(sy, fd, 0);
			if (rc == -1)
				log_warn("ledger: journal segment %llu: sync",
				    (unsigned long long)seg);
			pthread_mutex_lock(&sy->sy_lock);
			if (rc == -1)
				failed(sy, seg);
			else if (seg > sy->sy_bad_seg &&
			    (seg > sy->sy_done_seg ||
				(seg == sy->sy_done_seg &&
				    want > sy->sy_done))) {
				sy->sy_done_seg = seg;
				sy->sy_done = want;
			}
			pthread_mutex_unlock(&sy->sy_lock);
			wake_loop(sy);
			pthread_mutex_lock(&sy->sy_lock);
			continue;
		}
		if (sy->sy_stop)
			break;
		pthread_cond_wait(&sy->sy_wake, &sy->sy_lock);
	}
	pthread_mutex_unlock(&sy->sy_lock);
	return (NULL);
}

/*
 * Start the syncer for the journal beside the ledger at path; efd wakes
 * the loop. NULL, with *cause, when the directory cannot be opened or the
 * thread started.
 */
struct ledger_syncer *
syncer_start(const char *path, int efd, char **cause)
{
	struct ledger_syncer *sy;
	char *copy = xstrdup(path);
	int error;

	sy = xcalloc(1, sizeof(*sy));
	sy->sy_efd = efd;
	sy->sy_fd = -1;
	TAILQ_INIT(&sy->sy_old);
	sy->sy_dirfd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	free(copy);
	if (sy->sy_dirfd == -1) {
		xasprintf(cause, "journal directory: %s", strerror(errno));
		free(sy);
		return (NULL);
	}
	pthread_mutex_init(&sy->sy_lock, NULL);
	pthread_cond_init(&sy->sy_wake, NULL);
	if ((error = thread_start(
		 &sy->sy_thread, "tg-sync", syncer_main, sy)) != 0) {
		xasprintf(cause, "syncer: pthread_create: %s", strerror(error));
		close(sy->sy_dirfd);
		pthread_cond_destroy(&sy->sy_wake);
		pthread_mutex_destroy(&sy->sy_lock);
		free(sy);
		return (NULL);
	}
	return (sy);
}

/*
 * The loop writes segment seg on fd from now on: the syncer keeps a copy
 * of fd, and syncs the segment before it whole (and the directory) before
 * it says anything of seg. A failure to copy fd is an fsync failure.
 */
void
syncer_segment(struct ledger_syncer *sy, uint64_t seg, int fd)
{
	struct sync_old *so;
	int copy;

	copy = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	pthread_mutex_lock(&sy->sy_lock);
	if (sy->sy_fd != -1) {
		so = xcalloc(1, sizeof(*so));
		so->so_fd = sy->sy_fd;
		so->so_seg = sy->sy_seg;
		TAILQ_INSERT_TAIL(&sy->sy_old, so, so_entry);
	}
	sy->sy_fd = copy;
	sy->sy_seg = seg;
	sy->sy_want = 0;
	sy->sy_dir_dirty = 1;
	if (copy == -1)
		failed(sy, seg);
	pthread_cond_signal(&sy->sy_wake);
	pthread_mutex_unlock(&sy->sy_lock);
}

/* Segment seg must reach the disk up to off bytes. */
void
syncer_want(struct ledger_syncer *sy, uint64_t seg, int64_t off)
{
	pthread_mutex_lock(&sy->sy_lock);
	if (seg == sy->sy_seg && off > sy->sy_want) {
		sy->sy_want = off;
		pthread_cond_signal(&sy->sy_wake);
	}
	pthread_mutex_unlock(&sy->sy_lock);
}

/* Whether segment seg is on disk up to off (never, once it is bad). */
int
syncer_covers(struct ledger_syncer *sy, uint64_t seg, int64_t off)
{
	int yes;

	pthread_mutex_lock(&sy->sy_lock);
	yes = seg > sy->sy_bad_seg &&
	    (sy->sy_done_seg > seg ||
		(sy->sy_done_seg == seg && sy->sy_done >= off));
	pthread_mutex_unlock(&sy->sy_lock);
	return (yes);
}

/*
 * Whether a sync failed since the last call: once per failure, so the
 * loop refuses what waits and starts another segment once.
 */
int
syncer_failed_take(struct ledger_syncer *sy)
{
	int f;

	pthread_mutex_lock(&sy->sy_lock);
	f = sy->sy_failed;
	sy->sy_failed = 0;
	pthread_mutex_unlock(&sy->sy_lock);
	return (f);
}

/* Counters for /metrics. */
void
syncer_stats(struct ledger_syncer *sy, struct ledger_stats *s)
{
	if (sy == NULL)
		return;
	pthread_mutex_lock(&sy->sy_lock);
	s->ls_journal_syncs = sy->sy_syncs;
	s->ls_journal_sync_us_total = sy->sy_sync_us_total;
	pthread_mutex_unlock(&sy->sy_lock);
}

/* Sync what is asked, stop the thread, and free everything. */
void
syncer_stop(struct ledger_syncer *sy)
{
	struct sync_old *so;

	if (sy == NULL)
		return;
	pthread_mutex_lock(&sy->sy_lock);
	sy->sy_stop = 1;
	pthread_cond_signal(&sy->sy_wake);
	pthread_mutex_unlock(&sy->sy_lock);
	pthread_join(sy->sy_thread, NULL);
	while ((so = TAILQ_FIRST(&sy->sy_old)) != NULL) {
		TAILQ_REMOVE(&sy->sy_old, so, so_entry);
		close(so->so_fd);
		free(so);
	}
	if (sy->sy_fd != -1)
		close(sy->sy_fd);
	close(sy->sy_dirfd);
	pthread_cond_destroy(&sy->sy_wake);
	pthread_mutex_destroy(&sy->sy_lock);
	free(sy);
}
