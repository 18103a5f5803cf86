/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The parts of the schema that metering and attribution read: the ledger's
 * durability, the unknown-model policy, key bindings, an upstream's
 * api_key_env and service_tier_default, and an Azure upstream's deployment
 * map (tag names and values are src/yaml/cfgtags.c's). Each is a cfgkey
 * parser for config.c's tables; checks that need the whole file (price_as
 * naming a priced model) are in config_check_meter, run once everything is
 * parsed.
 */
#include <ctype.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "tollgate/config.h"
#include "tollgate/log.h"
#include "tollgate/pricing.h"
#include "tollgate/util.h"

#include "cfg.h"

/* ledger.durability: process | power. */
void
cfgp_durability(struct cfgctx *cx, const struct cfgkey *k, const char *path,
    const struct ynode *n, void *dst)
{
	const char *s;
	char buf[80];

	(void)k;
	if ((s = cfg_string(cx, path, n, "process or power")) == NULL)
		return;
	if (strcmp(s, "process") == 0)
		*(enum durability *)dst = DURABILITY_PROCESS;
	else if (strcmp(s, "power") == 0)
		*(enum durability *)dst = DURABILITY_POWER;
	else
		cfg_error(cx, n,
		    "%s: unknown durability '%s' (expected process "
		    "or power)",
		    path, cfg_esc(buf, sizeof(buf), s, n->yn_len));
}

/* unknown_models.action: family_max | refuse | price_as | unpriced. */
void
cfgp_unknown_action(struct cfgctx *cx, const struct cfgkey *k, const char *path,
    const struct ynode *n, void *dst)
{
	const char *s;
	char buf[80];

	(void)k;
	if ((s = cfg_string(cx, path, n,
		 "family_max, refuse, price_as or unpriced")) == NULL)
		return;
	if (strcmp(s, "family_max") == 0)
		*(enum unknown_model *)dst = UNKNOWN_MODEL_FAMILY_MAX;
	else if (strcmp(s, "refuse") == 0)
		*(enum unknown_model *)dst = UNKNOWN_MODEL_REFUSE;
	else if (strcmp(s, "price_as") == 0)
		*(enum unknown_model *)dst = UNKNOWN_MODEL_PRICE_AS;
	else if (strcmp(s, "unpriced") == 0)
		*(enum unknown_model *)dst = UNKNOWN_MODEL_UNPRICED;
	else
		cfg_error(cx, n,
		    "%s: unknown action '%s' (expected family_max, "
		    "refuse, price_as or unpriced)",
		    path, cfg_esc(buf, sizeof(buf), s, n->yn_len));
}

static int
parse_sha256(const char *s, unsigned char out[32])
{
	size_t i;
	int hi, lo;

	if (strlen(s) != 64)
		return (-1);
	for (i = 0; i < 32; i++) {
		hi = isxdigit((unsigned char)s[2 * i]) ? s[2 * i] : -1;
		lo = isxdigit((unsigned char)s[2 * i + 1]) ? s[2 * i + 1] : -1;
		if (hi == -1 || lo == -1)
			return (-1);
		hi = isdigit(hi) ? hi - '0' : tolower(hi) - 'a' + 10;
		lo = isdigit(lo) ? lo - '0' : tolower(lo) - 'a' + 10;
		out[i] = (unsigned char)(hi * 16 + lo);
	}
	return (0);
}

