/* SPDX-License-Identifier: Apache-2.0 */
/*
 * faultfs: an LD_PRELOAD shim that makes writes and syncs fail on the
 * files whose path holds a pattern, switched on and off while the process
 * runs, so a test can break a live tollgate's disk under load and mend it
 * again. It wraps what SQLite (and anything else) calls: write, pwrite,
 * pwrite64, writev, pwritev ("write") and fsync, fdatasync ("fsync").
 *
 *   FAULTFS_CONTROL  a file; while it exists, each of its lines
 *                    "OP ERRNO [SUBSTRING]" makes OP ("write" or "fsync")
 *                    fail with ERRNO (EIO, ENOSPC, EDQUOT or EROFS) on the
 *                    files whose path holds SUBSTRING, or FAULTFS_MATCH
 *                    when the line names none. It is read again on every
 *                    call, so writing it (to a temp name, then renamed into
 *                    place) switches faults on and removing it off.
 *   FAULTFS_MATCH    the default SUBSTRING; every path when unset
 *   FAULTFS_LOG      a file that gets one line "OP ERRNO PATH" per failure
 *                    injected, so a test can prove there were some
 *   FAULTFS_SYNCLOG  a file that gets one line "SIZE PATH" after every
 *                    fsync or fdatasync that succeeded: the file's size
 *                    then, all of which is on disk. A test simulates a
 *                    power cut by cutting an append-only file back to the
 *                    last size logged for it.
 *   FAULTFS_SYNC_DELAY_MS  every fsync and fdatasync waits this long
 *                    first, as a slow disk's would: what is written
 *                    meanwhile is not yet on disk when a test cuts the
 *                    power.
 *
 * Without FAULTFS_CONTROL nothing ever fails. A call that fails has done
 * nothing: no byte is written, nothing synced. Test use only; never built
 * into tollgate.
 */
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FAULTFS_CONTROL_MAX 4096 /* bytes of the control file read */

static ssize_t (*real_write)(int, const void *, size_t);
static ssize_t (*real_pwrite)(int, const void *, size_t, off_t);
static ssize_t (*real_pwrite64)(int, const void *, size_t, off_t);
static ssize_t (*real_writev)(int, const struct iovec *, int);
static ssize_t (*real_pwritev)(int, const struct iovec *, int, off_t);
static int (*real_fsync)(int);
static int (*real_fdatasync)(int);

static void *
next_symbol(const char *name)
{
	void *p;

	if ((p = dlsym(RTLD_NEXT, name)) == NULL)
		abort(); /* nothing sensible to do in a shim */
	return (p);
}

/* Resolve the real functions before any thread can call one. */
static void __attribute__((constructor)) faultfs_init(void)
{
	real_write = next_symbol("write");
	real_pwrite = next_symbol("pwrite");
	real_pwrite64 = next_symbol("pwrite64");
	real_writev = next_symbol("writev");
	real_pwritev = next_symbol("pwritev");
	real_fsync = next_symbol("fsync");
	real_fdatasync = next_symbol("fdatasync");
}

static int
errno_named(const char *name)
{
	static const struct {
		const char *n;
		int e;
	} names[] = {
	    {"EIO", EIO},
	    {"ENOSPC", ENOSPC},
	    {"EDQUOT", EDQUOT},
	    {"EROFS", EROFS},
	};
	size_t i;

	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (strcmp(name, names[i].n) == 0)
			return (names[i].e);
	return (0);
}

/* Append "op errno path" to FAULTFS_LOG, bypassing the wrappers. */
static void
note(const char *op, const char *err, const char *path)
{
	const char *log = getenv("FAULTFS_LOG");
	char line[PATH_MAX + 64];
	int fd, n;

	if (log == NULL ||
	    (fd = open(log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600)) ==
		-1)
		return;
	n = snprintf(line, sizeof(line), "%s %s %s\n", op, err, path);
	if (n > 0 && (size_t)n < sizeof(line))
		(void)real_write(fd, line, (size_t)n);
	close(fd);
}

/*
 * The errno a call of kind op ("write" or "fsync") on fd must fail with,
 * or 0. Costs an open of the control file, and only while it exists a
 * readlink of the descriptor.
 */
