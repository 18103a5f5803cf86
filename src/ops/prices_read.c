/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The reading half of tollgate prices import: a price list in the format
 * of LiteLLM's model_prices_and_context_window.json (USD per token as JSON
 * numbers) into a set of models, keeping the providers and modes tollgate
 * meters and converting each price exactly into prices.yaml's units (the
 * arithmetic is pricing's, src/pricing/import.c). Every problem is named
 * with the file, the model and the key. cli_prices.c compares and writes.
 */
#include <errno.h>
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

#include "tollgate/pricing.h"
#include "tollgate/util.h"

#include "prices_int.h"

/* LiteLLM's whole file is about 1.5 MB; anything this large is not it. */
#define IMPORT_FILE_MAX (64 * 1024 * 1024)
#define IMPORT_NAME_MAX (USAGE_MODEL_MAX - 1)

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

/* Free what im owns (not im itself). */
void
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

/* The rates of p's tier of that name, or NULL. */
const struct price_rates *
imp_tier_of(const struct price *p, const char *name)
{
	size_t t;

	for (t = 0; t < p->p_ntiers; t++) {
		if (strcmp(p->p_tier_names[t], name) == 0)
			return (&p->p_tiers[t]);
	}
	return (NULL);
}

/* Do a and b price every token class, tier and bound alike? */
int
imp_price_equal(const struct price *a, const struct price *b)
{
	size_t t;

	if (!rates_equal(&a->p_base, &b->p_base) ||
	    a->p_max_output != b->p_max_output ||
	    a->p_long_threshold != b->p_long_threshold ||
	    (a->p_long_threshold > 0 && !rates_equal(&a->p_long, &b->p_long)) ||
	    a->p_ntiers != b->p_ntiers)
		return (0);
	for (t = 0; t < a->p_ntiers; t++) {
		const struct price_rates *o =
		    imp_tier_of(b, a->p_tier_names[t]);

		if (o == NULL || !rates_equal(&a->p_tiers[t], o))
			return (0);
	}
	return (1);
}

/* qsort and bsearch order of models: by name. */
int
imp_cmp_name(const void *a, const void *b)
{
	const struct imp_model *ma = a, *mb = b;

	return (strcmp(ma->im_name, mb->im_name));
}

/* qsort order of models: by group, then name. */
int
imp_cmp_group(const void *a, const void *b)
{
	const struct imp_model *ma = a, *mb = b;
	int c = strcmp(ma->im_group, mb->im_group);

	return (c != 0 ? c : strcmp(ma->im_name, mb->im_name));
}

/* The model of that name among the first n (sorted by name). */
struct imp_model *
imp_find_n(struct imp_set *is, const char *name, size_t n)
{
	struct imp_model key;

	key.im_name = (char *)(uintptr_t)name;
	return (bsearch(&key, is->is_v, n, sizeof(*is->is_v), imp_cmp_name));
}

/* The model of that name, or NULL. */
struct imp_model *
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
		if (base != NULL &&
		    imp_price_equal(&base->im_p, &is->is_v[i].im_p))
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
int
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