/* attribution.keys: a list of bindings. */
void
cfgp_keys(struct cfgctx *cx, const struct cfgkey *k, const char *path,
    const struct ynode *n, void *dst)
{
	struct config *cf = dst;
	struct key_binding *kb;
	const struct ynode *item, *key, *val;
	char where[CFG_PATH_MAX], buf[80];
	size_t i, j, nhash;
	int *valid;

	(void)k;
	if (ynode_is_null(n))
		return;
	if (n->yn_type != YN_SEQ) {
		cfg_error(cx, n, "%s: expected a list of key bindings", path);
		return;
	}
	if (n->yn_nkids == 0)
		return;
	cf->cf_keys = xcalloc(n->yn_nkids, sizeof(*cf->cf_keys));
	valid = xcalloc(n->yn_nkids, sizeof(*valid));
	for (i = 0; i < n->yn_nkids; i++) {
		item = n->yn_kids[i];
		snprintf(where, sizeof(where), "%s[%zu]", path, i);
		if (item->yn_type != YN_MAP) {
			cfg_error(cx, item,
			    "%s: expected a mapping with "
			    "key_sha256 or tollgate_key_sha256, and tags",
			    where);
			continue;
		}
		kb = &cf->cf_keys[cf->cf_nkeys++];
		nhash = 0;
		for (j = 0; j + 1 < item->yn_nkids; j += 2) {
			key = item->yn_kids[j];
			val = item->yn_kids[j + 1];
			if (key->yn_type != YN_SCALAR) {
				cfg_error(
				    cx, key, "%s: keys must be strings", where);
				continue;
			}
			if (cfg_duplicate(cx, where, item, j))
				continue;
			if (strcmp(key->yn_str, "tags") == 0) {
				cfgp_tag_map(cx, NULL, where, val, kb->kb_tags);
				continue;
			}
			if (strcmp(key->yn_str, "key_sha256") != 0 &&
			    strcmp(key->yn_str, "tollgate_key_sha256") != 0) {
				cfg_error(cx, key, "unknown key '%s' in %s",
				    cfg_esc(buf, sizeof(buf), key->yn_str,
					key->yn_len),
				    where);
				continue;
			}
			nhash++;
			kb->kb_tollgate = key->yn_str[0] == 't';
			if (val->yn_type == YN_SCALAR &&
			    parse_sha256(val->yn_str, kb->kb_sha256) == 0)
				valid[cf->cf_nkeys - 1] = (int)i + 1;
			else
				cfg_error(cx, val,
				    "%s.%s: expected 64 hex "
				    "digits (sha256sum of the key)",
				    where, key->yn_str);
		}
		if (nhash != 1) {
			valid[cf->cf_nkeys - 1] = 0;
			cfg_error(cx, item,
			    "%s: give exactly one of key_sha256 "
			    "and tollgate_key_sha256",
			    where);
		}
	}
	/* The same key bound twice would make attribution ambiguous. */
	for (i = 0; i < cf->cf_nkeys; i++) {
		for (j = 0; valid[i] && j < i; j++) {
			if (valid[j] &&
			    memcmp(cf->cf_keys[i].kb_sha256,
				cf->cf_keys[j].kb_sha256, 32) == 0) {
				cfg_error(cx, n->yn_kids[valid[i] - 1],
				    "%s[%d]: the same key is already bound at "
				    "%s[%d]",
				    path, valid[i] - 1, path, valid[j] - 1);
				break;
			}
		}
	}
	free(valid);
}

/*
 * Add key v to uc's keys, with its fingerprint: the first 16 hex digits
 * of its SHA-256, as attribution.c fingerprints a client's key, so the
 * two can be compared and neither key ever shown.
 */
static void
upstream_add_key(struct upstream_conf *uc, const char *v)
{
	static const char hex[] = "0123456789abcdef";
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	size_t i, k = uc->uc_nkeys;

	uc->uc_keys = xreallocarray(uc->uc_keys, k + 1, sizeof(*uc->uc_keys));
	uc->uc_key_fps =
	    xreallocarray(uc->uc_key_fps, k + 1, sizeof(*uc->uc_key_fps));
	uc->uc_keys[k] = xstrdup(v);
	if (EVP_Digest(v, strlen(v), md, &mdlen, EVP_sha256(), NULL) != 1 ||
	    mdlen < 8)
		fatalx("%s: EVP_Digest", __func__);
	for (i = 0; i < 8; i++) {
		uc->uc_key_fps[k][2 * i] = hex[md[i] >> 4];
		uc->uc_key_fps[k][2 * i + 1] = hex[md[i] & 0xf];
	}
	uc->uc_key_fps[k][16] = '\0';
	explicit_bzero(md, sizeof(md));
	uc->uc_nkeys = k + 1;
	uc->uc_api_key = uc->uc_keys[0];
}

