/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tollgate prices import: reads a price list in the format of LiteLLM's
 * community-maintained model_prices_and_context_window.json (prices_read.c
 * keeps the models of the providers tollgate speaks and converts each
 * price exactly into the decimals of prices.yaml), shows what would change
 * against the table of the configuration it loads, and writes a new
 * prices.yaml for review. It
 * never touches the live table unless told to, and checks what it wrote
 * with the same loader the daemon uses. A command above the config, as
 * cli.c is, since it loads one.
 *
 *   tollgate prices import FILE [-o OUT] [-c CONFIG] [--keep-missing]
 *       [--price-version V] [--force]
 *
 * Exit 0 on success, 1 for input that cannot be imported or a file that
 * cannot be written, 2 for a bad flag. docs/pricing.md has the rules.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "tollgate/cli.h"
#include "tollgate/config.h"
#include "tollgate/pricing.h"
#include "tollgate/util.h"

#include "prices_int.h"

#define IMPORT_DEFAULT_CONFIG "/etc/tollgate/tollgate.yaml"

#define OPT_KEEP 1000
#define OPT_VERSION 1001
#define OPT_FORCE 1002
#define OPT_HELP 1003

static void
imp_usage(FILE *f)
{
	fprintf(f,
	    "usage: tollgate prices import FILE [-o OUT] [-c CONFIG] "
	    "[--keep-missing]\n"
	    "           [--price-version V] [--force]\n"
	    "  FILE   a price list in LiteLLM's "
	    "model_prices_and_context_window.json format\n"
	    "  -o OUT write the new prices.yaml there (without -o, only "
	    "the changes are shown)\n"
	    "  -c CONFIG  the configuration whose price table is compared "
	    "(default " IMPORT_DEFAULT_CONFIG ")\n"
	    "  --keep-missing     keep the current table's models that "
	    "FILE lacks\n"
	    "  --price-version V  the new table's version (default "
	    "import-YYYY-MM-DD)\n"
	    "  --force            allow OUT to be the live price table\n");
}
static void
put_rate(FILE *f, const char *sep, const char *key, int64_t v)
{
	char buf[32];

	pricing_import_format(v, buf, sizeof(buf));
	fprintf(f, "%s%s: %s", sep, key, buf);
}

/* Rates as YAML, leaving out what equals its default. */
static void
put_rates(FILE *f, const struct price_rates *r, const char *indent, int flow)
{
	const char *sep = flow ? ", " : indent;

	if (flow)
		fprintf(f, "{ ");
	put_rate(f, flow ? "" : indent, "input", r->pr_input);
	if (!flow)
		fputc('\n', f);
	if (r->pr_cached != r->pr_input) {
		put_rate(f, sep, "cached_input", r->pr_cached);
		if (!flow)
			fputc('\n', f);
	}
	if (r->pr_cache_write != r->pr_input) {
		put_rate(f, sep, "cache_write", r->pr_cache_write);
		if (!flow)
			fputc('\n', f);
	}
	if (r->pr_cache_write_1h != r->pr_cache_write) {
		put_rate(f, sep, "cache_write_1h", r->pr_cache_write_1h);
		if (!flow)
			fputc('\n', f);
	}
	put_rate(f, sep, "output", r->pr_output);
	fputs(flow ? " }\n" : "\n", f);
}

static void
put_model(FILE *f, const struct imp_model *im)
{
	const struct price *p = &im->im_p;
	size_t t;
	int n;

	n = fprintf(f, "  %s:", im->im_name);
	fprintf(f, "%*s# %s%s%s\n", n < 31 ? 31 - n : 1, "", im->im_mode,
	    im->im_rounded ? "; rounded up to 6 decimals" : "",
	    im->im_reasoning ? "; output at the reasoning rate" : "");
	put_rates(f, &p->p_base, "    ", 0);
	fprintf(f, "    max_output_tokens: %lld\n", (long long)p->p_max_output);
	if (p->p_long_threshold > 0) {
		fprintf(f,
		    "    long_context:\n      above_input_tokens: %lld\n",
		    (long long)p->p_long_threshold);
		put_rates(f, &p->p_long, "      ", 0);
	}
	if (p->p_ntiers > 0)
		fprintf(f, "    tiers:\n");
	for (t = 0; t < p->p_ntiers; t++) {
		fprintf(f, "      %s: ", p->p_tier_names[t]);
		put_rates(f, &p->p_tiers[t], "", 1);
	}
	fputc('\n', f);
}