static int
fault_for(int fd, const char *op)
{
	const char *control = getenv("FAULTFS_CONTROL");
	const char *dflt = getenv("FAULTFS_MATCH");
	char buf[FAULTFS_CONTROL_MAX + 1], path[PATH_MAX], link[64];
	char o[16], e[16], want[256], *line, *save = NULL;
	const char *m;
	ssize_t n, pn = -1;
	int cfd, err, k;

	if (control == NULL ||
	    (cfd = open(control, O_RDONLY | O_CLOEXEC)) == -1)
		return (0);
	n = read(cfd, buf, FAULTFS_CONTROL_MAX);
	close(cfd);
	if (n <= 0)
		return (0);
	buf[n] = '\0';
	for (line = strtok_r(buf, "\n", &save); line != NULL;
	     line = strtok_r(NULL, "\n", &save)) {
		k = sscanf(line, "%15s %15s %255s", o, e, want);
		if (k < 2 || strcmp(o, op) != 0 || (err = errno_named(e)) == 0)
			continue;
		m = k == 3 ? want : dflt;
		if (pn == -1) {
			snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
			if ((pn = readlink(link, path, sizeof(path) - 1)) < 0)
				return (0);
			path[pn] = '\0';
		}
		if (m != NULL && strstr(path, m) == NULL)
			continue;
		note(op, e, path);
		return (err);
	}
	return (0);
}

ssize_t
write(int fd, const void *buf, size_t len)
{
	int err;

	if ((err = fault_for(fd, "write")) != 0) {
		errno = err;
		return (-1);
	}
	return (real_write(fd, buf, len));
}

ssize_t
pwrite(int fd, const void *buf, size_t len, off_t off)
{
	int err;

	if ((err = fault_for(fd, "write")) != 0) {
		errno = err;
		return (-1);
	}
	return (real_pwrite(fd, buf, len, off));
}

ssize_t
pwrite64(int fd, const void *buf, size_t len, off_t off)
{
	int err;

	if ((err = fault_for(fd, "write")) != 0) {
		errno = err;
		return (-1);
	}
	return (real_pwrite64(fd, buf, len, off));
}

ssize_t
writev(int fd, const struct iovec *iov, int n)
{
	int err;

	if ((err = fault_for(fd, "write")) != 0) {
		errno = err;
		return (-1);
	}
	return (real_writev(fd, iov, n));
}

ssize_t
pwritev(int fd, const struct iovec *iov, int n, off_t off)
{
	int err;

	if ((err = fault_for(fd, "write")) != 0) {
		errno = err;
		return (-1);
	}
	return (real_pwritev(fd, iov, n, off));
}

/* After a sync of fd that succeeded: "size path" to FAULTFS_SYNCLOG. */
static void
synced(int fd)
{
	const char *log = getenv("FAULTFS_SYNCLOG");
	char line[PATH_MAX + 64], path[PATH_MAX], link[64];
	struct stat st;
	ssize_t pn;
	int lfd, n, saved = errno;

	if (log == NULL || fstat(fd, &st) == -1)
		goto out;
	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	if ((pn = readlink(link, path, sizeof(path) - 1)) <= 0)
		goto out;
	path[pn] = '\0';
	n = snprintf(
	    line, sizeof(line), "%lld %s\n", (long long)st.st_size, path);
	if (n <= 0 || (size_t)n >= sizeof(line))
		goto out;
	lfd = open(log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
	if (lfd != -1) {
		(void)real_write(lfd, line, (size_t)n);
		close(lfd);
	}
out:
	errno = saved;
}

/* FAULTFS_SYNC_DELAY_MS, before a sync. */
static void
sync_delay(void)
{
	const char *d = getenv("FAULTFS_SYNC_DELAY_MS");
	char *end;
	long ms;

	if (d == NULL)
		return;
	ms = strtol(d, &end, 10);
	if (*end == '\0' && ms > 0 && ms <= 10000)
		usleep((useconds_t)ms * 1000);
}

int
fsync(int fd)
{
	int err, rc;

	if ((err = fault_for(fd, "fsync")) != 0) {
		errno = err;
		return (-1);
	}
	sync_delay();
	if ((rc = real_fsync(fd)) == 0)
		synced(fd);
	return (rc);
}

int
fdatasync(int fd)
{
	int err, rc;

	if ((err = fault_for(fd, "fsync")) != 0) {
		errno = err;
		return (-1);
	}
	sync_delay();
	if ((rc = real_fdatasync(fd)) == 0)
		synced(fd);
	return (rc);
}
