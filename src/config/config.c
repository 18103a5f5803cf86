/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The configuration loader. tollgate.yaml is read with libyaml's event API
 * into a small tree of our own (every string copied out, so nothing of
 * libyaml outlives the parse), and the tree is then walked against tables
 * of known keys: each key names a parser that checks the value and stores
 * it at an offset in struct config or struct upstream_conf. A new section
 * is one more table plus, when its shape is unusual, one callback.
 *
 * Nothing stops at the first mistake: every error is collected as
 * "file:line:col: message" (tmux cfg_add_cause, relayd file->errors) so a
 * user fixes the whole file in one pass, and the half-built config is freed
 * unless the error count is zero. The YAML is pure data: anchors, aliases,
 * tags and multiple documents are refused.
 */
#include <sys/stat.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <curl/curl.h>
#include <yaml.h>

#include "tollgate/config.h"
#include "tollgate/log.h"
#include "tollgate/util.h"

/* A config file larger than this is refused before it is parsed. */
#define CONFIG_MAX_FILE_BYTES (4 * 1024 * 1024)
/* Deeper nesting than this is refused; tollgate.yaml needs about five. */
#define CONFIG_MAX_DEPTH 64
/* Longest upstream name: it becomes a path segment and a log field. */
#define CONFIG_MAX_UPSTREAM_NAME 64
/* Room for a dotted key path such as "upstreams.NAME.connect_timeout". */
#define CONFIG_PATH_MAX 192

/* One node of the parsed YAML; strings are our own copies. */
enum ynode_type {
	YN_SCALAR,
	YN_MAP,
	YN_SEQ,
	YN_ALIAS, /* refused; kept only so the walk can skip it quietly */
};

struct ynode {
	enum ynode_type yn_type;
	size_t yn_line; /* 1-based */
	size_t yn_col; /* 1-based */
	char *yn_str; /* scalar: NUL-terminated copy of the value */
	size_t yn_len;
	int yn_plain; /* scalar was unquoted */
	/* Map: key, value, key, value ...; sequence: the items. */
	struct ynode **yn_kids;
	size_t yn_nkids;
	size_t yn_cap;
};

/* State of one config_load call. */
struct cfgctx {
	const char *cx_file; /* path as the caller gave it, for messages */
	char *cx_dir; /* its directory, for relative paths */
	struct cfgerrs *cx_errs; /* borrowed; may be NULL */
	size_t cx_nerr; /* errors found by this load */
	const char *cx_buf; /* file contents, for reader error positions */
	size_t cx_len;
};

/*
 * One key of a section: the parser gets the key's dotted path (for
 * messages), the value node and a pointer k_off bytes into the section's
 * base struct.
 */
struct cfgkey {
	const char *k_name;
	void (*k_parse)(struct cfgctx *, const struct cfgkey *, const char *,
	    const struct ynode *, void *);
	size_t k_off;
	long long k_min; /* integers, sizes and durations */
	long long k_max; /* integers only */
	int k_flags;
	const struct cfgkey *k_sub; /* keys of a nested section */
};
#define CFGKEY_REQUIRED 0x1

static void cfg_verror(struct cfgctx *, size_t, size_t, const char *, va_list)
    __attribute__((format(printf, 4, 0)));
static void cfg_error(struct cfgctx *, const struct ynode *, const char *, ...)
    __attribute__((format(printf, 3, 4)));

static void cfgp_section(struct cfgctx *, const struct cfgkey *, const char *,
    const struct ynode *, void *);
static void cfgp_int(struct cfgctx *, const struct cfgkey *, const char *,
    const struct ynode *, void *);
static void cfgp_size(struct cfgctx *, const struct cfgkey *, const char *,
    const struct ynode *, void *);
static void cfgp_duration(struct cfgctx *, const struct cfgkey *, const char *,
    const struct ynode *, void *);
static void cfgp_listen(struct cfgctx *, const struct cfgkey *, const char *,
    const struct ynode *, void *);
static void cfgp_upstreams(struct cfgctx *, const struct cfgkey *, const char *,
    const struct ynode *, void *);
static void cfgp_upstream_type(struct cfgctx *, const struct cfgkey *,
    const char *, const struct ynode *, void *);
static void cfgp_base_url(struct cfgctx *, const struct cfgkey *, const char *,
    const struct ynode *, void *);
