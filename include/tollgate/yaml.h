/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The YAML walker: reads a YAML file into a small tree (struct ynode) and
 * walks it against tables of keys (struct cfgkey), checking every value
 * and reporting every mistake as "file:line:col: message" without
 * stopping at the first. Its one job is turning a YAML file into checked
 * C values with good errors; what the keys mean is for its callers: the
 * config (src/config/), the policies (src/policy/parse.c) and the price
 * table (src/pricing/load.c). It calls none of them; beside libyaml it
 * knows only the tag names (tags.h), for the tag parsers.
 */
#ifndef TOLLGATE_YAML_H
#define TOLLGATE_YAML_H

#include <stddef.h>

/* Every error found while loading, each "file:line:col: message". */
struct cfgerrs {
	char **ce_msgs;
	size_t ce_n;
	char **ce_warns; /* what the caller chose to only warn about */
	size_t ce_nwarn;
};

/* Room for a dotted key path such as "upstreams.NAME.connect_timeout". */
#define CFG_PATH_MAX 192

/* One node of the parsed YAML; strings are our own copies. */
enum ynode_type {
	YN_SCALAR,
	YN_MAP,
	YN_SEQ,
	YN_ALIAS, /* refused; kept only so the walk can skip it quietly */
};

/* Owned by its parent; the root by the caller of cfg_parse_yaml. */
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

/* Where one error of a load was found, to sort them by. */
struct cfgpos {
	size_t p_line; /* 0: no position */
	size_t p_col;
	size_t p_idx; /* its index in cx_errs */
	char *p_msg; /* borrowed from cx_errs while sorting */
};

/* State of one load of one file. */
struct cfgctx {
	const char *cx_file; /* path as the caller gave it, for messages */
	char *cx_dir; /* its directory, for relative paths */
	struct cfgerrs *cx_errs; /* borrowed; may be NULL */
	size_t cx_nerr; /* errors found by this load */
	const char *cx_buf; /* file contents, for reader error positions */
	size_t cx_len;
	int cx_sort; /* keep cx_pos, for cfg_sort_errors */
	int cx_flags; /* the caller's; config: CONFIG_SECRETS_OPTIONAL */
	struct cfgpos *cx_pos; /* owned; freed by cfg_sort_errors */
	size_t cx_npos;
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

/*
 * One entry of a mapping of name -> value walked by cfg_map_each. The
 * strings live in cfg_map_each's frame, for the callback's messages.
 */
struct cfgentry {
	const char *en_path; /* the mapping's path, "upstreams" */
	const char *en_name; /* the key, escaped */
	const char *en_where; /* the value's path, "upstreams.NAME" */
	const struct ynode *en_key; /* a string, the first of its name */
	const struct ynode *en_val; /* never a YAML alias */
};
typedef void (*cfg_map_cb)(struct cfgctx *, const struct cfgentry *, void *);

/* Table entries: key name, field, and the smallest value allowed. */
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

/* cfgyaml.c */
void ynode_free(struct ynode *);
int ynode_is_null(const struct ynode *);
int cfg_parse_yaml(struct cfgctx *, struct ynode **);
char *cfg_read_file(struct cfgctx *, const char *, size_t *);

/* cfgparse.c */
void cfgerrs_add(struct cfgerrs *, const char *, ...)
    __attribute__((format(printf, 2, 3)));
void cfgerrs_free(struct cfgerrs *);
void cfg_error(struct cfgctx *, const struct ynode *, const char *, ...)
    __attribute__((format(printf, 3, 4)));
void cfg_error_at(struct cfgctx *, size_t, size_t, const char *, ...)
    __attribute__((format(printf, 4, 5)));
void cfg_sort_errors(struct cfgctx *);
const struct ynode *cfg_key(const struct ynode *, const char *);
const struct ynode *cfg_value(const struct ynode *, const char *);
const char *cfg_esc(char *, size_t, const char *, size_t);
const char *cfg_string(
    struct cfgctx *, const char *, const struct ynode *, const char *);
int cfg_duplicate(struct cfgctx *, const char *, const struct ynode *, size_t);
void cfg_map_each(struct cfgctx *, const char *, const struct ynode *,
    const char *, cfg_map_cb, void *);
void cfg_apply(struct cfgctx *, const struct cfgkey *, const char *,
    const struct ynode *, const struct ynode *, void *);
void cfgp_section(struct cfgctx *, const struct cfgkey *, const char *,
    const struct ynode *, void *);
void cfgp_int(struct cfgctx *, const struct cfgkey *, const char *,
    const struct ynode *, void *);
void cfgp_size(struct cfgctx *, const struct cfgkey *, const char *,
    const struct ynode *, void *);
void cfgp_duration(struct cfgctx *, const struct cfgkey *, const char *,
    const struct ynode *, void *);
void cfgp_strdup(struct cfgctx *, const struct cfgkey *, const char *,
    const struct ynode *, void *);
void cfgp_path(struct cfgctx *, const struct cfgkey *, const char *,
    const struct ynode *, void *);
void cfgp_file(struct cfgctx *, const struct cfgkey *, const char *,
    const struct ynode *, void *);

/* cfgtags.c */
void cfgp_tag_map(struct cfgctx *, const struct cfgkey *, const char *,
    const struct ynode *, void *);
void cfgp_tag_list(struct cfgctx *, const struct cfgkey *, const char *,
    const struct ynode *, void *);

#endif
