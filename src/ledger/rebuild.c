/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The ledger's files, lost and found. tollgate holds its database, -wal
 * and -shm open while it runs; when one of them is deleted, moved or
 * replaced, SQLite goes on writing into the open inode without a word,
 * and a restart opens whatever is at the path then: every row written
 * meanwhile is gone. ledger_db_check compares the open files with their
 * paths (an fstat and two or three stats). ledger_db_rebuild copies the
 * open database, through the connection that still reads it (its WAL
 * included), into a fresh file with SQLite's backup API, syncs it, puts it
 * at the path and opens a connection there; ledger_db_save leaves such a
 * copy beside a file that is not tollgate's, which is never written.
 *
 * A failed fsync is handled the same way. SQLite cannot know what reached
 * the disk, and retrying the fsync on the same file may report success
 * for pages the kernel has already dropped (PostgreSQL's "fsyncgate"), so
 * the file is never trusted again: a fresh one is written from what the
 * connection reads and synced, and only its successful sync counts.
 *
 * Everything here runs on the writer thread. See docs/internals/ledger.md.
 */
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sqlite3.h>

#include "tollgate/ledger.h"
#include "tollgate/log.h"
#include "tollgate/util.h"

#include "ledger_int.h"

static int
same_file(const struct stat *sb, dev_t dev, ino_t ino)
{
	return (sb->st_dev == dev && sb->st_ino == ino);
}

/* The file at sb is a copy this writer put at the path and has not opened. */
static int
is_placed(const struct ledger_db *d, const struct stat *sb)
{
	struct stat pb;

	return (d->db_placed_fd != -1 && fstat(d->db_placed_fd, &pb) == 0 &&
	    same_file(sb, pb.st_dev, pb.st_ino));
}

/* Device and inode of path, or zeros when it cannot be looked up. */
static void
identify_path(const char *path, dev_t *dev, ino_t *ino)
{
	struct stat sb;

	if (stat(path, &sb) == 0) {
		*dev = sb.st_dev;
		*ino = sb.st_ino;
	} else {
		*dev = 0;
		*ino = 0;
	}
}

/*
 * Note the files d's connection has open, by the names SQLite gives them
 * (a symbolic link in the configured path is resolved): the database,
 * whose inode is db_lockfd's, and its -wal and -shm, as they are now.
 */
int
ledger_db_identify(struct ledger_db *d, char **cause)
{
	struct stat sb, at;
	const char *file;

	file = sqlite3_db_filename(d->db_conn, "main");
	if (file == NULL || *file == '\0') {
		*cause = xstrdup("SQLite gives the ledger no file name");
		return (-1);
	}
	d->db_file = xstrdup(file);
	d->db_wal = xstrdup(sqlite3_filename_wal(file));
	xasprintf(&d->db_shm, "%s-shm", file);
	if (fstat(d->db_lockfd, &sb) == -1) {
		xasprintf(cause, "fstat: %s", strerror(errno));
		return (-1);
	}
	if (stat(d->db_file, &at) == -1 ||
	    !same_file(&at, sb.st_dev, sb.st_ino)) {
		xasprintf(
		    cause, "%s changed while it was being opened", d->db_file);
		return (-1);
	}
	d->db_dev = sb.st_dev;
	d->db_ino = sb.st_ino;
	identify_path(d->db_wal, &d->db_wal_dev, &d->db_wal_ino);
	identify_path(d->db_shm, &d->db_shm_dev, &d->db_shm_ino);
	return (0);
}

/*
 * Is the file d writes still the one a restart would open? An fstat for
 * the link count, a stat of the database's path and one of its -wal; with
 * full, one of its -shm too (losing it loses no row, but readers in other
 * processes would no longer see what the writer commits).
 */
enum ledger_lost
ledger_db_check(struct ledger_db *d, int full)
{
	struct stat sb;
	nlink_t links;

	if (fstat(d->db_lockfd, &sb) == -1)
		return (LEDGER_LOST_UNREACHABLE);
	links = sb.st_nlink;
	if (stat(d->db_file, &sb) == -1) {
		if (errno != ENOENT)
			return (LEDGER_LOST_UNREACHABLE);
		return (links == 0 ? LEDGER_LOST_DELETED : LEDGER_LOST_MOVED);
	}
	if (!same_file(&sb, d->db_dev, d->db_ino)) {
		if (is_placed(d, &sb))
			return (LEDGER_LOST_MOVED); /* ours, to be replaced */
		return (LEDGER_LOST_REPLACED);
	}
	/*
	 * A link in the configured path (the file itself, or a directory on
	 * the way) that now leads elsewhere: a restart would open that other
	 * file. The file tollgate has open is whole at its own name, so this
	 * is waited out, never rebuilt.
	 */
	if (d->db_path != NULL && strcmp(d->db_path, d->db_file) != 0 &&
	    (stat(d->db_path, &sb) == -1 ||
		!same_file(&sb, d->db_dev, d->db_ino)))
		return (LEDGER_LOST_RELINKED);
	if (stat(d->db_wal, &sb) == -1 ||
	    !same_file(&sb, d->db_wal_dev, d->db_wal_ino))
		return (LEDGER_LOST_WAL);
	if (full &&
	    (stat(d->db_shm, &sb) == -1 ||
		!same_file(&sb, d->db_shm_dev, d->db_shm_ino)))
		return (LEDGER_LOST_SHM);
	return (LEDGER_LOST_NONE);
}

/* An fsync failed: the file on disk may differ from what SQLite wrote. */
int
ledger_db_sync_error(int rc)
{
	return (rc == SQLITE_IOERR_FSYNC || rc == SQLITE_IOERR_DIR_FSYNC);
}

/* fsync the directory holding path, so a new name in it lasts. */
static int
sync_dir(const char *path, char **cause)
{
	char *dir, *p;
	int fd, ret = 0;

	dir = xstrdup(path);
	if ((p = strrchr(dir, '/')) == NULL)
		snprintf(dir, strlen(dir) + 1, ".");
	else if (p == dir)
		p[1] = '\0';
	else
		*p = '\0';
	if ((fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) == -1 ||
	    fsync(fd) == -1) {
		xasprintf(cause, "fsync %s: %s", dir, strerror(errno));
		ret = -1;
	}
	if (fd != -1)
		close(fd);
	free(dir);
	return (ret);
}

/*
 * Copy the database d's connection reads, its WAL included, into target,
 * an empty file. The copy has no journal and no syncs: it is thrown away
 * unless it completes, and the caller syncs it once, whole. Page 1 comes
 * from the ledger, so the copy opens in WAL mode.
 */
static int
copy_into(struct ledger_db *d, const char *target, char **cause)
{
	sqlite3 *dst = NULL;
	sqlite3_backup *b;
	int rc;

	rc = sqlite3_open_v2(target, &dst,
	    SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_EXRESCODE,
	    NULL);
	if (rc != SQLITE_OK ||
	    sqlite3_exec(dst,
		"PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF", NULL,
		NULL, NULL) != SQLITE_OK) {
		xasprintf(cause, "open %s: %s", target,
		    dst != NULL ? sqlite3_errmsg(dst) : sqlite3_errstr(rc));
		goto fail;
	}
	if ((b = sqlite3_backup_init(dst, "main", d->db_conn, "main")) ==
	    NULL) {
		xasprintf(cause, "copy: %s", sqlite3_errmsg(dst));
		goto fail;
	}
	rc = sqlite3_backup_step(b, -1);
	(void)sqlite3_backup_finish(b);
	if (rc != SQLITE_DONE) {
		xasprintf(cause, "copy into %s: %s (SQLite error %d)", target,
		    sqlite3_errmsg(dst), rc);
		goto fail;
	}
	if ((rc = sqlite3_close(dst)) != SQLITE_OK) {
		xasprintf(cause, "close %s: %s", target, sqlite3_errstr(rc));
		dst = NULL;
		goto fail;
	}
	return (0);
fail:
	sqlite3_close(dst);
	return (-1);
}

/*
 * Make target (which must not exist) a synced copy of the database d
 * reads; the descriptor, holding an flock, is returned in *fdp.
 */
static int
copy_to_new(struct ledger_db *d, const char *target, int *fdp, char **cause)
{
	int fd;

	*fdp = -1;
	if ((fd = open(target, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600)) ==
	    -1) {
		xasprintf(cause, "create %s: %s", target, strerror(errno));
		return (-1);
	}
	if (flock(fd, LOCK_EX | LOCK_NB) == -1) {
		xasprintf(cause, "flock %s: %s", target, strerror(errno));
		goto fail;
	}
	if (copy_into(d, target, cause) != 0)
		goto fail;
	if (fsync(fd) == -1) {
		xasprintf(cause, "fsync %s: %s", target, strerror(errno));
		goto fail;
	}
	*fdp = fd;
	return (0);
fail:
	close(fd);
	(void)unlink(target);
	return (-1);
}

/* Unlink path; a name already gone is fine. */
static void
unlink_quiet(const char *path)
{
	if (unlink(path) == -1 && errno != ENOENT)
		log_warn("ledger: unlink %s", path);
}

/*
 * Is there somewhere to put a copy of d: its directory, with free space
 * for the database's pages and some more (the WAL it writes at first)?
 * 0, or -1 with *cause.
 */
static int
rebuild_room(struct ledger_db *d, char **cause)
{
	struct statvfs vf;
	int64_t pages = 0, psize = 0;
	unsigned long long need, have;
	char *dir, *p;
	int ret = 0;

	dir = xstrdup(d->db_file);
	if ((p = strrchr(dir, '/')) != NULL)
		*(p == dir ? p + 1 : p) = '\0';
	else
		snprintf(dir, strlen(dir) + 1, ".");
	if (statvfs(dir, &vf) == -1) {
		xasprintf(cause, "%s: %s", dir, strerror(errno));
		ret = -1;
	} else if (ledger_db_query_int(d, "PRAGMA page_count", &pages) ==
		SQLITE_OK &&
	    ledger_db_query_int(d, "PRAGMA page_size", &psize) == SQLITE_OK &&
	    pages > 0 && psize > 0) {
		need = (unsigned long long)pages * (unsigned long long)psize;
		need += need / 10 + 4 * 1024 * 1024;
		have = (unsigned long long)vf.f_bavail * vf.f_frsize;
		if (have < need) {
			xasprintf(cause,
			    "%s has %llu bytes free; a copy of the ledger "
			    "needs about %llu",
			    dir, have, need);
			ret = -1;
		}
	}
	free(dir);
	return (ret);
}

/*
 * The ledger d writes is lost: copy it into a fresh file, put that at its
 * path (where nothing is, or where tollgate's own file is; never over
 * another) and open a connection there in fresh, which then owns the
 * file's flock. d is left as it was, for the caller to retire. On
 * failure, *why says REPLACED when another file took the path.
 */
int
ledger_db_rebuild(struct ledger_db *d, struct ledger_db *fresh,
    enum ledger_lost *why, char **cause)
{
	struct stat sb;
	char *tmp, *side;
	int fd = -1, placed = 0, ret = -1;

	/*
	 * Cheap checks before the copy, which costs the whole file: a
	 * directory that is not there (or a disk without room for the copy)
	 * would fail it after the work, on every attempt.
	 */
	if (rebuild_room(d, cause) != 0)
		return (-1);
	xasprintf(&tmp, "%s.rebuild", d->db_file);
	/* Left by an attempt that died half way: only tollgate names it. */
	unlink_quiet(tmp);
	xasprintf(&side, "%s-journal", tmp);
	unlink_quiet(side);
	free(side);
	if (copy_to_new(d, tmp, &fd, cause) != 0)
		goto out;

	if (stat(d->db_file, &sb) == -1) {
		if (errno != ENOENT) {
			xasprintf(
			    cause, "stat %s: %s", d->db_file, strerror(errno));
			goto out;
		}
		/* link(2), unlike rename(2), never replaces what came. */
		if (link(tmp, d->db_file) == -1) {
			if (errno == EEXIST)
				*why = LEDGER_LOST_REPLACED;
			xasprintf(
			    cause, "link %s: %s", d->db_file, strerror(errno));
			goto out;
		}
		unlink_quiet(tmp);
	} else if (same_file(&sb, d->db_dev, d->db_ino) || is_placed(d, &sb)) {
		if (rename(tmp, d->db_file) == -1) {
			xasprintf(cause, "rename %s: %s", d->db_file,
			    strerror(errno));
			goto out;
		}
	} else {
		*why = LEDGER_LOST_REPLACED;
		xasprintf(cause, "another file is at %s", d->db_file);
		goto out;
	}
	placed = 1;
	/*
	 * A -wal at the path would be replayed into the new file, which
	 * already holds all it had: it goes, and the -shm that indexes it.
	 * The old connection keeps its own descriptors.
	 */
	unlink_quiet(d->db_wal);
	unlink_quiet(d->db_shm);
	if (d->db_placed_fd != -1) {
		close(d->db_placed_fd); /* the copy before, now replaced */
		d->db_placed_fd = -1;
	}
	if (sync_dir(d->db_file, cause) != 0 ||
	    ledger_db_reopen(fresh, d->db_file, d->db_durability, fd, cause) !=
		0)
		goto out;
	fd = -1; /* fresh's */
	fresh->db_path = xstrdup(d->db_path);
	/*
	 * The copy's highest ship_seq may be below numbers already given
	 * (a batch that rolled back): go on from the open ledger's counter.
	 */
	if (d->db_ship_seq > fresh->db_ship_seq)
		fresh->db_ship_seq = d->db_ship_seq;
	ret = 0;
out:
	if (fd != -1 && placed)
		d->db_placed_fd =
		    fd; /* at the path, ours: replaced next time */
	else if (fd != -1) {
		close(fd);
		unlink_quiet(tmp);
	}
	free(tmp);
	return (ret);
}

/*
 * Save a copy of the database d reads beside its path, as
 * <path>.saved-<Unix ms>, in *saved: another file has taken the path, and
 * these rows would otherwise be lost when tollgate stops.
 */
int
ledger_db_save(struct ledger_db *d, char **saved, char **cause)
{
	char *target;
	int fd;

	xasprintf(&target, "%s.saved-%" PRId64, d->db_file, wallclock_ms());
	if (copy_to_new(d, target, &fd, cause) != 0) {
		free(target);
		return (-1);
	}
	close(fd);
	if (sync_dir(target, cause) != 0) {
		(void)unlink(target);
		free(target);
		return (-1);
	}
	*saved = target;
	return (0);
}

/*
 * Another file has taken the path: take away the names of this
 * connection's -wal and -shm, if they still are its files. SQLite would
 * replay tollgate's WAL into that other database the first time anyone
 * opened it. Its own -wal, if it came with one, is left alone.
 */
void
ledger_db_drop_names(struct ledger_db *d)
{
	struct stat sb;

	if (stat(d->db_wal, &sb) == 0 &&
	    same_file(&sb, d->db_wal_dev, d->db_wal_ino))
		unlink_quiet(d->db_wal);
	if (stat(d->db_shm, &sb) == 0 &&
	    same_file(&sb, d->db_shm_dev, d->db_shm_ino))
		unlink_quiet(d->db_shm);
}

/*
 * Close a connection to a lost ledger. As the last connection to its
 * files SQLite would checkpoint into the dead database and delete the
 * -wal and -shm by name: those names may belong to the rebuilt ledger,
 * or to another database, by now. So neither happens.
 */
void
ledger_db_retire(struct ledger_db *d)
{
	int one = 1;

	if (d->db_conn != NULL) {
		(void)sqlite3_file_control(
		    d->db_conn, "main", SQLITE_FCNTL_PERSIST_WAL, &one);
		(void)sqlite3_db_config(
		    d->db_conn, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, NULL);
	}
	d->db_synchronous = 0; /* no TRUNCATE checkpoint either */
	ledger_db_close(d);
}
