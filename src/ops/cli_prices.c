/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tollgate prices import: reads a price list in the format of LiteLLM's
 * community-maintained model_prices_and_context_window.json (USD per token
 * as JSON numbers), keeps the models of the providers tollgate speaks,
 * converts each price exactly into the decimals of prices.yaml (USD per
 * million tokens, at most six places; the arithmetic is pricing's, in
 * src/pricing/import.c), shows what would change against the table of the
 * configuration it loads, and writes a new prices.yaml for review. It
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

#define IMPORT_DEFAULT_CONFIG "/etc/tollgate/tollgate.yaml"
/* LiteLLM's whole file is about 1.5 MB; anything this large is not it. */
#define IMPORT_FILE_MAX (64 * 1024 * 1024)
#define IMPORT_NAME_MAX (USAGE_MODEL_MAX - 1)
/* The largest price prices.yaml takes: 1,000,000 USD per million. */
#define IMPORT_PUSD_MAX 1000000000000LL

#define OPT_KEEP 1000
#define OPT_VERSION 1001
#define OPT_FORCE 1002
#define OPT_HELP 1003

/* One model read from the file, or kept from the current table. */
struct imp_model {
	char *im_name;
	const char *im_group; /* "openai", "anthropic", "gemini", "kept" */
	const char *im_mode; /* "chat", "responses", ... */
	struct price im_p; /* owns p_tiers and p_tier_names */
	int im_rounded; /* a price had digits below a pico-USD */
	int im_reasoning; /* reasoning priced above output: output raised */
	int im_prefixed; /* read as gemini/NAME */
};

struct imp_set {
	struct imp_model *is_v;
	size_t is_n;
	size_t is_cap;
	size_t is_skipped; /* other providers and modes */
	size_t is_snapshots; /* dated twins of a model with equal prices */
	size_t is_errors;
	const char *is_file;
};

/* Providers kept, by litellm_provider; what prices.yaml groups them as. */
static const struct {
	const char *lp_name;
	const char *lp_group;
} imp_providers[] = {
    {"openai", "openai"},
    {"text-completion-openai", "openai"},
    {"anthropic", "anthropic"},
    {"gemini", "gemini"},
    {"vertex_ai-language-models", "gemini"},
    {"vertex_ai-embedding-models", "gemini"},
};

/* Modes kept: the endpoints tollgate meters. */
static const char *const imp_modes[] = {
    "chat", "responses", "completion", "embedding"};

/* The tiers LiteLLM names by key suffix, as prices.yaml names them. */
static const char *const imp_tiers[] = {"flex", "priority"};

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

static void imp_error(struct imp_set *is, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
imp_error(struct imp_set *is, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: ", is->is_file);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	is->is_errors++;
}

static const char *
imp_group(const char *provider)
{
	size_t i;

	for (i = 0; i < nitems(imp_providers); i++) {
		if (strcmp(provider, imp_providers[i].lp_name) == 0)
			return (imp_providers[i].lp_group);
	}
	return (NULL);
}

static int
imp_mode_kept(const char *mode)
{
	size_t i;

	for (i = 0; i < nitems(imp_modes); i++) {
		if (strcmp(mode, imp_modes[i]) == 0)
			return (1);
	}
	return (0);
}

/*
 * One price key of an entry into *dst (left alone when the key is
 * absent). Returns 1 if it was there, 0 if not, -1 after an error.
 */
static int
imp_rate(struct imp_set *is, struct imp_model *im, const cJSON *e,
    const char *key, int64_t *dst)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(e, key);
	const char *why = NULL;
	int64_t pusd;
	int rounded;

	if (v == NULL || cJSON_IsNull(v))
		return (0);
	if (!cJSON_IsNumber(v)) {
		imp_error(is,
		    "model '%s': %s: expected a number (USD per "
		    "token), got %s",
		    im->im_name, key,
		    cJSON_IsString(v) ? "a string" : "another JSON type");
		return (-1);
	}
	if ((pusd = pricing_import_usd(v->valuedouble, &rounded, &why)) == -1) {
		imp_error(is, "model '%s': %s: %g %s", im->im_name, key,
		    v->valuedouble, why);
		return (-1);
	}
	if (rounded)
		im->im_rounded = 1;
	*dst = pusd;
	return (1);
}