static void cfgp_file(struct cfgctx *, const struct cfgkey *, const char *,
    const struct ynode *, void *);

/* Table entries: key name, field, and the smallest value allowed. */
#define CF_OFF(f) offsetof(struct config, f)
#define UC_OFF(f) offsetof(struct upstream_conf, f)
#define KEY_INT(n, off, min, max)                                              \
	{                                                                      \
		.k_name = (n), .k_parse = cfgp_int, .k_off = (off),            \
		.k_min = (min), .k_max = (max)                                 \
	}
#define KEY_SIZE(n, off, min)                                                  \
	{                                                                      \
		.k_name = (n), .k_parse = cfgp_size, .k_off = (off),           \
		.k_min = (min)                                                 \
	}
#define KEY_DURATION(n, off)                                                   \
	{                                                                      \
		.k_name = (n), .k_parse = cfgp_duration, .k_off = (off),       \
		.k_min = 1                                                     \
	}
#define KEY_CALL(n, fn, off, flags)                                            \
	{                                                                      \
		.k_name = (n), .k_parse = (fn), .k_off = (off),                \
		.k_flags = (flags)                                             \
	}
#define KEY_SECTION(n, keys)                                                   \
	{                                                                      \
		.k_name = (n), .k_parse = cfgp_section, .k_sub = (keys)        \
	}
#define KEY_END                                                                \
	{                                                                      \
		.k_name = NULL                                                 \
	}

static const struct cfgkey limits_keys[] = {
    KEY_SIZE("max_body_bytes", CF_OFF(cf_max_body_bytes), 1),
    KEY_SIZE("max_header_bytes", CF_OFF(cf_max_header_bytes), 1024),
    KEY_INT("max_headers", CF_OFF(cf_max_headers), 1, 10000),
    KEY_INT("max_connections", CF_OFF(cf_max_connections), 1, 1000000),
    KEY_DURATION("request_timeout", CF_OFF(cf_request_timeout_ms)),
    KEY_DURATION("keepalive_timeout", CF_OFF(cf_keepalive_timeout_ms)),
    KEY_DURATION("drain_timeout", CF_OFF(cf_drain_timeout_ms)),
    KEY_SIZE("stream_high_watermark", CF_OFF(cf_stream_high_watermark), 4096),
    KEY_END,
};

static const struct cfgkey upstream_keys[] = {
    KEY_CALL("type", cfgp_upstream_type, UC_OFF(uc_type), CFGKEY_REQUIRED),
    KEY_CALL("base_url", cfgp_base_url, 0, CFGKEY_REQUIRED),
    KEY_DURATION("connect_timeout", UC_OFF(uc_connect_timeout_ms)),
    KEY_DURATION("header_timeout", UC_OFF(uc_header_timeout_ms)),
    KEY_DURATION("idle_timeout", UC_OFF(uc_idle_timeout_ms)),
    KEY_CALL("ca_file", cfgp_file, UC_OFF(uc_ca_file), 0),
    KEY_END,
};

/*
 * The top level. admin, ledger, prices, attribution, policies and alerts
 * join this table when they are implemented; until then they are unknown
 * keys, so a file written for a later tollgate fails loudly instead of
 * being half obeyed.
 */
static const struct cfgkey top_keys[] = {
    KEY_CALL("listen", cfgp_listen, 0, 0),
    KEY_SECTION("limits", limits_keys),
    KEY_CALL("upstreams", cfgp_upstreams, 0, 0),
    KEY_END,
};

static const struct {
	enum upstream_type type;
	const char *name;
} upstream_types[] = {
    {UPSTREAM_OPENAI, "openai"},
    {UPSTREAM_ANTHROPIC, "anthropic"},
    {UPSTREAM_GEMINI, "gemini"},
    {UPSTREAM_AZURE_OPENAI, "azure_openai"},
    {UPSTREAM_OPENAI_COMPATIBLE, "openai_compatible"},
};

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
	ce->ce_msgs =
	    xreallocarray(ce->ce_msgs, ce->ce_n + 1, sizeof(*ce->ce_msgs));
	ce->ce_msgs[ce->ce_n++] = full;
}

/* Record an error at node n, or with no position when n is NULL. */
static void
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