/* The current table's model as an imp_model (for --keep-missing). */
static void
imp_keep(struct imp_set *is, const struct price *p)
{
	struct imp_model im;
	size_t t;

	memset(&im, 0, sizeof(im));
	im.im_name = xstrdup(p->p_model);
	im.im_group = "kept";
	im.im_mode = "kept from the current table";
	im.im_p = *p;
	im.im_p.p_model = NULL;
	im.im_p.p_tiers = NULL;
	im.im_p.p_tier_names = NULL;
	if (p->p_ntiers > 0) {
		im.im_p.p_tiers =
		    xreallocarray(NULL, p->p_ntiers, sizeof(*p->p_tiers));
		im.im_p.p_tier_names =
		    xreallocarray(NULL, p->p_ntiers, sizeof(char *));
		for (t = 0; t < p->p_ntiers; t++) {
			im.im_p.p_tiers[t] = p->p_tiers[t];
			im.im_p.p_tier_names[t] = xstrdup(p->p_tier_names[t]);
		}
	}
	if (is->is_n == is->is_cap) {
		is->is_cap = is->is_cap == 0 ? 64 : is->is_cap * 2;
		is->is_v =
		    xreallocarray(is->is_v, is->is_cap, sizeof(*is->is_v));
	}
	is->is_v[is->is_n++] = im;
}

/* What one model's change is, one "key old -> new" after another. */
static void
diff_rates(FILE *f, int *first, const char *pfx, const struct price_rates *o,
    const struct price_rates *n)
{
	static const struct {
		const char *d_name;
		size_t d_off;
	} keys[] = {
	    {"input", offsetof(struct price_rates, pr_input)},
	    {"cached_input", offsetof(struct price_rates, pr_cached)},
	    {"cache_write", offsetof(struct price_rates, pr_cache_write)},
	    {"cache_write_1h", offsetof(struct price_rates, pr_cache_write_1h)},
	    {"output", offsetof(struct price_rates, pr_output)},
	};
	char a[32], b[32];
	int64_t va, vb;
	size_t i;

	for (i = 0; i < nitems(keys); i++) {
		va = o == NULL
		    ? -1
		    : *(const int64_t *)(const void *)((const char *)o +
			  keys[i].d_off);
		vb = n == NULL
		    ? -1
		    : *(const int64_t *)(const void *)((const char *)n +
			  keys[i].d_off);
		if (va == vb)
			continue;
		if (va == -1)
			snprintf(a, sizeof(a), "-");
		else
			pricing_import_format(va, a, sizeof(a));
		if (vb == -1)
			snprintf(b, sizeof(b), "-");
		else
			pricing_import_format(vb, b, sizeof(b));
		fprintf(f, "%s%s%s %s -> %s", *first ? "" : "; ", pfx,
		    keys[i].d_name, a, b);
		*first = 0;
	}
}

