/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The reservation journal's files: numbered segments beside the ledger
 * (<ledger.path>.journal.<n>), each an 8-byte magic and then records,
 * every record a 4-byte length, a 4-byte CRC-32 of its payload and the
 * payload: a type and, for a call, its row. The loop thread appends the
 * records of one loop turn to a buffer and writes them with one write(2);
 * a write that has returned is in the page cache and survives kill -9.
 * A write that fails or comes back short is cut off again (ftruncate), so
 * a record is never followed by a torn one; when even that fails the
 * segment is broken and the next write goes to a fresh one.
 *
 * The magic says the record format. TGJRNL03 records carry the columns
 * of what was done to spend less: attempts and cache_hit after the other
 * numbers, attempt_log after the other strings. TGJRNL02, written before
 * them, ends before those (its rows were sent once, or refused);
 * TGJRNL01, written before routing, also lacks saved_nusd, routed_from
 * and routed_rule. Older segments are still read; new ones are always 03.
 *
 * The reader gives each whole record of a segment to a callback and stops
 * at the first that is short or whose CRC does not match: the tail a crash
 * left half-written. Nothing here knows what the records mean (ledger.c
 * and replay.c do). See docs/internals/ledger.md, The reservation journal.
 */
#include <sys/stat.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <zlib.h>

#include "tollgate/ledger.h"
#include "tollgate/log.h"
#include "tollgate/util.h"

#include "ledger_int.h"

#define JOURNAL_MAGIC "TGJRNL03"
#define JOURNAL_MAGIC_V2 "TGJRNL02" /* before attempts and cache_hit */
#define JOURNAL_MAGIC_V1 "TGJRNL01" /* before the routing columns */
#define JOURNAL_MAGIC_LEN 8
#define JOURNAL_VERSION 3
#define JOURNAL_HEAD 8 /* a record's length and CRC */
/* The most one turn's records may hold before a write is forced. */
#define JOURNAL_BUF_MAX (64 * 1024 * 1024)
/*
 * The largest segment a start-up reads: a segment is started past 8 MiB,
 * and the write that passes it holds at most one turn's buffer and the
 * calls in flight. Anything larger is not one of ours.
 */
#define JOURNAL_READ_MAX (4 * JOURNAL_BUF_MAX)
/* The buffer a turn keeps between writes; a burst's larger one goes. */
#define JOURNAL_BUF_KEEP (1024 * 1024)

static void
put32(char *p, uint32_t v)
{
	p[0] = (char)(v & 0xff);
	p[1] = (char)((v >> 8) & 0xff);
	p[2] = (char)((v >> 16) & 0xff);
	p[3] = (char)((v >> 24) & 0xff);
}

static uint32_t
get32(const char *p)
{
	const unsigned char *u = (const unsigned char *)p;

	return ((uint32_t)u[0] | (uint32_t)u[1] << 8 | (uint32_t)u[2] << 16 |
	    (uint32_t)u[3] << 24);
}

static void
put64(char *p, int64_t v)
{
	put32(p, (uint32_t)((uint64_t)v & 0xffffffffU));
	put32(p + 4, (uint32_t)((uint64_t)v >> 32));
}