static void cfg_error_at(struct cfgctx *cx, size_t line, size_t col,
    const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static void
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
static const char *
esc(char *buf, size_t size, const char *s, size_t len)
{
	log_escape(buf, size, s, len);
	return (buf);
}

/* Tree building. */

static struct ynode *
ynode_new(enum ynode_type type, const yaml_mark_t *mark)
{
	struct ynode *n;

	n = xcalloc(1, sizeof(*n));
	n->yn_type = type;
	n->yn_line = mark->line + 1;
	n->yn_col = mark->column + 1;
	return (n);
}

static void
ynode_free(struct ynode *n)
{
	size_t i;

	if (n == NULL)
		return;
	for (i = 0; i < n->yn_nkids; i++)
		ynode_free(n->yn_kids[i]);
	free(n->yn_kids);
	free(n->yn_str);
	free(n);
}

static void
ynode_add(struct ynode *n, struct ynode *kid)
{
	if (n->yn_nkids == n->yn_cap) {
		n->yn_cap = n->yn_cap == 0 ? 8 : n->yn_cap * 2;
		n->yn_kids =
		    xreallocarray(n->yn_kids, n->yn_cap, sizeof(*n->yn_kids));
	}
	n->yn_kids[n->yn_nkids++] = kid;
}

/* Plain "", "~" and "null" are YAML's null: an empty section. */
static int
ynode_is_null(const struct ynode *n)
{
	if (n->yn_type != YN_SCALAR || !n->yn_plain)
		return (0);
	return (n->yn_len == 0 || strcmp(n->yn_str, "~") == 0 ||
	    strcmp(n->yn_str, "null") == 0 || strcmp(n->yn_str, "Null") == 0 ||
	    strcmp(n->yn_str, "NULL") == 0);
}

/* Report libyaml's own error: the problem at its mark. */
static void
cfg_yaml_error(struct cfgctx *cx, const yaml_parser_t *p)
{
	size_t i, line = 1, col = 1;

	switch (p->error) {
	case YAML_MEMORY_ERROR:
		fatalx("%s: libyaml: out of memory", __func__);
	case YAML_READER_ERROR:
		/* The reader has only a byte offset; count lines ourselves. */
		for (i = 0; i < p->problem_offset && i < cx->cx_len; i++) {
			if (cx->cx_buf[i] == '\n') {
				line++;
				col = 1;
			} else
				col++;
		}
		if (p->problem_value != -1)
			cfg_error_at(cx, line, col, "%s (byte 0x%02x)",
			    p->problem, (unsigned)p->problem_value & 0xffU);
		else
			cfg_error_at(cx, line, col, "%s", p->problem);
		break;
	default:
		if (p->context != NULL)
			cfg_error_at(cx, p->problem_mark.line + 1,
			    p->problem_mark.column + 1, "%s (%s at %zu:%zu)",
			    p->problem, p->context, p->context_mark.line + 1,
			    p->context_mark.column + 1);
		else
			cfg_error_at(cx, p->problem_mark.line + 1,
			    p->problem_mark.column + 1, "%s",
			    p->problem != NULL ? p->problem : "YAML error");
		break;
	}
}

static int
cfg_next(struct cfgctx *cx, yaml_parser_t *p, yaml_event_t *ev)
{
	if (!yaml_parser_parse(p, ev)) {
		cfg_yaml_error(cx, p);
		return (-1);
	}
	return (0);
}

/* Refuse anchors and explicit tags: the config is pure data. */
static void
cfg_check_props(struct cfgctx *cx, const struct ynode *n,
    const yaml_char_t *anchor, const yaml_char_t *tag)
{
	if (anchor != NULL)
		cfg_error(cx, n,
		    "YAML anchors are not allowed (the config is plain data)");
	if (tag != NULL)
		cfg_error(cx, n,
		    "YAML tags are not allowed (the config is plain data)");
}

/*
 * Build the node that starts with event ev (which the caller deletes),
 * reading further events for collections. Returns NULL after a YAML syntax
 * error, which ends the parse.
 */
static struct ynode *
cfg_read_node(
    struct cfgctx *cx, yaml_parser_t *p, const yaml_event_t *ev, int depth)
{
	struct ynode *n, *kid;
	yaml_event_t cev;
	yaml_event_type_t end;

	switch (ev->type) {
	case YAML_SCALAR_EVENT:
		n = ynode_new(YN_SCALAR, &ev->start_mark);
		n->yn_len = ev->data.scalar.length;
		n->yn_str = xmalloc(n->yn_len + 1);
		memcpy(n->yn_str, ev->data.scalar.value, n->yn_len);
		n->yn_str[n->yn_len] = '\0';
		n->yn_plain = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
		cfg_check_props(
		    cx, n, ev->data.scalar.anchor, ev->data.scalar.tag);
		if (memchr(n->yn_str, '\0', n->yn_len) != NULL)
			cfg_error(cx, n, "NUL bytes are not allowed");
		return (n);
	case YAML_ALIAS_EVENT:
		n = ynode_new(YN_ALIAS, &ev->start_mark);
		cfg_error(cx, n,
		    "YAML aliases are not allowed (the config is plain data)");
		return (n);
	case YAML_SEQUENCE_START_EVENT:
		n = ynode_new(YN_SEQ, &ev->start_mark);
		cfg_check_props(cx, n, ev->data.sequence_start.anchor,
		    ev->data.sequence_start.tag);
		end = YAML_SEQUENCE_END_EVENT;
		break;
	case YAML_MAPPING_START_EVENT:
		n = ynode_new(YN_MAP, &ev->start_mark);
		cfg_check_props(cx, n, ev->data.mapping_start.anchor,
		    ev->data.mapping_start.tag);
		end = YAML_MAPPING_END_EVENT;
		break;
	default:
		fatalx("%s: unexpected libyaml event %d", __func__, ev->type);
	}

	if (depth >= CONFIG_MAX_DEPTH) {
		cfg_error(
		    cx, n, "nesting deeper than %d levels", CONFIG_MAX_DEPTH);
		ynode_free(n);
		return (NULL);
	}
	for (;;) {
		if (cfg_next(cx, p, &cev) == -1) {
			ynode_free(n);
			return (NULL);
		}
		if (cev.type == end) {
			yaml_event_delete(&cev);
			return (n);
		}
		kid = cfg_read_node(cx, p, &cev, depth + 1);
		yaml_event_delete(&cev);
		if (kid == NULL) {
			ynode_free(n);
			return (NULL);
		}
		ynode_add(n, kid);
	}
}

/*
 * Parse buf into a tree. *rootp is NULL for an empty stream. Returns -1
 * after a syntax error or a second document.
 */
static int
cfg_parse_yaml(struct cfgctx *cx, struct ynode **rootp)
{
	yaml_parser_t p;
	yaml_event_t ev;
	struct ynode *root = NULL;
	int state = 0; /* 0 before a document, 1 in it, 2 after it */
	int rv = -1;

	*rootp = NULL;
	if (!yaml_parser_initialize(&p))
		fatalx("%s: yaml_parser_initialize", __func__);
	yaml_parser_set_input_string(
	    &p, (const unsigned char *)cx->cx_buf, cx->cx_len);
	for (;;) {
		if (cfg_next(cx, &p, &ev) == -1)
			goto fail;
		switch (ev.type) {
		case YAML_STREAM_START_EVENT:
		case YAML_DOCUMENT_END_EVENT:
			break;
		case YAML_DOCUMENT_START_EVENT:
			if (state != 0) {
				cfg_error_at(cx, ev.start_mark.line + 1,
				    ev.start_mark.column + 1,
				    "more than one YAML document");
				yaml_event_delete(&ev);
				goto fail;
			}
			state = 1;
			break;
		case YAML_STREAM_END_EVENT:
			yaml_event_delete(&ev);
			*rootp = root;
			root = NULL;
			rv = 0;
			goto fail;
		default:
			/* The root node of the one document. */
			root = cfg_read_node(cx, &p, &ev, 0);
			if (root == NULL) {
				yaml_event_delete(&ev);
				goto fail;
			}
			state = 2;
			break;
		}
		yaml_event_delete(&ev);
	}
fail:
	ynode_free(root);
	yaml_parser_delete(&p);
	return (rv);
}

/* The walk. */

/* The scalar string of n, or NULL after saying what was expected. */
static const char *
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
static int
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
			    esc(buf, sizeof(buf), key->yn_str, key->yn_len),
			    where == NULL ? "at top level" : "in ",
			    where == NULL ? "" : where, prev->yn_line);
			return (1);
		}
	}
	return (0);
}