/* Wipe and free uc's keys. */
void
config_free_keys(struct upstream_conf *uc)
{
	size_t i;

	for (i = 0; i < uc->uc_nkeys; i++)
		freezero(uc->uc_keys[i], strlen(uc->uc_keys[i]));
	free(uc->uc_keys);
	free(uc->uc_key_fps);
	uc->uc_keys = NULL;
	uc->uc_key_fps = NULL;
	uc->uc_nkeys = 0;
	uc->uc_api_key = NULL;
}

/*
 * One variable of api_key_env or keys_env, named by n: its key is read
 * from the environment now. 0, or -1 when it is not a variable name.
 */
static int
read_key_env(struct cfgctx *cx, const char *path, const struct ynode *n,
    struct upstream_conf *uc)
{
	const char *s, *v;

	if ((s = cfg_string(cx, path, n, "an environment variable name")) ==
	    NULL)
		return (-1);
	if (uc->uc_api_key_env == NULL)
		uc->uc_api_key_env = xstrdup(s);
	if ((v = getenv(s)) == NULL || v[0] == '\0') {
		cfg_secret_env(cx, n, path, s);
		return (0);
	}
	upstream_add_key(uc, v);
	return (0);
}

/* upstreams.NAME.api_key_env: read the key from the environment now. */
void
cfgp_api_key_env(struct cfgctx *cx, const struct cfgkey *k, const char *path,
    const struct ynode *n, void *dst)
{
	struct upstream_conf *uc = dst;

	(void)k;
	free(uc->uc_api_key_env);
	uc->uc_api_key_env = NULL;
	config_free_keys(uc);
	read_key_env(cx, path, n, uc);
}

/*
 * upstreams.NAME.keys_env: a list of variables, each holding one key of
 * the upstream's; calls that carry the upstream's own key take them in
 * turn (src/upstream/pick.c).
 */
void
cfgp_keys_env(struct cfgctx *cx, const struct cfgkey *k, const char *path,
    const struct ynode *n, void *dst)
{
	struct upstream_conf *uc = dst;
	char where[CFG_PATH_MAX];
	size_t i, j, nerr = cx->cx_nerr;

	(void)k;
	if (n->yn_type != YN_SEQ || n->yn_nkids == 0) {
		cfg_error(cx, n,
		    "%s: expected a list of environment variable names, "
		    "at least one",
		    path);
		return;
	}
	if (n->yn_nkids > UPSTREAM_KEYS_MAX) {
		cfg_error(
		    cx, n, "%s: at most %d keys", path, UPSTREAM_KEYS_MAX);
		return;
	}
	free(uc->uc_api_key_env);
	uc->uc_api_key_env = NULL;
	config_free_keys(uc);
	for (i = 0; i < n->yn_nkids; i++) {
		snprintf(where, sizeof(where), "%s[%zu]", path, i);
		if (read_key_env(cx, where, n->yn_kids[i], uc) == -1)
			continue;
		for (j = 0; j < i; j++) {
			if (n->yn_kids[j]->yn_type == YN_SCALAR &&
			    strcmp(n->yn_kids[j]->yn_str,
				n->yn_kids[i]->yn_str) == 0) {
				cfg_error(cx, n->yn_kids[i],
				    "%s: %s is already listed at %s[%zu]",
				    where, n->yn_kids[i]->yn_str, path, j);
				break;
			}
		}
	}
	/* Two names for one key (a name given twice is said above). */
	for (i = 0; cx->cx_nerr == nerr && i < uc->uc_nkeys; i++)
		for (j = 0; j < i; j++)
			if (strcmp(uc->uc_keys[i], uc->uc_keys[j]) == 0) {
				/* The values are secrets: named by place. */
				cfg_error(cx, n,
				    "%s: two of its variables hold the same "
				    "key (fingerprint %s)",
				    path, uc->uc_key_fps[i]);
				i = uc->uc_nkeys;
				break;
			}
}

/*
 * upstreams.NAME.service_tier_default: the service tier this upstream's
 * account bills a call that asks for none ("priority" for an OpenAI
 * project on Scale Tier, an Anthropic organisation with Priority Tier
 * capacity). A name as the price table spells its tiers.
 */
