/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The generic, table-driven half of the YAML walker. A section is a table
 * of struct cfgkey; cfg_apply walks a mapping node against it, refuses
 * unknown and duplicate keys, reports missing required ones, and hands each
 * value to the key's parser, which checks it and stores it at an offset in
 * the section's struct. The reusable parsers live here: integers, sizes,
 * durations, strings, file paths and nested sections. So does the error
 * collection: nothing stops at the first mistake, every error is kept as
 * "file:line:col: message" (tmux cfg_add_cause, relayd file->errors) so a
 * user fixes the whole file in one pass (struct cfgerrs, cfgerrs_add and
 * cfgerrs_free too). Nothing here knows tollgate's schema; that is
 * src/config/, src/policy/parse.c and src/pricing/load.c.
 */
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tollgate/log.h"
#include "tollgate/util.h"
#include "tollgate/yaml.h"

/* A unit suffix and what it multiplies by. */
struct cfgunit {
	const char *u_suffix;
	unsigned long long u_mult;
};

static const struct cfgunit size_units[] = {
    {"", 1},
    {"KiB", 1024ULL},
    {"MiB", 1024ULL * 1024},
    {"GiB", 1024ULL * 1024 * 1024},
    {NULL, 0},
};

/* Durations are kept in milliseconds; a bare number means seconds. */
static const struct cfgunit duration_units[] = {
    {"", 1000},
    {"ms", 1},
    {"s", 1000},
    {"m", 60ULL * 1000},
    {"h", 3600ULL * 1000},
    {NULL, 0},
};

static void cfg_verror(struct cfgctx *, size_t, size_t, const char *, va_list)
    __attribute__((format(printf, 4, 0)));

static void
cfg_verror(
    struct cfgctx *cx, size_t line, size_t col, const char *fmt, va_list ap)
{
	struct cfgerrs *ce = cx->cx_errs;
	char *msg, *full;

	cx->cx_nerr++;
	if (ce == NULL)
		return;
	xvasprintf(&msg, fmt, ap);
	if (line == 0)
		xasprintf(&full, "%s: %s", cx->cx_file, msg);
	else
		xasprintf(&full, "%s:%zu:%zu: %s", cx->cx_file, line, col, msg);
	free(msg);
	if (cx->cx_sort) {
		cx->cx_pos = xreallocarray(
		    cx->cx_pos, cx->cx_npos + 1, sizeof(*cx->cx_pos));
		cx->cx_pos[cx->cx_npos].p_line = line;
		cx->cx_pos[cx->cx_npos].p_col = col;
		cx->cx_pos[cx->cx_npos++].p_idx = ce->ce_n;
	}
	ce->ce_msgs =
	    xreallocarray(ce->ce_msgs, ce->ce_n + 1, sizeof(*ce->ce_msgs));
	ce->ce_msgs[ce->ce_n++] = full;
}

static int
pos_cmp(const void *a, const void *b)
{
	const struct cfgpos *x = a, *y = b;

	if (x->p_line != y->p_line)
		return (x->p_line < y->p_line ? -1 : 1);
	if (x->p_col != y->p_col)
		return (x->p_col < y->p_col ? -1 : 1);
	return (x->p_idx < y->p_idx ? -1 : x->p_idx > y->p_idx);
}

/*
 * Put the errors this load found in the order of the file, by line, then
 * column (those without a position, about the whole file, first), however
 * the checks ran: a user reads them top to bottom. Errors of another file
 * (the price table, loaded with its own context into the same list) keep
 * their order and follow. Frees cx_pos.
 */