/* A whole number of tokens (max_output_tokens); 1 if there, 0, -1. */
static int
imp_tokens(struct imp_set *is, struct imp_model *im, const cJSON *e,
    const char *key, int64_t *dst)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(e, key);

	if (v == NULL || cJSON_IsNull(v))
		return (0);
	if (!cJSON_IsNumber(v) || !(v->valuedouble >= 0) ||
	    v->valuedouble > 1e9 ||
	    v->valuedouble != (double)(int64_t)v->valuedouble) {
		imp_error(is,
		    "model '%s': %s: expected a whole number of tokens "
		    "from 0 to 1000000000",
		    im->im_name, key);
		return (-1);
	}
	*dst = (int64_t)v->valuedouble;
	return (1);
}

/* Rates named with a suffix ("", "_priority", "_above_200k_tokens"). */
static int
imp_rates(struct imp_set *is, struct imp_model *im, const cJSON *e,
    const char *sfx, struct price_rates *r)
{
	static const struct {
		const char *k_base;
		size_t k_off;
	} keys[] = {
	    {"input_cost_per_token", offsetof(struct price_rates, pr_input)},
	    {"output_cost_per_token", offsetof(struct price_rates, pr_output)},
	    {"cache_read_input_token_cost",
		offsetof(struct price_rates, pr_cached)},
	    {"cache_creation_input_token_cost",
		offsetof(struct price_rates, pr_cache_write)},
	};
	char key[128], key1h[160];
	size_t i;
	int n = 0, rc;

	for (i = 0; i < nitems(keys); i++) {
		snprintf(key, sizeof(key), "%s%s", keys[i].k_base, sfx);
		rc = imp_rate(is, im, e, key,
		    (int64_t *)(void *)((char *)r + keys[i].k_off));
		if (rc == -1)
			return (-1);
		n += rc;
	}
	/* LiteLLM names the 1 h write price above_1hr, before the rest. */
	snprintf(key1h, sizeof(key1h),
	    "cache_creation_input_token_cost_above_1hr%s", sfx);
	if ((rc = imp_rate(is, im, e, key1h, &r->pr_cache_write_1h)) == -1)
		return (-1);
	return (n + rc);
}

static void
rates_clear(struct price_rates *r)
{
	r->pr_input = r->pr_cached = r->pr_cache_write = -1;
	r->pr_cache_write_1h = r->pr_output = -1;
}

/*
 * Fill what a block leaves out as prices.yaml's loader would (cache
 * reads and writes at the input rate, 1 h writes at the 5 minute rate),
 * input and output from base when the block has none.
 */
static void
rates_fill(struct price_rates *r, const struct price_rates *base)
{
	if (r->pr_input == -1)
		r->pr_input = base != NULL ? base->pr_input : 0;
	if (r->pr_output == -1)
		r->pr_output = base != NULL ? base->pr_output : 0;
	if (r->pr_cached == -1)
		r->pr_cached = r->pr_input;
	if (r->pr_cache_write == -1)
		r->pr_cache_write = r->pr_input;
	if (r->pr_cache_write_1h == -1)
		r->pr_cache_write_1h = r->pr_cache_write;
}

/* The long-context threshold LiteLLM names in keys: _above_200k_tokens. */
static int64_t
imp_long_threshold(const cJSON *e, char *sfx, size_t len)
{
	const cJSON *it;
	const char *p;
	char *end;
	long k;

	cJSON_ArrayForEach(it, e)
	{
		if (strncmp(it->string, "input_cost_per_token_above_", 27) != 0)
			continue;
		p = it->string + 27;
		k = strtol(p, &end, 10);
		if (end == p || k <= 0 || k > 100000 ||
		    strcmp(end, "k_tokens") != 0)
			continue;
		snprintf(sfx, len, "_above_%ldk_tokens", k);
		return ((int64_t)k * 1000);
	}
	return (0);
}

static void
imp_model_free(struct imp_model *im)
{
	size_t t;

	free(im->im_name);
	for (t = 0; t < im->im_p.p_ntiers; t++)
		free(im->im_p.p_tier_names[t]);
	free(im->im_p.p_tier_names);
	free(im->im_p.p_tiers);
}