static void
diff_model(FILE *f, const struct price *o, const struct price *n)
{
	char pfx[64], a[32], b[32];
	size_t t;
	int first = 1;

	diff_rates(f, &first, "", &o->p_base, &n->p_base);
	if (o->p_max_output != n->p_max_output) {
		fprintf(f, "%smax_output_tokens %lld -> %lld",
		    first ? "" : "; ", (long long)o->p_max_output,
		    (long long)n->p_max_output);
		first = 0;
	}
	if (o->p_long_threshold != n->p_long_threshold) {
		if (o->p_long_threshold == 0)
			fprintf(f,
			    "%slong_context added (above %lld input tokens)",
			    first ? "" : "; ", (long long)n->p_long_threshold);
		else if (n->p_long_threshold == 0)
			fprintf(f, "%slong_context removed", first ? "" : "; ");
		else
			fprintf(f,
			    "%slong_context.above_input_tokens %lld -> %lld",
			    first ? "" : "; ", (long long)o->p_long_threshold,
			    (long long)n->p_long_threshold);
		first = 0;
	}
	if (o->p_long_threshold > 0 && n->p_long_threshold > 0)
		diff_rates(f, &first, "long_context.", &o->p_long, &n->p_long);
	for (t = 0; t < o->p_ntiers; t++) {
		if (imp_tier_of(n, o->p_tier_names[t]) == NULL) {
			fprintf(f, "%stiers.%s removed", first ? "" : "; ",
			    o->p_tier_names[t]);
			first = 0;
			continue;
		}
		snprintf(pfx, sizeof(pfx), "tiers.%s.", o->p_tier_names[t]);
		diff_rates(f, &first, pfx, &o->p_tiers[t],
		    imp_tier_of(n, o->p_tier_names[t]));
	}
	for (t = 0; t < n->p_ntiers; t++) {
		if (imp_tier_of(o, n->p_tier_names[t]) != NULL)
			continue;
		pricing_import_format(n->p_tiers[t].pr_input, a, sizeof(a));
		pricing_import_format(n->p_tiers[t].pr_output, b, sizeof(b));
		fprintf(f, "%stiers.%s added (input %s, output %s)",
		    first ? "" : "; ", n->p_tier_names[t], a, b);
		first = 0;
	}
	fputc('\n', f);
}

static void
show_prices(FILE *f, const struct price *p)
{
	char a[32], b[32];

	pricing_import_format(p->p_base.pr_input, a, sizeof(a));
	pricing_import_format(p->p_base.pr_output, b, sizeof(b));
	fprintf(f, "input %s, output %s, max_output_tokens %lld%s%s\n", a, b,
	    (long long)p->p_max_output,
	    p->p_long_threshold > 0 ? ", long context" : "",
	    p->p_ntiers > 0 ? ", tiers" : "");
}

/*
 * The changes against the current table, model by model, on f. Returns
 * the number of models of cur that the import lacks.
 */
static size_t
imp_diff(FILE *f, struct imp_set *is, const struct pricebook *cur, int keep)
{
	const struct price *o, *to;
	const char *alias;
	struct imp_model *n;
	size_t i, same = 0, added = 0, changed = 0, removed = 0;

	for (i = 0; i < is->is_n; i++) {
		n = &is->is_v[i];
		o = cur != NULL
		    ? pricing_find_model(cur, n->im_name, strlen(n->im_name))
		    : NULL;
		if (o == NULL) {
			fprintf(f, "  added    %-32s ", n->im_name);
			show_prices(f, &n->im_p);
			added++;
		} else if (!imp_price_equal(o, &n->im_p)) {
			fprintf(f, "  changed  %-32s ", n->im_name);
			diff_model(f, o, &n->im_p);
			changed++;
		} else
			same++;
	}
	for (i = 0; cur != NULL && i < pricing_count(cur); i++) {
		o = pricing_model_at(cur, i);
		if (imp_find(is, o->p_model) != NULL)
			continue;
		fprintf(
		    f, "  %-8s %-32s ", keep ? "kept" : "removed", o->p_model);
		show_prices(f, o);
		removed++;
	}
	for (i = 0; cur != NULL && i < pricing_alias_count(cur); i++) {
		alias = pricing_alias_at(cur, i, &to);
		if (imp_find(is, alias) != NULL)
			fprintf(f, "  alias    %-32s dropped: now a model\n",
			    alias);
		else if (imp_find(is, to->p_model) == NULL && !keep)
			fprintf(f, "  alias    %-32s dropped: %s is removed\n",
			    alias, to->p_model);
	}
	fprintf(f, "%zu added, %zu changed, %zu %s, %zu unchanged\n", added,
	    changed, removed, keep ? "kept (not in the import)" : "removed",
	    same);
	return (removed);
}