void
cfg_sort_errors(struct cfgctx *cx)
{
	struct cfgerrs *ce = cx->cx_errs;
	char **others;
	size_t i, k, first, nothers = 0;

	if (ce == NULL || cx->cx_npos == 0)
		goto out;
	first = cx->cx_pos[0].p_idx;
	others = xcalloc(ce->ce_n - first, sizeof(*others));
	/* Take ours out by index, keeping the others in their order. */
	for (i = first, k = 0; i < ce->ce_n; i++) {
		if (k < cx->cx_npos && cx->cx_pos[k].p_idx == i)
			cx->cx_pos[k++].p_msg = ce->ce_msgs[i];
		else
			others[nothers++] = ce->ce_msgs[i];
	}
	qsort(cx->cx_pos, cx->cx_npos, sizeof(*cx->cx_pos), pos_cmp);
	for (k = 0; k < cx->cx_npos; k++)
		ce->ce_msgs[first + k] = cx->cx_pos[k].p_msg;
	for (i = 0; i < nothers; i++)
		ce->ce_msgs[first + cx->cx_npos + i] = others[i];
	free(others);
out:
	free(cx->cx_pos);
	cx->cx_pos = NULL;
	cx->cx_npos = 0;
}

/* Append a message to errs. */
void
cfgerrs_add(struct cfgerrs *errs, const char *fmt, ...)
{
	va_list ap;
	char *msg;

	va_start(ap, fmt);
	xvasprintf(&msg, fmt, ap);
	va_end(ap);
	errs->ce_msgs = xreallocarray(
	    errs->ce_msgs, errs->ce_n + 1, sizeof(*errs->ce_msgs));
	errs->ce_msgs[errs->ce_n++] = msg;
}

/* Free the messages and leave errs empty, ready for reuse. */
void
cfgerrs_free(struct cfgerrs *errs)
{
	size_t i;

	if (errs == NULL)
		return;
	for (i = 0; i < errs->ce_n; i++)
		free(errs->ce_msgs[i]);
	free(errs->ce_msgs);
	errs->ce_msgs = NULL;
	errs->ce_n = 0;
	for (i = 0; i < errs->ce_nwarn; i++)
		free(errs->ce_warns[i]);
	free(errs->ce_warns);
	errs->ce_warns = NULL;
	errs->ce_nwarn = 0;
}

/* The index of the key called name in the mapping map, or -1. */
static long
key_index(const struct ynode *map, const char *name)
{
	size_t i;

	if (map == NULL || map->yn_type != YN_MAP)
		return (-1);
	for (i = 0; i + 1 < map->yn_nkids; i += 2)
		if (map->yn_kids[i]->yn_type == YN_SCALAR &&
		    strcmp(map->yn_kids[i]->yn_str, name) == 0)
			return ((long)i);
	return (-1);
}

/*
 * The key node called name in the mapping map, or NULL (map may be NULL
 * or not a mapping): for checks made after the walk that still want to
 * point at the line they are about.
 */
const struct ynode *
cfg_key(const struct ynode *map, const char *name)
{
	long i = key_index(map, name);

	return (i < 0 ? NULL : map->yn_kids[i]);
}

/* The value under the key called name in map, or NULL. */
const struct ynode *
cfg_value(const struct ynode *map, const char *name)
{
	long i = key_index(map, name);

	return (i < 0 ? NULL : map->yn_kids[i + 1]);
}

/* Record an error at node n, or with no position when n is NULL. */
void
cfg_error(struct cfgctx *cx, const struct ynode *n, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	if (n == NULL)
		cfg_verror(cx, 0, 0, fmt, ap);
	else
		cfg_verror(cx, n->yn_line, n->yn_col, fmt, ap);
	va_end(ap);
}

/* Record an error at line and col, for positions that have no node. */
void
cfg_error_at(struct cfgctx *cx, size_t line, size_t col, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	cfg_verror(cx, line, col, fmt, ap);
	va_end(ap);
}

/*
 * Escape bytes from the file for a message, so a key holding control
 * characters cannot forge log lines. The result lives in buf.
 */
const char *
cfg_esc(char *buf, size_t size, const char *s, size_t len)
{
	log_escape(buf, size, s, len);
	return (buf);
}

/* The scalar string of n, or NULL after saying what was expected. */
const char *
cfg_string(struct cfgctx *cx, const char *path, const struct ynode *n,
    const char *what)
{
	if (n->yn_type != YN_SCALAR || ynode_is_null(n)) {
		cfg_error(cx, n, "%s: expected %s", path, what);
		return (NULL);
	}
	return (n->yn_str);
}