static int64_t
get64(const char *p)
{
	return ((int64_t)((uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32));
}

/* The file name of segment seg: the ledger's path, ".journal.", seg. */
char *
journal_name(const char *path, uint64_t seg)
{
	char *name;

	xasprintf(&name, "%s.journal.%" PRIu64, path, seg);
	return (name);
}

/* The record version a segment's magic (8 bytes at p) says, or 0. */
static int
journal_version(const char *p)
{
	if (memcmp(p, JOURNAL_MAGIC, JOURNAL_MAGIC_LEN) == 0)
		return (JOURNAL_VERSION);
	if (memcmp(p, JOURNAL_MAGIC_V2, JOURNAL_MAGIC_LEN) == 0)
		return (2);
	if (memcmp(p, JOURNAL_MAGIC_V1, JOURNAL_MAGIC_LEN) == 0)
		return (1);
	return (0);
}

/* A row's numbers, in the order they are written. */
#define ROW_INTS 18

/*
 * What each record version lacks of the current one: its numbers and
 * strings end that many before the current ones (ledger_row_fields puts
 * the newer strings last).
 */
static const struct {
	size_t jv_ints_less;
	size_t jv_fields_less;
} journal_versions[JOURNAL_VERSION] = {
    {3, 3}, /* 01: no saved_nusd, attempts, cache_hit; no routed_from,
	       routed_rule, attempt_log */
    {2, 1}, /* 02: no attempts, cache_hit; no attempt_log */
    {0, 0}, /* 03 */
};

static void
row_ints(const struct ledger_row *r, int64_t v[ROW_INTS])
{
	v[0] = r->lr_started_ms;
	v[1] = r->lr_finished_ms;
	v[2] = r->lr_stream;
	v[3] = r->lr_status;
	v[4] = r->lr_http_status;
	v[5] = r->lr_input_tokens;
	v[6] = r->lr_output_tokens;
	v[7] = r->lr_cached_input_tokens;
	v[8] = r->lr_cache_write_tokens;
	v[9] = r->lr_reasoning_tokens;
	v[10] = r->lr_usage_source;
	v[11] = r->lr_cost_nusd;
	v[12] = r->lr_reserved_nusd;
	v[13] = r->lr_latency_ms;
	v[14] = r->lr_ttfb_ms;
	v[15] = r->lr_saved_nusd;
	v[16] = r->lr_attempts;
	v[17] = r->lr_cache_hit;
}

/*
 * Append one record of type t for row to b (the turn's buffer, or a new
 * segment's head). A withdrawal carries only the id. 0, or -1 when the
 * buffer is at its cap (the caller refuses the call).
 */
int
journal_append(struct buf *b, enum journal_rec t, const struct ledger_row *row)
{
	struct ledger_row copy = *row;
	const char **f[LEDGER_ROW_FIELDS_MAX];
	int64_t v[ROW_INTS];
	size_t i, n, len, need;
	char *p, *rec;

	n = t == JOURNAL_WITHDRAW ? 1 : ledger_row_fields(&copy, f);
	if (t == JOURNAL_WITHDRAW)
		f[0] = &copy.lr_id;
	need = JOURNAL_HEAD + 1 + (t == JOURNAL_WITHDRAW ? 0 : ROW_INTS * 8);
	for (i = 0; i < n; i++)
		need += 4 + (*f[i] != NULL ? strlen(*f[i]) : 0);
	if (need - JOURNAL_HEAD > JOURNAL_RECORD_MAX)
		return (-1);
	if ((rec = buf_reserve(b, need)) == NULL)
		return (-1);
	p = rec + JOURNAL_HEAD;
	*p++ = (char)t;
	if (t != JOURNAL_WITHDRAW) {
		row_ints(row, v);
		for (i = 0; i < ROW_INTS; i++, p += 8)
			put64(p, v[i]);
	}
	for (i = 0; i < n; i++) {
		if (*f[i] == NULL) {
			put32(p, UINT32_MAX);
			p += 4;
			continue;
		}
		len = strlen(*f[i]);
		put32(p, (uint32_t)len);
		memcpy(p + 4, *f[i], len);
		p += 4 + len;
	}
	put32(rec, (uint32_t)(need - JOURNAL_HEAD));
	put32(rec + 4,
	    (uint32_t)crc32_z(0, (const unsigned char *)rec + JOURNAL_HEAD,
		need - JOURNAL_HEAD));
	buf_commit(b, need);
	return (0);
}

/*
 * Decode one record's payload (len bytes at p) of a segment whose magic
 * is version ver (1 to JOURNAL_VERSION) into *t and *row, whose
 * strings point into strs (at least len bytes, NUL-terminated copies).
 * 0, or -1 when it does not parse.
 */
static int
decode(const char *p, size_t len, int ver, char *strs, enum journal_rec *t,
    struct ledger_row *row)
{
	const char **f[LEDGER_ROW_FIELDS_MAX];
	const char *end = p + len;
	int64_t v[ROW_INTS];
	uint32_t slen;
	size_t i, n;
	size_t nints = ROW_INTS - journal_versions[ver - 1].jv_ints_less;

	if (len < 1)
		return (-1);
	*t = (enum journal_rec)(unsigned char)*p++;
	if (*t != JOURNAL_RESERVE && *t != JOURNAL_SETTLE &&
	    *t != JOURNAL_WITHDRAW)
		return (-1);
	memset(row, 0, sizeof(*row));
	if (*t != JOURNAL_WITHDRAW) {
		if ((size_t)(end - p) < nints * 8)
			return (-1);
		for (i = nints; i < ROW_INTS; i++)
			v[i] = 0;
		for (i = 0; i < nints; i++, p += 8)
			v[i] = get64(p);
		row->lr_started_ms = v[0];
		row->lr_finished_ms = v[1];
		row->lr_stream = (int)v[2];
		row->lr_status = (enum call_status)v[3];
		row->lr_http_status = (int)v[4];
		row->lr_input_tokens = v[5];
		row->lr_output_tokens = v[6];
		row->lr_cached_input_tokens = v[7];
		row->lr_cache_write_tokens = v[8];
		row->lr_reasoning_tokens = v[9];
		row->lr_usage_source = (enum usage_source)v[10];
		row->lr_cost_nusd = v[11];
		row->lr_reserved_nusd = v[12];
		row->lr_latency_ms = v[13];
		row->lr_ttfb_ms = v[14];
		row->lr_saved_nusd = v[15];
		/* Rows of an older tollgate were sent once, or refused. */
		row->lr_attempts =
		    ver < 3 ? row->lr_status != CALL_REFUSED : (int)v[16];
		row->lr_cache_hit = (int)v[17];
		n = ledger_row_fields(row, f) -
		    journal_versions[ver - 1].jv_fields_less;
	} else {
		f[0] = &row->lr_id;
		n = 1;
	}
	for (i = 0; i < n; i++) {
		if (end - p < 4)
			return (-1);
		slen = get32(p);
		p += 4;
		if (slen == UINT32_MAX) {
			*f[i] = NULL;
			continue;
		}
		if ((size_t)(end - p) < slen)
			return (-1);
		memcpy(strs, p, slen);
		strs[slen] = '\0';
		*f[i] = strs;
		strs += slen + 1;
		p += slen;
	}
	return (p == end ? 0 : -1);
}

/*
 * Give every whole record of the segment file name to cb, in order.
 * Returns the number of bytes read as whole records (magic included), or
 * -1 with *cause when the file cannot be read or is not a journal. A
 * torn or corrupt tail ends the reading: *torn says how many bytes were
 * left unread.
 */
int64_t
journal_read(
    const char *name, journal_read_cb cb, void *arg, size_t *torn, char **cause)
{
	struct ledger_row row;
	enum journal_rec t;
	struct stat st;
	char *data = NULL, *strs = NULL;
	size_t size, off, len;
	ssize_t got;
	int fd, ver;

	*torn = 0;
	if ((fd = open(name, O_RDONLY | O_CLOEXEC)) == -1) {
		xasprintf(cause, "%s: %s", name, strerror(errno));
		return (-1);
	}
	if (fstat(fd, &st) == -1) {
		xasprintf(cause, "%s: %s", name, strerror(errno));
		close(fd);
		return (-1);
	}
	if (st.st_size > JOURNAL_READ_MAX) {
		xasprintf(cause,
		    "%s: %lld bytes, larger than any journal segment; move it "
		    "away if it is not tollgate's",
		    name, (long long)st.st_size);
		close(fd);
		return (-1);
	}
	size = (size_t)st.st_size;
	data = xmalloc(size + 1);
	for (off = 0; off < size; off += (size_t)got) {
		got = read(fd, data + off, size - off);
		if (got == -1 && errno == EINTR) {
			got = 0;
			continue;
		}
		if (got <= 0)
			break;
	}
	close(fd);
	size = off;
	if (size < JOURNAL_MAGIC_LEN) {
		/* Created, and killed before its magic was written. */
		*torn = size;
		free(data);
		return ((int64_t)size);
	}
	if ((ver = journal_version(data)) == 0) {
		xasprintf(cause,
		    "%s is not a tollgate journal this tollgate can read "
		    "(no " JOURNAL_MAGIC ", " JOURNAL_MAGIC_V2
		    " or " JOURNAL_MAGIC_V1 " magic)",
		    name);
		free(data);
		return (-1);
	}
	strs = xmalloc(JOURNAL_RECORD_MAX + 1);
	off = JOURNAL_MAGIC_LEN;
	while (size - off >= JOURNAL_HEAD) {
		len = get32(data + off);
		if (len == 0 || len > JOURNAL_RECORD_MAX ||
		    size - off - JOURNAL_HEAD < len ||
		    (uint32_t)crc32_z(0,
			(const unsigned char *)data + off + JOURNAL_HEAD,
			len) != get32(data + off + 4) ||
		    decode(data + off + JOURNAL_HEAD, len, ver, strs, &t,
			&row) != 0)
			break;
		cb(t, &row, arg);
		off += JOURNAL_HEAD + len;
	}
	*torn = size - off;
	free(strs);
	free(data);
	return ((int64_t)off);
}

static int
seg_cmp(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return (x < y ? -1 : x > y);
}

/*
 * The numbers of the journal segments beside the ledger at path, in
 * order, in *segs (the caller frees it; NULL when none). 0, or -1 with
 * *cause when the directory cannot be read.
 */
int
journal_segments(const char *path, uint64_t **segs, size_t *n, char **cause)
{
	char *dcopy, *bcopy, *dir, *base, *end;
	struct dirent *de;
	size_t blen, cap = 0;
	uint64_t v;
	DIR *d;

	*segs = NULL;
	*n = 0;
	dcopy = xstrdup(path);
	bcopy = xstrdup(path);
	dir = dirname(dcopy);
	base = basename(bcopy);
	blen = strlen(base);
	if ((d = opendir(dir)) == NULL) {
		xasprintf(cause, "%s: %s", dir, strerror(errno));
		free(dcopy);
		free(bcopy);
		return (-1);
	}
	while ((de = readdir(d)) != NULL) {
		if (strncmp(de->d_name, base, blen) != 0 ||
		    strncmp(de->d_name + blen, ".journal.", 9) != 0)
			continue;
		if (de->d_name[blen + 9] < '0' || de->d_name[blen + 9] > '9')
			continue;
		/* Only the names tollgate writes: no sign, no leading 0. */
		if (de->d_name[blen + 9] == '0')
			continue;
		errno = 0;
		v = strtoull(de->d_name + blen + 9, &end, 10);
		if (errno != 0 || *end != '\0')
			continue;
		if (*n == cap) {
			cap = cap == 0 ? 8 : cap * 2;
			*segs = xreallocarray(*segs, cap, sizeof(**segs));
		}
		(*segs)[(*n)++] = v;
	}
	closedir(d);
	free(dcopy);
	free(bcopy);
	if (*n > 1)
		qsort(*segs, *n, sizeof(**segs), seg_cmp);
	return (0);
}

/* Write all of len bytes at p to fd; 0, or -1 with errno. */
static int
write_all(int fd, const char *p, size_t len)
{
	ssize_t n;

	while (len > 0) {
		if ((n = write(fd, p, len)) == -1) {
			if (errno == EINTR)
				continue;
			return (-1);
		}
		if (n == 0) {
			errno = EIO;
			return (-1);
		}
		p += n;
		len -= (size_t)n;
	}
	return (0);
}

/*
 * Start segment seg: create it (O_EXCL: never append to a file that is
 * there) and write its magic. 0, or -1 with *cause and errno kept
 * (EEXIST: the name is taken).
 */
int
journal_start(struct ledger_journal *j, uint64_t seg, char **cause)
{
	char *name;
	int fd, saved;

	name = journal_name(j->j_path, seg);
	fd = open(
	    name, O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0600);
	if (fd == -1) {
		saved = errno;
		xasprintf(cause, "%s: %s", name, strerror(saved));
		free(name);
		errno = saved;
		return (-1);
	}
	if (write_all(fd, JOURNAL_MAGIC, JOURNAL_MAGIC_LEN) == -1) {
		xasprintf(cause, "%s: %s", name, strerror(errno));
		close(fd);
		(void)unlink(name);
		free(name);
		return (-1);
	}
	free(name);
	if (j->j_fd != -1)
		close(j->j_fd);
	j->j_fd = fd;
	j->j_seg = seg;
	j->j_size = JOURNAL_MAGIC_LEN;
	j->j_broken = 0;
	return (0);
}

/* Prepare j for the ledger at path; no segment is open yet. */
void
journal_init(struct ledger_journal *j, const char *path)
{
	memset(j, 0, sizeof(*j));
	j->j_fd = -1;
	j->j_path = xstrdup(path);
	buf_init(&j->j_buf, JOURNAL_BUF_MAX, 64 * 1024, 0);
}

/*
 * Write n bytes at p to the open segment with one write(2). A failure
 * or a short write is cut off again, so the segment never holds a torn
 * record before a whole one; if that fails too the segment is broken
 * (journal_start a new one). 0, or -1 with errno kept.
 */
int
journal_write_bytes(struct ledger_journal *j, const char *p, size_t n)
{
	ssize_t w;
	int saved;

	if (n == 0)
		return (0);
	if (j->j_fd == -1 || j->j_broken) {
		errno = EBADF;
		return (-1);
	}
	do
		w = write(j->j_fd, p, n);
	while (w == -1 && errno == EINTR);
	if (w == (ssize_t)n) {
		j->j_size += (off_t)n;
		return (0);
	}
	saved = w == -1 ? errno : ENOSPC;
	if (w > 0 && ftruncate(j->j_fd, j->j_size) == -1)
		j->j_broken = 1;
	errno = saved;
	return (-1);
}

/*
 * Write the turn's buffer (journal_write_bytes) and empty it; one a burst
 * made large is given back. A failed write leaves the buffer as it was
 * (journal_keep_outcomes).
 */
int
journal_flush(struct ledger_journal *j)
{
	if (journal_write_bytes(j, buf_ptr(&j->j_buf), buf_len(&j->j_buf)) != 0)
		return (-1);
	buf_reset(&j->j_buf);
	if (j->j_buf.b_size > JOURNAL_BUF_KEEP) {
		buf_free(&j->j_buf);
		buf_init(&j->j_buf, JOURNAL_BUF_MAX, 64 * 1024, 0);
	}
	return (0);
}

/*
 * A write of the turn's buffer failed: keep its settlements and
 * withdrawals for the next write (a crash before the writer has the row
 * must still find the outcome), and drop its reservations, whose calls
 * were refused. The buffer holds whole records only.
 */
void
journal_keep_outcomes(struct ledger_journal *j)
{
	char *p = buf_ptr(&j->j_buf);
	size_t len = buf_len(&j->j_buf), off = 0, keep = 0, n;

	while (len - off >= JOURNAL_HEAD + 1) {
		n = JOURNAL_HEAD + get32(p + off);
		if (n > len - off)
			break; /* cannot be: appended whole */
		if ((unsigned char)p[off + JOURNAL_HEAD] != JOURNAL_RESERVE) {
			memmove(p + keep, p + off, n);
			keep += n;
		}
		off += n;
	}
	j->j_buf.b_len = keep;
}

/*
 * Whether the file name is a journal segment of tollgate's (it begins
 * with the magic): what a clean stop may delete.
 */
int
journal_is_ours(const char *name)
{
	char magic[JOURNAL_MAGIC_LEN];
	ssize_t n;
	int fd;

	if ((fd = open(name, O_RDONLY | O_CLOEXEC)) == -1)
		return (0);
	n = read(fd, magic, sizeof(magic));
	close(fd);
	return (n == (ssize_t)sizeof(magic) && journal_version(magic) != 0);
}

/* Remove segment seg of the ledger at path; a failure is logged. */
void
journal_unlink(const char *path, uint64_t seg)
{
	char *name = journal_name(path, seg);

	if (unlink(name) == -1 && errno != ENOENT)
		log_warn("ledger: journal %s: unlink", name);
	free(name);
}

/*
 * Whether the open segment is still at its name: deleted or replaced, a
 * crash would lose what it holds. 1 when it is gone.
 */
int
journal_gone(struct ledger_journal *j)
{
	struct stat st, at;
	char *name;
	int gone;

	if (j->j_fd == -1 || fstat(j->j_fd, &st) == -1)
		return (1);
	if (st.st_nlink == 0)
		return (1);
	name = journal_name(j->j_path, j->j_seg);
	gone = stat(name, &at) == -1 || at.st_dev != st.st_dev ||
	    at.st_ino != st.st_ino;
	free(name);
	return (gone);
}

/* Close the open segment (its file stays) and free j. */
void
journal_free(struct ledger_journal *j)
{
	if (j->j_fd != -1)
		close(j->j_fd);
	j->j_fd = -1;
	buf_free(&j->j_buf);
	free(j->j_path);
	j->j_path = NULL;
}