/* The new table to path (via a temporary file), then loaded back. */
static int
imp_write(struct imp_set *is, const struct pricebook *cur, const char *path,
    const char *src, const char *version)
{
	struct cfgerrs errs = {0};
	struct pricebook *pb;
	const struct price *to;
	const char *group = "", *alias;
	char *tmp = NULL;
	FILE *f;
	size_t i, n;
	int rc = -1;

	xasprintf(&tmp, "%s.tmp%ld", path, (long)getpid());
	if ((f = fopen(tmp, "w")) == NULL) {
		fprintf(stderr, "%s: %s\n", tmp, strerror(errno));
		goto fail;
	}
	fprintf(f,
	    "# prices.yaml written by \"tollgate prices import\" from %s\n"
	    "# (LiteLLM's model_prices_and_context_window.json format).\n"
	    "# USD per 1,000,000 tokens; docs/pricing.md is the reference.\n"
	    "# Review it, check it (tollgate check -c tollgate.yaml), then "
	    "reload.\n\n"
	    "version: \"%s\"\n\nmodels:\n",
	    src, version);
	qsort(is->is_v, is->is_n, sizeof(*is->is_v), imp_cmp_group);
	for (i = 0; i < is->is_n; i++) {
		if (strcmp(group, is->is_v[i].im_group) != 0) {
			group = is->is_v[i].im_group;
			fprintf(f, "  # %s\n", group);
		}
		put_model(f, &is->is_v[i]);
	}
	qsort(is->is_v, is->is_n, sizeof(*is->is_v), imp_cmp_name);
	/* The current aliases whose model is still there and not shadowed. */
	for (i = n = 0; cur != NULL && i < pricing_alias_count(cur); i++) {
		alias = pricing_alias_at(cur, i, &to);
		if (imp_find(is, alias) != NULL ||
		    imp_find(is, to->p_model) == NULL)
			continue;
		if (n++ == 0)
			fprintf(f, "aliases:\n");
		fprintf(f, "  %s: %s\n", alias, to->p_model);
	}
	if (fclose(f) != 0) {
		fprintf(stderr, "%s: %s\n", tmp, strerror(errno));
		goto fail;
	}
	/* What the daemon will load must load: the same loader checks it. */
	if ((pb = pricing_load(tmp, &errs)) == NULL) {
		for (i = 0; i < errs.ce_n; i++)
			fprintf(stderr, "%s\n", errs.ce_msgs[i]);
		fprintf(stderr,
		    "%s: the written table does not load; "
		    "nothing was replaced\n",
		    tmp);
		cfgerrs_free(&errs);
		goto fail;
	}
	pricing_free(pb);
	cfgerrs_free(&errs);
	if (rename(tmp, path) == -1) {
		fprintf(stderr, "%s: %s\n", path, strerror(errno));
		goto fail;
	}
	rc = 0;
fail:
	if (rc == -1)
		unlink(tmp);
	free(tmp);
	return (rc);
}

/* Is path the file the configuration loads its prices from? */
static int
same_file(const char *a, const char *b)
{
	char ra[PATH_MAX], rb[PATH_MAX];

	if (realpath(a, ra) == NULL || realpath(b, rb) == NULL)
		return (0);
	return (strcmp(ra, rb) == 0);
}