/* Has the key at index i of map appeared before it? Say so if it has. */
int
cfg_duplicate(
    struct cfgctx *cx, const char *where, const struct ynode *map, size_t i)
{
	const struct ynode *key = map->yn_kids[i], *prev;
	char buf[80];
	size_t j;

	for (j = 0; j < i; j += 2) {
		prev = map->yn_kids[j];
		if (prev->yn_type == YN_SCALAR && prev->yn_len == key->yn_len &&
		    memcmp(prev->yn_str, key->yn_str, key->yn_len) == 0) {
			cfg_error(cx, key,
			    "duplicate key '%s' %s%s (first at line %zu)",
			    cfg_esc(buf, sizeof(buf), key->yn_str, key->yn_len),
			    where == NULL ? "at top level" : "in ",
			    where == NULL ? "" : where, prev->yn_line);
			return (1);
		}
	}
	return (0);
}

/*
 * Walk a mapping of name -> value at path, such as upstreams: or a model's
 * tiers:, and call fn for each entry. A null node is an empty mapping;
 * anything else that is not a mapping is reported as "expected a mapping
 * of what". Keys that are not strings and repeated keys are reported and
 * skipped, and so are entries with a YAML alias, which the reader has
 * already refused. What the name and the value must be is for fn to say.
 */
void
cfg_map_each(struct cfgctx *cx, const char *path, const struct ynode *n,
    const char *what, cfg_map_cb fn, void *arg)
{
	struct cfgentry en;
	const struct ynode *key, *val;
	char where[CFG_PATH_MAX], buf[80];
	size_t i;

	if (ynode_is_null(n))
		return;
	if (n->yn_type != YN_MAP) {
		cfg_error(cx, n, "%s: expected a mapping of %s", path, what);
		return;
	}
	for (i = 0; i + 1 < n->yn_nkids; i += 2) {
		key = n->yn_kids[i];
		val = n->yn_kids[i + 1];
		if (key->yn_type == YN_ALIAS || val->yn_type == YN_ALIAS)
			continue;
		if (key->yn_type != YN_SCALAR) {
			cfg_error(cx, key, "%s: keys must be strings", path);
			continue;
		}
		if (cfg_duplicate(cx, path, n, i))
			continue;
		cfg_esc(buf, sizeof(buf), key->yn_str, key->yn_len);
		snprintf(where, sizeof(where), "%s.%s", path, buf);
		en.en_path = path;
		en.en_name = buf;
		en.en_where = where;
		en.en_key = key;
		en.en_val = val;
		fn(cx, &en, arg);
	}
}

/*
 * Apply a table of keys to mapping n, storing into base. where names the
 * section for messages (NULL at top level); at is where a missing required
 * key is reported.
 */
void
cfg_apply(struct cfgctx *cx, const struct cfgkey *keys, const char *where,
    const struct ynode *at, const struct ynode *n, void *base)
{
	const struct cfgkey *k;
	const struct ynode *key, *val;
	char path[CFG_PATH_MAX], buf[80];
	unsigned long long seen = 0;
	size_t i, ki;

	if (ynode_is_null(n))
		n = NULL; /* "limits:" with nothing under it */
	else if (n->yn_type == YN_ALIAS)
		return;
	else if (n->yn_type != YN_MAP) {
		if (where == NULL)
			cfg_error(cx, n, "the top level must be a mapping");
		else
			cfg_error(cx, n, "%s: expected a mapping", where);
		return;
	}

	for (i = 0; n != NULL && i + 1 < n->yn_nkids; i += 2) {
		key = n->yn_kids[i];
		val = n->yn_kids[i + 1];
		if (key->yn_type == YN_ALIAS)
			continue;
		if (key->yn_type != YN_SCALAR) {
			cfg_error(cx, key, "%s: keys must be strings",
			    where == NULL ? "top level" : where);
			continue;
		}
		if (cfg_duplicate(cx, where, n, i))
			continue;
		for (k = keys, ki = 0; k->k_name != NULL; k++, ki++)
			if (strcmp(k->k_name, key->yn_str) == 0)
				break;
		if (k->k_name == NULL) {
			cfg_error(cx, key, "unknown key '%s' %s%s",
			    cfg_esc(buf, sizeof(buf), key->yn_str, key->yn_len),
			    where == NULL ? "at top level" : "in ",
			    where == NULL ? "" : where);
			continue;
		}
		if (ki >= 64)
			fatalx("%s: key table too long", __func__);
		seen |= 1ULL << ki;
		if (val->yn_type == YN_ALIAS)
			continue;
		if (where == NULL)
			snprintf(path, sizeof(path), "%s", k->k_name);
		else
			snprintf(path, sizeof(path), "%s.%s", where, k->k_name);
		k->k_parse(cx, k, path, val, (char *)base + k->k_off);
	}

	for (k = keys, ki = 0; k->k_name != NULL; k++, ki++) {
		if ((k->k_flags & CFGKEY_REQUIRED) && !(seen & (1ULL << ki)))
			cfg_error(cx, at, "%s: missing required key '%s'",
			    where, k->k_name);
	}
}