/*
 * Apply a table of keys to mapping n, storing into base. where names the
 * section for messages (NULL at top level); at is where a missing required
 * key is reported.
 */
static void
cfg_apply(struct cfgctx *cx, const struct cfgkey *keys, const char *where,
    const struct ynode *at, const struct ynode *n, void *base)
{
	const struct cfgkey *k;
	const struct ynode *key, *val;
	char path[CONFIG_PATH_MAX], buf[80];
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
			    esc(buf, sizeof(buf), key->yn_str, key->yn_len),
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

static void
cfgp_section(struct cfgctx *cx, const struct cfgkey *k, const char *path,
    const struct ynode *n, void *dst)
{
	cfg_apply(cx, k->k_sub, path, n, n, dst);
}

/* A decimal integer: plain (unquoted), optional minus, digits. */
static void
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
static void
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
static void
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

/* HOST:PORT with HOST an IPv4 literal, [IPv6] or localhost. */
static void
cfgp_listen(struct cfgctx *cx, const struct cfgkey *k, const char *path,
    const struct ynode *n, void *dst)
{
	struct config *cf = dst;
	struct in_addr a4;
	struct in6_addr a6;
	const char *s, *colon, *port, *p;
	char *host = NULL, buf[80];
	long v = 0;

	(void)k;
	if (n->yn_type == YN_SEQ) {
		/* listen: [::1]:8787 unquoted reads as a YAML list. */
		cfg_error(cx, n,
		    "%s: expected \"HOST:PORT\" (quote IPv6 addresses: "
		    "\"[::1]:8787\")",
		    path);
		return;
	}
	if ((s = cfg_string(cx, path, n, "HOST:PORT")) == NULL)
		return;
	if (*s == '[') {
		if ((p = strchr(s, ']')) == NULL || p[1] != ':')
			goto bad;
		host = xstrndup(s + 1, (size_t)(p - s - 1));
		port = p + 2;
		if (inet_pton(AF_INET6, host, &a6) != 1) {
			cfg_error(cx, n, "%s: '%s' is not an IPv6 address",
			    path, esc(buf, sizeof(buf), host, strlen(host)));
			goto out;
		}
	} else {
		if ((colon = strrchr(s, ':')) == NULL)
			goto bad;
		if (strchr(s, ':') != colon) {
			cfg_error(cx, n,
			    "%s: an IPv6 address goes in brackets, e.g. "
			    "\"[::1]:8787\"",
			    path);
			return;
		}
		host = xstrndup(s, (size_t)(colon - s));
		port = colon + 1;
		if (*host == '\0')
			goto bad;
		if (strcmp(host, "localhost") == 0) {
			/* Bind the IPv4 loopback, as 127.0.0.1 would. */
			free(host);
			host = xstrdup("127.0.0.1");
		} else if (inet_pton(AF_INET, host, &a4) != 1) {
			cfg_error(cx, n,
			    "%s: host '%s' is not an IP address or localhost",
			    path, esc(buf, sizeof(buf), host, strlen(host)));
			goto out;
		}
	}
	for (p = port; *p >= '0' && *p <= '9' && v <= 65535; p++)
		v = v * 10 + (*p - '0');
	if (*port == '\0' || *p != '\0' || v > 65535) {
		cfg_error(cx, n, "%s: bad port '%s' (expected 0-65535)", path,
		    esc(buf, sizeof(buf), port, strlen(port)));
		goto out;
	}
	free(cf->cf_listen_host);
	cf->cf_listen_host = host;
	cf->cf_listen_port = (int)v;
	return;
bad:
	cfg_error(cx, n, "%s: expected HOST:PORT, e.g. 127.0.0.1:8787", path);
out:
	free(host);
}

static void
upstream_defaults(struct upstream_conf *uc)
{
	uc->uc_connect_timeout_ms = 10 * 1000;
	uc->uc_header_timeout_ms = 600 * 1000;
	uc->uc_idle_timeout_ms = 300 * 1000;
}

/* Names become the first path segment of /{name}/... routes. */
static void
cfg_check_upstream_name(struct cfgctx *cx, const struct ynode *key)
{
	const char *s = key->yn_str;
	char buf[80];
	size_t i;
	int ok;

	ok = key->yn_len > 0 && key->yn_len <= CONFIG_MAX_UPSTREAM_NAME;
	for (i = 0; ok && i < key->yn_len; i++) {
		if ((s[i] >= 'a' && s[i] <= 'z') ||
		    (s[i] >= '0' && s[i] <= '9'))
			continue;
		if (i > 0 && (s[i] == '_' || s[i] == '-'))
			continue;
		ok = 0;
	}
	if (!ok) {
		cfg_error(cx, key,
		    "upstreams: bad upstream name '%s' "
		    "(use [a-z0-9][a-z0-9_-]*, at most %d characters)",
		    esc(buf, sizeof(buf), s, key->yn_len),
		    CONFIG_MAX_UPSTREAM_NAME);
		return;
	}
	if (strcmp(s, "v1") == 0 || strcmp(s, "v1beta") == 0)
		cfg_error(cx, key,
		    "upstreams: the name '%s' is reserved (it would collide "
		    "with the /%s/ routes)",
		    s, s);
}

/* upstreams: a mapping of name -> upstream, each checked by upstream_keys. */
static void
cfgp_upstreams(struct cfgctx *cx, const struct cfgkey *k, const char *path,
    const struct ynode *n, void *dst)
{
	struct config *cf = dst;
	struct upstream_conf *uc;
	const struct ynode *key, *val;
	char where[CONFIG_PATH_MAX], buf[80];
	size_t i;

	(void)k;
	if (ynode_is_null(n))
		return;
	if (n->yn_type != YN_MAP) {
		cfg_error(
		    cx, n, "%s: expected a mapping of name: upstream", path);
		return;
	}
	if (n->yn_nkids < 2)
		return;
	cf->cf_upstreams = xcalloc(n->yn_nkids / 2, sizeof(*cf->cf_upstreams));
	for (i = 0; i + 1 < n->yn_nkids; i += 2) {
		key = n->yn_kids[i];
		val = n->yn_kids[i + 1];
		if (key->yn_type == YN_ALIAS)
			continue;
		if (key->yn_type != YN_SCALAR) {
			cfg_error(cx, key, "%s: keys must be strings", path);
			continue;
		}
		if (cfg_duplicate(cx, path, n, i))
			continue;
		cfg_check_upstream_name(cx, key);

		uc = &cf->cf_upstreams[cf->cf_nupstreams++];
		uc->uc_name = xstrdup(key->yn_str);
		upstream_defaults(uc);
		snprintf(where, sizeof(where), "%s.%s", path,
		    esc(buf, sizeof(buf), key->yn_str, key->yn_len));
		if (val->yn_type == YN_ALIAS)
			continue;
		if (val->yn_type != YN_MAP) {
			cfg_error(cx, val, "%s: expected a mapping", where);
			continue;
		}
		cfg_apply(cx, upstream_keys, where, key, val, uc);
	}
}

static void
cfgp_upstream_type(struct cfgctx *cx, const struct cfgkey *k, const char *path,
    const struct ynode *n, void *dst)
{
	const char *s;
	char buf[80];
	size_t i;

	(void)k;
	if ((s = cfg_string(cx, path, n, "an upstream type")) == NULL)
		return;
	for (i = 0; i < nitems(upstream_types); i++) {
		if (strcmp(s, upstream_types[i].name) == 0) {
			*(enum upstream_type *)dst = upstream_types[i].type;
			return;
		}
	}
	cfg_error(cx, n,
	    "%s: unknown type '%s' (expected openai, anthropic, gemini, "
	    "azure_openai or openai_compatible)",
	    path, esc(buf, sizeof(buf), s, n->yn_len));
}

/* 127.0.0.0/8, ::1 (also as ::ffff:127.x.y.z) and localhost. */
static int
host_is_loopback(const char *host)
{
	struct in_addr a4;
	struct in6_addr a6;

	if (strcasecmp(host, "localhost") == 0)
		return (1);
	if (inet_pton(AF_INET, host, &a4) == 1)
		return ((ntohl(a4.s_addr) >> 24) == 127);
	if (inet_pton(AF_INET6, host, &a6) == 1)
		return (IN6_IS_ADDR_LOOPBACK(&a6) ||
		    (IN6_IS_ADDR_V4MAPPED(&a6) && a6.s6_addr[12] == 127));
	return (0);
}

/* Is part present in u? Parts curl reports missing come back as 0. */
static int
url_has(CURLU *u, CURLUPart part)
{
	char *s = NULL;
	CURLUcode rc;

	rc = curl_url_get(u, part, &s, 0);
	curl_free(s);
	return (rc == CURLUE_OK);
}

/*
 * The upstream's base URL. It comes only from this file and carries
 * provider keys, so it is held to https (plain http only to this machine),
 * and anything that could redirect or smuggle credentials is refused.
 */
static void
cfgp_base_url(struct cfgctx *cx, const struct cfgkey *k, const char *path,
    const struct ynode *n, void *dst)
{
	struct upstream_conf *uc = dst;
	CURLU *u;
	CURLUcode rc;
	char *scheme = NULL, *host = NULL, *url = NULL, buf[160];
	const char *s;
	size_t len, nerr = cx->cx_nerr;

	(void)k;
	if ((s = cfg_string(cx, path, n, "a URL")) == NULL)
		return;
	if ((u = curl_url()) == NULL)
		fatalx("%s: curl_url", __func__);
	rc = curl_url_set(u, CURLUPART_URL, s, CURLU_NON_SUPPORT_SCHEME);
	if (rc != CURLUE_OK) {
		/* Not echoed: a URL that fails to parse may hold a key. */
		cfg_error(
		    cx, n, "%s: bad URL: %s", path, curl_url_strerror(rc));
		goto out;
	}
	if (curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK)
		fatalx("%s: URL without a scheme", __func__);
	if (strcmp(scheme, "https") != 0 && strcmp(scheme, "http") != 0) {
		cfg_error(cx, n, "%s: scheme '%s' is not allowed (use https)",
		    path, esc(buf, sizeof(buf), scheme, strlen(scheme)));
		goto out;
	}
	if (url_has(u, CURLUPART_USER) || url_has(u, CURLUPART_PASSWORD))
		cfg_error(cx, n, "%s: userinfo (user@) is not allowed", path);
	if (url_has(u, CURLUPART_QUERY) || strchr(s, '?') != NULL)
		cfg_error(cx, n, "%s: a query (?...) is not allowed", path);
	if (url_has(u, CURLUPART_FRAGMENT) || strchr(s, '#') != NULL)
		cfg_error(cx, n, "%s: a fragment (#...) is not allowed", path);
	rc = curl_url_get(u, CURLUPART_HOST, &host, 0);
	if (rc != CURLUE_OK || *host == '\0') {
		cfg_error(cx, n, "%s: missing host", path);
		goto out;
	}
	/* IPv6 hosts come back in brackets; keep the bare address. */
	len = strlen(host);
	if (host[0] == '[' && len >= 2 && host[len - 1] == ']') {
		memmove(host, host + 1, len - 2);
		host[len - 2] = '\0';
	}
	if (strcmp(scheme, "http") == 0 && !host_is_loopback(host))
		cfg_error(cx, n,
		    "%s: http is only allowed for loopback hosts (127.0.0.0/8, "
		    "::1, localhost); use https",
		    path);
	if (cx->cx_nerr != nerr)
		goto out;

	if (curl_url_get(u, CURLUPART_URL, &url, 0) != CURLUE_OK)
		fatalx("%s: curl_url_get", __func__);
	len = strlen(url);
	while (len > 0 && url[len - 1] == '/')
		len--;
	free(uc->uc_base_url);
	free(uc->uc_host);
	uc->uc_base_url = xstrndup(url, len);
	uc->uc_host = xstrdup(host);
out:
	curl_free(url);
	curl_free(host);
	curl_free(scheme);
	curl_url_cleanup(u);
}

/*
 * A file that must exist and be readable now; relative to the directory of
 * the config file, kept as an absolute path.
 */
static void
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
	esc(buf, sizeof(buf), joined, strlen(joined));
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

/* Loading. */

static void
config_defaults(struct config *cf)
{
	cf->cf_refs = 1;
	cf->cf_listen_host = xstrdup("127.0.0.1");
	cf->cf_listen_port = 8787;
	cf->cf_max_body_bytes = 32 * 1024 * 1024;
	cf->cf_max_header_bytes = 64 * 1024;
	cf->cf_max_headers = 100;
	cf->cf_max_connections = 1024;
	cf->cf_request_timeout_ms = 30 * 1000;
	cf->cf_keepalive_timeout_ms = 60 * 1000;
	cf->cf_drain_timeout_ms = 30 * 1000;
	cf->cf_stream_high_watermark = 256 * 1024;
}

static void
config_free(struct config *cf)
{
	struct upstream_conf *uc;
	size_t i;

	for (i = 0; i < cf->cf_nupstreams; i++) {
		uc = &cf->cf_upstreams[i];
		free(uc->uc_name);
		free(uc->uc_base_url);
		free(uc->uc_host);
		free(uc->uc_ca_file);
	}
	free(cf->cf_upstreams);
	free(cf->cf_listen_host);
	free(cf->cf_path);
	free(cf);
}

/* Read the whole file, refusing one over CONFIG_MAX_FILE_BYTES. */
static char *
cfg_read_file(struct cfgctx *cx, const char *path, size_t *lenp)
{
	char *buf = NULL;
	size_t len = 0;
	ssize_t r;
	int fd;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1) {
		cfg_error(cx, NULL, "%s", strerror(errno));
		return (NULL);
	}
	buf = xmalloc(CONFIG_MAX_FILE_BYTES + 1);
	for (;;) {
		r = read(fd, buf + len, CONFIG_MAX_FILE_BYTES + 1 - len);
		if (r == -1 && errno == EINTR)
			continue;
		if (r == -1) {
			cfg_error(cx, NULL, "%s", strerror(errno));
			goto fail;
		}
		if (r == 0)
			break;
		len += (size_t)r;
		if (len > CONFIG_MAX_FILE_BYTES) {
			cfg_error(cx, NULL, "file is larger than %d bytes",
			    CONFIG_MAX_FILE_BYTES);
			goto fail;
		}
	}
	close(fd);
	buf[len] = '\0';
	*lenp = len;
	return (buf);
fail:
	close(fd);
	free(buf);
	return (NULL);
}