/* tollgate prices import: see the top of this file. */
int
cli_prices(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"config", required_argument, NULL, 'c'},
	    {"output", required_argument, NULL, 'o'},
	    {"keep-missing", no_argument, NULL, OPT_KEEP},
	    {"price-version", required_argument, NULL, OPT_VERSION},
	    {"force", no_argument, NULL, OPT_FORCE},
	    {"help", no_argument, NULL, OPT_HELP},
	    {NULL, 0, NULL, 0},
	};
	struct imp_set is = {0};
	struct cfgerrs errs = {0};
	struct config *cf = NULL;
	const struct pricebook *cur = NULL;
	const char *config = NULL, *out = NULL, *version = NULL, *file;
	char vbuf[64];
	time_t now;
	struct tm tm;
	size_t i, n0;
	int ch, keep = 0, force = 0, rc = 1;

	if (argc < 2 || strcmp(argv[1], "import") != 0) {
		if (argc >= 2 &&
		    (strcmp(argv[1], "--help") == 0 ||
			strcmp(argv[1], "-h") == 0)) {
			imp_usage(stdout);
			return (0);
		}
		imp_usage(stderr);
		return (2);
	}
	argc--;
	argv++;
	optind = 1;
	while ((ch = getopt_long(argc, argv, "c:o:h", longopts, NULL)) != -1) {
		switch (ch) {
		case 'c':
			config = optarg;
			break;
		case 'o':
			out = optarg;
			break;
		case OPT_KEEP:
			keep = 1;
			break;
		case OPT_VERSION:
			version = optarg;
			break;
		case OPT_FORCE:
			force = 1;
			break;
		case 'h':
		case OPT_HELP:
			imp_usage(stdout);
			return (0);
		default:
			imp_usage(stderr);
			return (2);
		}
	}
	if (optind != argc - 1) {
		imp_usage(stderr);
		return (2);
	}
	file = argv[optind];
	is.is_file = file;
	if (version == NULL) {
		now = time(NULL);
		gmtime_r(&now, &tm);
		strftime(vbuf, sizeof(vbuf), "import-%Y-%m-%d", &tm);
		version = vbuf;
	}

	/* The table to compare with; without -c, only if there is one. */
	cf = config_load_opts(config != NULL ? config : IMPORT_DEFAULT_CONFIG,
	    CONFIG_SECRETS_OPTIONAL, &errs);
	if (cf == NULL && config != NULL) {
		for (i = 0; i < errs.ce_n; i++)
			fprintf(stderr, "%s\n", errs.ce_msgs[i]);
		if (errs.ce_n == 0)
			fprintf(
			    stderr, "%s: cannot load configuration\n", config);
		goto done;
	}
	if (cf != NULL)
		cur = cf->cf_prices;

	if (imp_load(&is, file) == -1) {
		fprintf(stderr, "%s: nothing imported\n", file);
		goto done;
	}
	if (cur != NULL)
		printf("%s: %zu models to import; against %s (version %s):\n",
		    file, is.is_n, cf->cf_prices_path, pricing_version(cur));
	else
		printf("%s: %zu models to import; no current table "
		       "(%s does not load; give -c):\n",
		    file, is.is_n, IMPORT_DEFAULT_CONFIG);
	(void)imp_diff(stdout, &is, cur, keep);
	printf("skipped %zu entries of other providers or modes, %zu dated "
	       "snapshots priced as their model\n",
	    is.is_skipped, is.is_snapshots);

	if (out == NULL) {
		printf(
		    "nothing written: give -o FILE to write the new table\n");
		rc = 0;
		goto done;
	}
	if (cur != NULL && !force && same_file(out, cf->cf_prices_path)) {
		fprintf(stderr,
		    "%s: is the live price table; write elsewhere to review "
		    "it, or give --force\n",
		    out);
		goto done;
	}
	if (keep && cur != NULL) {
		n0 = is.is_n; /* the sorted part */
		for (i = 0; i < pricing_count(cur); i++) {
			if (imp_find_n(&is, pricing_model_at(cur, i)->p_model,
				n0) == NULL)
				imp_keep(&is, pricing_model_at(cur, i));
		}
		qsort(is.is_v, is.is_n, sizeof(*is.is_v), imp_cmp_name);
	}
	if (imp_write(&is, cur, out, file, version) == -1)
		goto done;
	printf("wrote %s (version %s); check it with tollgate check, then "
	       "reload\n",
	    out, version);
	rc = 0;

done:
	for (i = 0; i < is.is_n; i++)
		imp_model_free(&is.is_v[i]);
	free(is.is_v);
	cfgerrs_free(&errs);
	if (cf != NULL)
		config_unref(cf);
	return (rc);
}