/* A nested section: apply the key's sub-table to the mapping n. */
void
cfgp_section(struct cfgctx *cx, const struct cfgkey *k, const char *path,
    const struct ynode *n, void *dst)
{
	cfg_apply(cx, k->k_sub, path, n, n, dst);
}

/* A decimal integer: plain (unquoted), optional minus, digits. */
void
cfgp_int(struct cfgctx *cx, const struct cfgkey *k, const char *path,
    const struct ynode *n, void *dst)
{
	const char *s;
	long long v = 0;
	int neg = 0, big = 0;

	if (n->yn_type != YN_SCALAR || !n->yn_plain || n->yn_len == 0)
		goto bad;
	s = n->yn_str;
	if (*s == '-') {
		neg = 1;
		s++;
	}
	if (*s == '\0')
		goto bad;
	for (; *s != '\0'; s++) {
		if (*s < '0' || *s > '9')
			goto bad;
		if (v > (LLONG_MAX - (*s - '0')) / 10)
			big = 1;
		else
			v = v * 10 + (*s - '0');
	}
	if (neg)
		v = -v;
	if (big || v < k->k_min || v > k->k_max) {
		cfg_error(cx, n, "%s: must be between %lld and %lld", path,
		    k->k_min, k->k_max);
		return;
	}
	*(int *)dst = (int)v;
	return;
bad:
	cfg_error(cx, n, "%s: expected an integer", path);
}

/*
 * Digits followed by one of the suffixes in units. Returns 0 and the
 * scaled value, -1 when the text does not match, -2 on overflow.
 */
static int
cfg_scaled(const char *s, const struct cfgunit *units, unsigned long long *out)
{
	const struct cfgunit *u;
	unsigned long long v = 0;
	const char *p;

	for (p = s; *p >= '0' && *p <= '9'; p++) {
		if (v > (ULLONG_MAX - (unsigned)(*p - '0')) / 10)
			return (-2);
		v = v * 10 + (unsigned)(*p - '0');
	}
	if (p == s)
		return (-1);
	for (u = units; u->u_suffix != NULL; u++) {
		if (strcmp(p, u->u_suffix) != 0)
			continue;
		if (v > ULLONG_MAX / u->u_mult)
			return (-2);
		*out = v * u->u_mult;
		return (0);
	}
	return (-1);
}