/* One entry of the file: kept (0), skipped (0) or wrong (-1). */
static int
imp_entry(struct imp_set *is, const cJSON *e)
{
	struct imp_model im;
	struct price_rates tier;
	const cJSON *prov, *mode;
	const char *group, *name = e->string;
	int64_t reason = -1, threshold;
	char sfx[64], tsfx[16];
	size_t i;
	int rc, prefixed = 0;

	if (!cJSON_IsObject(e)) {
		imp_error(is, "'%s': expected an object of prices", name);
		return (-1);
	}
	prov = cJSON_GetObjectItemCaseSensitive(e, "litellm_provider");
	mode = cJSON_GetObjectItemCaseSensitive(e, "mode");
	/* Other providers, other modes, and LiteLLM's own sample_spec. */
	if (!cJSON_IsString(prov) || !cJSON_IsString(mode) ||
	    (group = imp_group(prov->valuestring)) == NULL ||
	    !imp_mode_kept(mode->valuestring)) {
		is->is_skipped++;
		return (0);
	}
	/* LiteLLM's provider prefix is routing, not the API's name. */
	if (strncmp(name, "gemini/", 7) == 0) {
		name += 7;
		prefixed = 1;
	} else if (strchr(name, '/') != NULL) {
		is->is_skipped++;
		return (0);
	}
	memset(&im, 0, sizeof(im));
	im.im_name = xstrdup(name);
	im.im_group = group;
	im.im_prefixed = prefixed;
	im.im_mode = strcmp(mode->valuestring, "responses") == 0 ? "responses"
	    : strcmp(mode->valuestring, "chat") == 0		 ? "chat"
	    : strcmp(mode->valuestring, "completion") == 0	 ? "completion"
								 : "embedding";
	if (strlen(name) == 0 || strlen(name) > IMPORT_NAME_MAX ||
	    strpbrk(name, " \t\"\\") != NULL) {
		imp_error(is,
		    "'%s': not a model name tollgate can price (printable, "
		    "no spaces or quotes, at most %d bytes)",
		    e->string, IMPORT_NAME_MAX);
		goto fail;
	}
	for (i = 0; name[i] != '\0'; i++) {
		if (name[i] < ' ' || name[i] > '~') {
			imp_error(is, "'%s': not printable ASCII", e->string);
			goto fail;
		}
	}

	rates_clear(&im.im_p.p_base);
	if ((rc = imp_rates(is, &im, e, "", &im.im_p.p_base)) == -1)
		goto fail;
	if (im.im_p.p_base.pr_input == -1) {
		imp_error(is, "model '%s': no input_cost_per_token", name);
		goto fail;
	}
	if (im.im_p.p_base.pr_output == -1 &&
	    strcmp(im.im_mode, "embedding") != 0) {
		imp_error(is, "model '%s': no output_cost_per_token", name);
		goto fail;
	}
	/* Reasoning is billed inside output: at the dearer of the two. */
	if (imp_rate(is, &im, e, "output_cost_per_reasoning_token", &reason) ==
	    -1)
		goto fail;
	if (reason > im.im_p.p_base.pr_output &&
	    im.im_p.p_base.pr_output >= 0) {
		im.im_p.p_base.pr_output = reason;
		im.im_reasoning = 1;
	}
	rates_fill(&im.im_p.p_base, NULL);

	if (strcmp(im.im_mode, "embedding") == 0)
		im.im_p.p_max_output = 0;
	else if ((rc = imp_tokens(is, &im, e, "max_output_tokens",
		      &im.im_p.p_max_output)) == -1)
		goto fail;
	else if (rc == 0 &&
	    (rc = imp_tokens(
		 is, &im, e, "max_tokens", &im.im_p.p_max_output)) != 1) {
		if (rc == 0)
			imp_error(is,
			    "model '%s': no max_output_tokens (or max_tokens)",
			    name);
		goto fail;
	}

	if ((threshold = imp_long_threshold(e, sfx, sizeof(sfx))) > 0) {
		rates_clear(&im.im_p.p_long);
		if (imp_rates(is, &im, e, sfx, &im.im_p.p_long) == -1)
			goto fail;
		rates_fill(&im.im_p.p_long, &im.im_p.p_base);
		im.im_p.p_long_threshold = threshold;
	}

	for (i = 0; i < nitems(imp_tiers); i++) {
		snprintf(tsfx, sizeof(tsfx), "_%s", imp_tiers[i]);
		rates_clear(&tier);
		if ((rc = imp_rates(is, &im, e, tsfx, &tier)) == -1)
			goto fail;
		if (rc == 0)
			continue;
		rates_fill(&tier, &im.im_p.p_base);
		im.im_p.p_tiers = xreallocarray(im.im_p.p_tiers,
		    im.im_p.p_ntiers + 1, sizeof(*im.im_p.p_tiers));
		im.im_p.p_tier_names = xreallocarray(im.im_p.p_tier_names,
		    im.im_p.p_ntiers + 1, sizeof(*im.im_p.p_tier_names));
		im.im_p.p_tiers[im.im_p.p_ntiers] = tier;
		im.im_p.p_tier_names[im.im_p.p_ntiers++] =
		    xstrdup(imp_tiers[i]);
	}

	if (is->is_n == is->is_cap) {
		is->is_cap = is->is_cap == 0 ? 64 : is->is_cap * 2;
		is->is_v =
		    xreallocarray(is->is_v, is->is_cap, sizeof(*is->is_v));
	}
	is->is_v[is->is_n++] = im;
	return (0);

fail:
	imp_model_free(&im);
	return (-1);
}