void
cfgp_service_tier(struct cfgctx *cx, const struct cfgkey *k, const char *path,
    const struct ynode *n, void *dst)
{
	char **out = dst, buf[80];
	const char *s;
	size_t i, len;
	int ok;

	(void)k;
	if ((s = cfg_string(cx, path, n, "a service tier name")) == NULL)
		return;
	len = strlen(s);
	ok = len > 0 && len < USAGE_TIER_MAX;
	for (i = 0; ok && i < len; i++)
		ok = s[i] > ' ' && s[i] < 0x7f;
	if (!ok) {
		cfg_error(cx, n,
		    "%s: bad service tier '%s' (a tier name as the price table "
		    "writes it, such as priority: printable, no spaces, at "
		    "most %d characters)",
		    path, cfg_esc(buf, sizeof(buf), s, len),
		    USAGE_TIER_MAX - 1);
		return;
	}
	free(*out);
	*out = xstrdup(s);
}

/* One deployment under deployments:, and the model it serves. */
static void
deployment_cb(struct cfgctx *cx, const struct cfgentry *en, void *arg)
{
	struct upstream_conf *uc = arg;
	const struct ynode *val = en->en_val;
	struct deployment *dp;

	if (val->yn_type != YN_SCALAR || ynode_is_null(val) ||
	    val->yn_len == 0) {
		cfg_error(cx, val, "%s.%s: expected a model name", en->en_path,
		    en->en_key->yn_str);
		return;
	}
	dp = &uc->uc_deployments[uc->uc_ndeployments++];
	dp->dp_name = xstrdup(en->en_key->yn_str);
	dp->dp_model = xstrdup(val->yn_str);
}

/* upstreams.NAME.deployments: a mapping of deployment -> model. */
void
cfgp_deployments(struct cfgctx *cx, const struct cfgkey *k, const char *path,
    const struct ynode *n, void *dst)
{
	struct upstream_conf *uc = dst;

	(void)k;
	if (n->yn_type == YN_MAP && n->yn_nkids >= 2)
		uc->uc_deployments =
		    xcalloc(n->yn_nkids / 2, sizeof(*uc->uc_deployments));
	cfg_map_each(cx, path, n, "deployment: model", deployment_cb, uc);
}

/* n, or else: where an error found after the walk is reported. */
static const struct ynode *
at_or(const struct ynode *n, const struct ynode *otherwise)
{
	return (n != NULL ? n : otherwise);
}

/*
 * Checks across sections, once everything is parsed: deployments only on
 * Azure upstreams, and a price_as model the price table knows. Each is
 * reported at the key or value it is about.
 */
void
config_check_meter(
    struct cfgctx *cx, const struct ynode *root, struct config *cf)
{
	const struct ynode *um = cfg_value(root, "unknown_models"), *up;
	char buf[160];
	size_t i;

	for (i = 0; i < cf->cf_nupstreams; i++) {
		if (cf->cf_upstreams[i].uc_ndeployments > 0 &&
		    cf->cf_upstreams[i].uc_type != UPSTREAM_AZURE_OPENAI) {
			up = cfg_value(cfg_value(root, "upstreams"),
			    cf->cf_upstreams[i].uc_name);
			cfg_error(cx, at_or(cfg_key(up, "deployments"), root),
			    "upstreams.%s: deployments are only "
			    "for azure_openai upstreams",
			    cf->cf_upstreams[i].uc_name);
		}
	}
	if (cf->cf_unknown_model == UNKNOWN_MODEL_PRICE_AS) {
		if (cf->cf_unknown_price_as == NULL)
			cfg_error(cx, at_or(cfg_value(um, "action"), root),
			    "unknown_models: action price_as "
			    "needs price_as: <model>");
		else if (cf->cf_prices == NULL ||
		    pricing_lookup(cf->cf_prices, cf->cf_unknown_price_as) ==
			NULL)
			cfg_error(cx, at_or(cfg_value(um, "price_as"), root),
			    "unknown_models.price_as: '%s' is "
			    "not in the price table",
			    cfg_esc(buf, sizeof(buf), cf->cf_unknown_price_as,
				strlen(cf->cf_unknown_price_as)));
	}
}