/*
 * Load and check the file at path. Returns a new config (one reference,
 * generation 0), or NULL with every error found appended to errs.
 */
struct config *
config_load(const char *path, struct cfgerrs *errs)
{
	struct cfgctx cx;
	struct config *cf = NULL;
	struct ynode *root = NULL;
	const char *slash;
	char *buf = NULL;
	size_t len = 0;

	memset(&cx, 0, sizeof(cx));
	cx.cx_file = path;
	cx.cx_errs = errs;
	if ((slash = strrchr(path, '/')) == NULL)
		cx.cx_dir = xstrdup(".");
	else if (slash == path)
		cx.cx_dir = xstrdup("/");
	else
		cx.cx_dir = xstrndup(path, (size_t)(slash - path));

	if ((buf = cfg_read_file(&cx, path, &len)) == NULL)
		goto fail;
	cx.cx_buf = buf;
	cx.cx_len = len;
	if (cfg_parse_yaml(&cx, &root) == -1)
		goto fail;

	cf = xcalloc(1, sizeof(*cf));
	config_defaults(cf);
	cf->cf_path = xstrdup(path);
	if (root != NULL)
		cfg_apply(&cx, top_keys, NULL, root, root, cf);
	if (cx.cx_nerr != 0)
		goto fail;

	ynode_free(root);
	free(buf);
	free(cx.cx_dir);
	return (cf);
fail:
	if (cf != NULL)
		config_free(cf);
	ynode_free(root);
	free(buf);
	free(cx.cx_dir);
	return (NULL);
}

/* Take another reference to cf. */
struct config *
config_ref(struct config *cf)
{
	cf->cf_refs++;
	return (cf);
}

/* Drop a reference; the last one frees the config. */
void
config_unref(struct config *cf)
{
	if (cf == NULL)
		return;
	if (cf->cf_refs <= 0)
		fatalx("%s: config refcount %d", __func__, cf->cf_refs);
	if (--cf->cf_refs == 0)
		config_free(cf);
}

/* The upstream called name (namelen bytes, not NUL-terminated), or NULL. */
const struct upstream_conf *
config_find_upstream(const struct config *cf, const char *name, size_t namelen)
{
	const struct upstream_conf *uc;
	size_t i;

	for (i = 0; i < cf->cf_nupstreams; i++) {
		uc = &cf->cf_upstreams[i];
		if (strlen(uc->uc_name) == namelen &&
		    memcmp(uc->uc_name, name, namelen) == 0)
			return (uc);
	}
	return (NULL);
}

/* The YAML spelling of an upstream type. */
const char *
config_upstream_type_name(enum upstream_type type)
{
	size_t i;

	for (i = 0; i < nitems(upstream_types); i++)
		if (upstream_types[i].type == type)
			return (upstream_types[i].name);
	return ("unknown");
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
}