static int
rates_equal(const struct price_rates *a, const struct price_rates *b)
{
	return (a->pr_input == b->pr_input && a->pr_cached == b->pr_cached &&
	    a->pr_cache_write == b->pr_cache_write &&
	    a->pr_cache_write_1h == b->pr_cache_write_1h &&
	    a->pr_output == b->pr_output);
}

static const struct price_rates *
tier_of(const struct price *p, const char *name)
{
	size_t t;

	for (t = 0; t < p->p_ntiers; t++) {
		if (strcmp(p->p_tier_names[t], name) == 0)
			return (&p->p_tiers[t]);
	}
	return (NULL);
}

static int
price_equal(const struct price *a, const struct price *b)
{
	size_t t;

	if (!rates_equal(&a->p_base, &b->p_base) ||
	    a->p_max_output != b->p_max_output ||
	    a->p_long_threshold != b->p_long_threshold ||
	    (a->p_long_threshold > 0 && !rates_equal(&a->p_long, &b->p_long)) ||
	    a->p_ntiers != b->p_ntiers)
		return (0);
	for (t = 0; t < a->p_ntiers; t++) {
		const struct price_rates *o = tier_of(b, a->p_tier_names[t]);

		if (o == NULL || !rates_equal(&a->p_tiers[t], o))
			return (0);
	}
	return (1);
}

static int
imp_cmp_name(const void *a, const void *b)
{
	const struct imp_model *ma = a, *mb = b;

	return (strcmp(ma->im_name, mb->im_name));
}

static int
imp_cmp_group(const void *a, const void *b)
{
	const struct imp_model *ma = a, *mb = b;
	int c = strcmp(ma->im_group, mb->im_group);

	return (c != 0 ? c : strcmp(ma->im_name, mb->im_name));
}

/* The model of that name among the first n (sorted by name). */
static struct imp_model *
imp_find_n(struct imp_set *is, const char *name, size_t n)
{
	struct imp_model key;

	key.im_name = (char *)(uintptr_t)name;
	return (bsearch(&key, is->is_v, n, sizeof(*is->is_v), imp_cmp_name));
}

static struct imp_model *
imp_find(struct imp_set *is, const char *name)
{
	return (imp_find_n(is, name, is->is_n));
}

/* The name without a -YYYY-MM-DD or -YYYYMMDD tail, or NULL. */
static char *
imp_undated(const char *name)
{
	size_t n = strlen(name), i;

	if (n > 11 && name[n - 11] == '-' && name[n - 6] == '-' &&
	    name[n - 3] == '-') {
		for (i = n - 10; i < n; i++) {
			if (i != n - 6 && i != n - 3 &&
			    (name[i] < '0' || name[i] > '9'))
				return (NULL);
		}
		return (xstrndup(name, n - 11));
	}
	if (n > 9 && name[n - 9] == '-') {
		for (i = n - 8; i < n; i++) {
			if (name[i] < '0' || name[i] > '9')
				return (NULL);
		}
		return (xstrndup(name, n - 9));
	}
	return (NULL);
}

/*
 * Sort by name, drop a second entry of one name (LiteLLM lists Gemini
 * models both bare and as gemini/NAME: the bare one stays), and
 * drop a dated snapshot priced exactly as its base model, which the
 * table's snapshot rule finds anyway.
 */