/* A byte count: 1048576, or 1024KiB, 1MiB, 1GiB. */
void
cfgp_size(struct cfgctx *cx, const struct cfgkey *k, const char *path,
    const struct ynode *n, void *dst)
{
	unsigned long long v;
	int rc = -1;

	if (n->yn_type == YN_SCALAR)
		rc = cfg_scaled(n->yn_str, size_units, &v);
	if (rc == -1) {
		cfg_error(cx, n,
		    "%s: expected a size (bytes, or a number with KiB, MiB "
		    "or GiB)",
		    path);
		return;
	}
	if (rc == -2 || v > SIZE_MAX) {
		cfg_error(cx, n, "%s: size out of range", path);
		return;
	}
	if (v < (unsigned long long)k->k_min) {
		if (k->k_min == 1)
			cfg_error(cx, n, "%s: must be greater than 0", path);
		else if (k->k_min % 1024 == 0)
			cfg_error(cx, n, "%s: must be at least %lldKiB", path,
			    k->k_min / 1024);
		else
			cfg_error(cx, n, "%s: must be at least %lld bytes",
			    path, k->k_min);
		return;
	}
	*(size_t *)dst = (size_t)v;
}

/* A duration: 30 (seconds), or 500ms, 30s, 5m, 1h; kept in ms. */
void
cfgp_duration(struct cfgctx *cx, const struct cfgkey *k, const char *path,
    const struct ynode *n, void *dst)
{
	unsigned long long v;
	int rc = -1;

	if (n->yn_type == YN_SCALAR)
		rc = cfg_scaled(n->yn_str, duration_units, &v);
	if (rc == -1) {
		cfg_error(cx, n,
		    "%s: expected a duration (seconds, or a number with ms, "
		    "s, m or h)",
		    path);
		return;
	}
	if (rc == -2 || v > LONG_MAX) {
		cfg_error(cx, n, "%s: duration out of range", path);
		return;
	}
	if (v < (unsigned long long)k->k_min) {
		cfg_error(cx, n, "%s: must be greater than 0", path);
		return;
	}
	*(long *)dst = (long)v;
}

/* A string stored as an allocated copy. */
void
cfgp_strdup(struct cfgctx *cx, const struct cfgkey *k, const char *path,
    const struct ynode *n, void *dst)
{
	char **out = dst;
	const char *s;

	(void)k;
	if ((s = cfg_string(cx, path, n, "a string")) == NULL)
		return;
	if (s[0] == '\0') {
		cfg_error(cx, n, "%s: must not be empty", path);
		return;
	}
	free(*out);
	*out = xstrdup(s);
}

/* A path that need not exist yet, relative to the directory of the file. */
void
cfgp_path(struct cfgctx *cx, const struct cfgkey *k, const char *path,
    const struct ynode *n, void *dst)
{
	char **out = dst;
	const char *s;

	(void)k;
	if ((s = cfg_string(cx, path, n, "a path")) == NULL)
		return;
	if (s[0] == '\0') {
		cfg_error(cx, n, "%s: must not be empty", path);
		return;
	}
	free(*out);
	if (s[0] == '/')
		*out = xstrdup(s);
	else
		xasprintf(out, "%s/%s", cx->cx_dir, s);
}

/*
 * A file that must exist and be readable now; relative to the directory of
 * the file being read, kept as an absolute path.
 */
void
cfgp_file(struct cfgctx *cx, const struct cfgkey *k, const char *path,
    const struct ynode *n, void *dst)
{
	char **out = dst;
	char *joined = NULL, *abs = NULL, buf[160];
	const char *s;
	struct stat st;
	int fd = -1;

	(void)k;
	if ((s = cfg_string(cx, path, n, "a file path")) == NULL)
		return;
	if (s[0] == '/')
		joined = xstrdup(s);
	else
		xasprintf(&joined, "%s/%s", cx->cx_dir, s);
	cfg_esc(buf, sizeof(buf), joined, strlen(joined));
	if ((abs = realpath(joined, NULL)) == NULL ||
	    (fd = open(abs, O_RDONLY | O_CLOEXEC)) == -1) {
		cfg_error(cx, n, "%s: cannot read '%s': %s", path, buf,
		    strerror(errno));
		goto out;
	}
	if (fstat(fd, &st) == -1 || !S_ISREG(st.st_mode)) {
		cfg_error(cx, n, "%s: '%s' is not a regular file", path, buf);
		goto out;
	}
	free(*out);
	*out = abs;
	abs = NULL;
out:
	if (fd != -1)
		close(fd);
	free(abs);
	free(joined);
}
