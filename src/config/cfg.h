/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The config loader's private header, shared by the three files under
 * src/config/ and by nothing else: the YAML tree (struct ynode, built by
 * cfgyaml.c), the state of one load (struct cfgctx), the key tables that
 * drive the walk (struct cfgkey and the KEY_* initialisers, walked by
 * cfgparse.c) and the prototypes config.c builds tollgate's schema from.
 * The public contract is include/tollgate/config.h.
 */
#ifndef TOLLGATE_CFG_H
#define TOLLGATE_CFG_H

#include <stddef.h>

struct cfgerrs;
struct config;

/* Room for a dotted key path such as "upstreams.NAME.connect_timeout". */
#define CONFIG_PATH_MAX 192

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

/* State of one config_load call. */
struct cfgctx {
	const char *cx_file; /* path as the caller gave it, for messages */
	char *cx_dir; /* its directory, for relative paths */
	struct cfgerrs *cx_errs; /* borrowed; may be NULL */
	size_t cx_nerr; /* errors found by this load */
	const char *cx_buf; /* file contents, for reader error positions */
	size_t cx_len;
	int cx_sort; /* keep cx_pos, for cfg_sort_errors */
	int cx_flags; /* CONFIG_SECRETS_OPTIONAL */
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
void cfg_error(struct cfgctx *, const struct ynode *, const char *, ...)
    __attribute__((format(printf, 3, 4)));
int cfg_secret_env(
    struct cfgctx *, const struct ynode *, const char *, const char *);
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
void cfgp_file(struct cfgctx *, const struct cfgkey *, const char *,
    const struct ynode *, void *);

/* config.c */
int cfg_hostport(
    struct cfgctx *, const char *, const struct ynode *, char **, int *);

/* cfgadmin.c */
void cfgp_admin(struct cfgctx *, const struct cfgkey *, const char *,
    const struct ynode *, void *);
void config_check_admin(struct cfgctx *, const struct ynode *, struct config *);
void config_free_admin(struct config *);

/* cfgalerts.c */
void cfgp_alerts(struct cfgctx *, const struct cfgkey *, const char *,
    const struct ynode *, void *);
void config_defaults_alerts(struct config *);
void config_check_alerts(
    struct cfgctx *, const struct ynode *, struct config *);
void config_free_alerts(struct config *);

/* cfgmeter.c */
void cfgp_strdup(struct cfgctx *, const struct cfgkey *, const char *,
    const struct ynode *, void *);
void cfgp_path(struct cfgctx *, const struct cfgkey *, const char *,
    const struct ynode *, void *);
void cfgp_durability(struct cfgctx *, const struct cfgkey *, const char *,
    const struct ynode *, void *);
void cfgp_unknown_action(struct cfgctx *, const struct cfgkey *, const char *,
    const struct ynode *, void *);
void cfgp_tag_map(struct cfgctx *, const struct cfgkey *, const char *,
    const struct ynode *, void *);
void cfgp_tag_list(struct cfgctx *, const struct cfgkey *, const char *,
    const struct ynode *, void *);
void cfgp_keys(struct cfgctx *, const struct cfgkey *, const char *,
    const struct ynode *, void *);
void cfgp_api_key_env(struct cfgctx *, const struct cfgkey *, const char *,
    const struct ynode *, void *);
void cfgp_deployments(struct cfgctx *, const struct cfgkey *, const char *,
    const struct ynode *, void *);
void cfgp_service_tier(struct cfgctx *, const struct cfgkey *, const char *,
    const struct ynode *, void *);
void config_check_meter(struct cfgctx *, const struct ynode *, struct config *);

#endif