static void
imp_tidy(struct imp_set *is)
{
	struct imp_model *base;
	size_t i, j;
	char *undated;

	qsort(is->is_v, is->is_n, sizeof(*is->is_v), imp_cmp_name);
	for (i = j = 0; i < is->is_n; i++) {
		if (j > 0 &&
		    strcmp(is->is_v[j - 1].im_name, is->is_v[i].im_name) == 0) {
			/* The bare name is the provider's; keep that one. */
			if (is->is_v[j - 1].im_prefixed &&
			    !is->is_v[i].im_prefixed) {
				imp_model_free(&is->is_v[j - 1]);
				is->is_v[j - 1] = is->is_v[i];
			} else
				imp_model_free(&is->is_v[i]);
			continue;
		}
		is->is_v[j++] = is->is_v[i];
	}
	is->is_n = j;
	for (i = 0; i < is->is_n; i++) {
		if ((undated = imp_undated(is->is_v[i].im_name)) == NULL)
			continue;
		base = imp_find(is, undated);
		free(undated);
		if (base != NULL && price_equal(&base->im_p, &is->is_v[i].im_p))
			is->is_v[i].im_group = NULL; /* dropped below */
	}
	for (i = j = 0; i < is->is_n; i++) {
		if (is->is_v[i].im_group == NULL) {
			imp_model_free(&is->is_v[i]);
			is->is_snapshots++;
			continue;
		}
		is->is_v[j++] = is->is_v[i];
	}
	is->is_n = j;
}

/* The whole file, at most IMPORT_FILE_MAX bytes; NULL after a message. */
static char *
imp_read(const char *path, size_t *lenp)
{
	FILE *f;
	char *buf = NULL;
	size_t len = 0, cap = 0, n;

	if ((f = fopen(path, "r")) == NULL) {
		fprintf(stderr, "%s: %s\n", path, strerror(errno));
		return (NULL);
	}
	for (;;) {
		if (len == cap) {
			if (cap >= IMPORT_FILE_MAX) {
				fprintf(stderr,
				    "%s: larger than %d MiB: not a price "
				    "list\n",
				    path, IMPORT_FILE_MAX / (1024 * 1024));
				goto fail;
			}
			cap = cap == 0 ? 65536 : cap * 2;
			buf = xreallocarray(buf, cap + 1, 1);
		}
		n = fread(buf + len, 1, cap - len, f);
		len += n;
		if (n == 0)
			break;
	}
	if (ferror(f)) {
		fprintf(stderr, "%s: %s\n", path, strerror(errno));
		goto fail;
	}
	fclose(f);
	buf[len] = '\0';
	*lenp = len;
	return (buf);

fail:
	fclose(f);
	free(buf);
	return (NULL);
}

/* The file into is; -1 when it cannot be imported (all errors shown). */
static int
imp_load(struct imp_set *is, const char *path)
{
	cJSON *root, *e;
	char *text;
	size_t len;

	if ((text = imp_read(path, &len)) == NULL)
		return (-1);
	root = cJSON_ParseWithLength(text, len);
	free(text);
	if (root == NULL) {
		imp_error(is,
		    "not JSON: LiteLLM's price list is one JSON "
		    "object of model name -> prices");
		return (-1);
	}
	if (!cJSON_IsObject(root)) {
		imp_error(is, "expected a JSON object of model name -> prices");
		cJSON_Delete(root);
		return (-1);
	}
	cJSON_ArrayForEach(e, root)
	{
		(void)imp_entry(is, e);
	}
	cJSON_Delete(root);
	if (is->is_errors > 0)
		return (-1);
	if (is->is_n == 0) {
		imp_error(is,
		    "no chat, responses, completion or embedding "
		    "model of openai, anthropic or gemini");
		return (-1);
	}
	imp_tidy(is);
	return (0);
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
		if (tier_of(n, o->p_tier_names[t]) == NULL) {
			fprintf(f, "%stiers.%s removed", first ? "" : "; ",
			    o->p_tier_names[t]);
			first = 0;
			continue;
		}
		snprintf(pfx, sizeof(pfx), "tiers.%s.", o->p_tier_names[t]);
		diff_rates(f, &first, pfx, &o->p_tiers[t],
		    tier_of(n, o->p_tier_names[t]));
	}
	for (t = 0; t < n->p_ntiers; t++) {
		if (tier_of(o, n->p_tier_names[t]) != NULL)
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
		} else if (!price_equal(o, &n->im_p)) {
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
