/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tollgate's config schema: the key tables for the top level, limits: and
 * each upstream, the parsers whose shape is tollgate's own (listen, the
 * upstreams mapping and its names, upstream type, and base_url, checked
 * with curl's URL API and held to https except for loopback hosts), the
 * defaults, and config_load, which ties it together: the YAML walker
 * (src/yaml/) reads the file into a tree, cfg_apply walks it against
 * top_keys, and
 * the half-built config is freed unless the error count is zero. A new
 * section is one more table here plus, when its shape is unusual, one
 * callback.
 */
#include <sys/stat.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <curl/curl.h>

#include "tollgate/config.h"
#include "tollgate/log.h"
#include "tollgate/policy.h"
#include "tollgate/pricing.h"
#include "tollgate/routing.h"
#include "tollgate/util.h"

#include "cfg.h"

/* Longest upstream name: it becomes a path segment and a log field. */
#define CONFIG_MAX_UPSTREAM_NAME 64

static void cfgp_listen(struct cfgctx *, const struct cfgkey *, const char *,
    const struct ynode *, void *);
static void cfgp_policies(struct cfgctx *, const struct cfgkey *, const char *,
    const struct ynode *, void *);
static void cfgp_hard_cap_status(struct cfgctx *, const struct cfgkey *,
    const char *, const struct ynode *, void *);
static void cfgp_timezone(struct cfgctx *, const struct cfgkey *, const char *,
    const struct ynode *, void *);
static void cfgp_upstreams(struct cfgctx *, const struct cfgkey *, const char *,
    const struct ynode *, void *);
static void cfgp_upstream_type(struct cfgctx *, const struct cfgkey *,
    const char *, const struct ynode *, void *);
static void cfgp_base_url(struct cfgctx *, const struct cfgkey *, const char *,
    const struct ynode *, void *);

/* Offsets of a field in the struct a table stores into. */
#define CF_OFF(f) offsetof(struct config, f)
#define UC_OFF(f) offsetof(struct upstream_conf, f)

static const struct cfgkey limits_keys[] = {
    KEY_SIZE("max_body_bytes", CF_OFF(cf_max_body_bytes), 1),
    KEY_SIZE("max_header_bytes", CF_OFF(cf_max_header_bytes), 1024),
    KEY_INT("max_headers", CF_OFF(cf_max_headers), 1, 10000),
    KEY_INT("max_connections", CF_OFF(cf_max_connections), 1, 1000000),
    KEY_INT("max_connections_per_client", CF_OFF(cf_max_connections_per_client),
	0, 1000000),
    KEY_DURATION("header_timeout", CF_OFF(cf_header_timeout_ms)),
    KEY_DURATION("request_timeout", CF_OFF(cf_request_timeout_ms)),
    KEY_DURATION("keepalive_timeout", CF_OFF(cf_keepalive_timeout_ms)),
    KEY_DURATION("drain_timeout", CF_OFF(cf_drain_timeout_ms)),
    KEY_DURATION("client_write_timeout", CF_OFF(cf_client_write_timeout_ms)),
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
    KEY_CALL("api_key_env", cfgp_api_key_env, 0, 0),
    KEY_CALL("keys_env", cfgp_keys_env, 0, 0),
    KEY_CALL("deployments", cfgp_deployments, 0, 0),
    KEY_CALL(
	"service_tier_default", cfgp_service_tier, UC_OFF(uc_service_tier), 0),
    KEY_END,
};

static const struct cfgkey ledger_keys[] = {
    KEY_CALL("path", cfgp_path, CF_OFF(cf_ledger_path), 0),
    KEY_CALL("durability", cfgp_durability, CF_OFF(cf_durability), 0),
    KEY_INT("queue_max", CF_OFF(cf_ledger_queue_max_int), 16, 10000000),
    KEY_CALL("ship", cfgp_ship, 0, 0),
    KEY_DURATION("keep_local", CF_OFF(cf_keep_local_ms)),
    KEY_END,
};

static const struct cfgkey unknown_model_keys[] = {
    KEY_CALL("action", cfgp_unknown_action, CF_OFF(cf_unknown_model), 0),
    KEY_CALL("price_as", cfgp_strdup, CF_OFF(cf_unknown_price_as), 0),
    KEY_END,
};

static const struct cfgkey attribution_keys[] = {
    KEY_CALL("defaults", cfgp_tag_map, CF_OFF(cf_tag_default), 0),
    KEY_CALL("require", cfgp_tag_list, CF_OFF(cf_tag_required), 0),
    KEY_CALL("headers", cfgp_tag_list, CF_OFF(cf_tag_from_header), 0),
    KEY_CALL("keys", cfgp_keys, 0, 0),
    KEY_END,
};

/*
 * The top level. policies and alerts join this table when they are
 * implemented; until then they are unknown keys, so a file written for a
 * later tollgate fails loudly instead of being half obeyed.
 */
static const struct cfgkey refusal_keys[] = {
    KEY_CALL(
	"hard_cap_status", cfgp_hard_cap_status, CF_OFF(cf_hard_cap_status), 0),
    KEY_END,
};

/* retry: how a call that failed upstream is tried again. */
static const struct cfgkey retry_keys[] = {
    KEY_INT("attempts", CF_OFF(cf_retry_attempts), 1, 10),
    KEY_DURATION("backoff", CF_OFF(cf_retry_backoff_ms)),
    KEY_DURATION("max_backoff", CF_OFF(cf_retry_max_backoff_ms)),
    KEY_END,
};

static const struct cfgkey top_keys[] = {
    KEY_CALL("listen", cfgp_listen, 0, 0),
    KEY_CALL("admin", cfgp_admin, 0, 0),
    KEY_SECTION("limits", limits_keys),
    KEY_CALL("upstreams", cfgp_upstreams, 0, 0),
    KEY_SECTION("ledger", ledger_keys),
    KEY_CALL("prices", cfgp_path, CF_OFF(cf_prices_path), 0),
    KEY_SECTION("unknown_models", unknown_model_keys),
    KEY_SECTION("attribution", attribution_keys),
    KEY_CALL("policies", cfgp_policies, 0, 0),
    KEY_CALL("routing", cfgp_routing, 0, 0),
    KEY_CALL("cache", cfgp_cache, 0, 0),
    KEY_SECTION("retry", retry_keys),
    KEY_CALL("timezone", cfgp_timezone, 0, 0),
    KEY_SECTION("refusals", refusal_keys),
    KEY_CALL("alerts", cfgp_alerts, 0, 0),
    KEY_CALL("fleet", cfgp_fleet, 0, 0),
    KEY_END,
};

/* cf_top_keys has a bit for each top_keys entry. */
_Static_assert(nitems(top_keys) - 1 <= sizeof(unsigned) * 8,
    "too many top-level keys for cf_top_keys");

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

/* listen: the proxy's address. */
static void
cfgp_listen(struct cfgctx *cx, const struct cfgkey *k, const char *path,
    const struct ynode *n, void *dst)
{
	struct config *cf = dst;

	(void)k;
	cfg_hostport(cx, path, n, &cf->cf_listen_host, &cf->cf_listen_port);
}

/*
 * HOST:PORT with HOST an IPv4 literal, [IPv6] or localhost, stored into
 * *hostp (replacing it) and *portp. Returns 0, or -1 after an error.
 */
int
cfg_hostport(struct cfgctx *cx, const char *path, const struct ynode *n,
    char **hostp, int *portp)
{
	struct in_addr a4;
	struct in6_addr a6;
	const char *s, *colon, *port, *p;
	char *host = NULL, buf[80];
	long v = 0;

	if (n->yn_type == YN_SEQ) {
		/* listen: [::1]:8787 unquoted reads as a YAML list. */
		cfg_error(cx, n,
		    "%s: expected \"HOST:PORT\" (quote IPv6 addresses: "
		    "\"[::1]:8787\")",
		    path);
		return (-1);
	}
	if ((s = cfg_string(cx, path, n, "HOST:PORT")) == NULL)
		return (-1);
	if (*s == '[') {
		if ((p = strchr(s, ']')) == NULL || p[1] != ':')
			goto bad;
		host = xstrndup(s + 1, (size_t)(p - s - 1));
		port = p + 2;
		if (inet_pton(AF_INET6, host, &a6) != 1) {
			cfg_error(cx, n, "%s: '%s' is not an IPv6 address",
			    path,
			    cfg_esc(buf, sizeof(buf), host, strlen(host)));
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
			return (-1);
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
			    path,
			    cfg_esc(buf, sizeof(buf), host, strlen(host)));
			goto out;
		}
	}
	for (p = port; *p >= '0' && *p <= '9' && v <= 65535; p++)
		v = v * 10 + (*p - '0');
	if (*port == '\0' || *p != '\0' || v > 65535) {
		cfg_error(cx, n, "%s: bad port '%s' (expected 0-65535)", path,
		    cfg_esc(buf, sizeof(buf), port, strlen(port)));
		goto out;
	}
	free(*hostp);
	*hostp = host;
	*portp = (int)v;
	return (0);
bad:
	cfg_error(cx, n, "%s: expected HOST:PORT, e.g. 127.0.0.1:8787", path);
out:
	free(host);
	return (-1);
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
		    cfg_esc(buf, sizeof(buf), s, key->yn_len),
		    CONFIG_MAX_UPSTREAM_NAME);
		return;
	}
	if (strcmp(s, "v1") == 0 || strcmp(s, "v1beta") == 0)
		cfg_error(cx, key,
		    "upstreams: the name '%s' is reserved (it would collide "
		    "with the /%s/ routes)",
		    s, s);
}

/*
 * The client's path (/v1/chat/completions, /v1beta/models/..., or
 * /openai/deployments/...) is appended to base_url, so a base_url that
 * already ends in the path's first segment (https://api.openai.com/v1, as
 * the SDKs' own base URLs are written) would send /v1/v1/... upstream and
 * every call would be a 404 there: an error at the base_url.
 */
static void
check_base_path(
    struct cfgctx *cx, const struct cfgentry *en, struct upstream_conf *uc)
{
	static const char *const prefixes[] = {"/v1", "/v1beta", "/openai"};
	const struct ynode *val = en->en_val, *at = en->en_key, *bu;
	const char *url, *p, *seg;
	size_t i, u;

	for (u = 0; u < uc->uc_nurls; u++) {
		url = uc->uc_urls[u].uu_url;
		if ((p = strstr(url, "://")) == NULL ||
		    (p = strchr(p + 3, '/')) == NULL)
			continue; /* no path */
		seg = strrchr(p, '/');
		for (i = 0; i < nitems(prefixes); i++) {
			if (strcmp(seg, prefixes[i]) != 0)
				continue;
			if ((bu = cfg_value(val, "base_url")) != NULL)
				at = bu;
			cfg_error(cx, at,
			    "%s.base_url: ends in '%s', and the client's "
			    "path, which starts with %s/, is appended to it "
			    "(calls would go to %s%s/...): drop the '%s'",
			    en->en_where, seg, seg, seg, seg, seg);
			return;
		}
	}
}

/* One upstream under upstreams:, checked by upstream_keys. */
static void
upstream_cb(struct cfgctx *cx, const struct cfgentry *en, void *arg)
{
	struct config *cf = arg;
	struct upstream_conf *uc;

	cfg_check_upstream_name(cx, en->en_key);
	uc = &cf->cf_upstreams[cf->cf_nupstreams++];
	uc->uc_name = xstrdup(en->en_key->yn_str);
	upstream_defaults(uc);
	if (en->en_val->yn_type != YN_MAP) {
		cfg_error(
		    cx, en->en_val, "%s: expected a mapping", en->en_where);
		return;
	}
	cfg_apply(cx, upstream_keys, en->en_where, en->en_key, en->en_val, uc);
	if (cfg_value(en->en_val, "api_key_env") != NULL &&
	    cfg_value(en->en_val, "keys_env") != NULL)
		cfg_error(cx, cfg_key(en->en_val, "keys_env"),
		    "%s: give api_key_env or keys_env, not both", en->en_where);
	check_base_path(cx, en, uc);
}

/* upstreams: a mapping of name -> upstream. */
static void
cfgp_upstreams(struct cfgctx *cx, const struct cfgkey *k, const char *path,
    const struct ynode *n, void *dst)
{
	struct config *cf = dst;

	(void)k;
	if (n->yn_type == YN_MAP && n->yn_nkids >= 2)
		cf->cf_upstreams =
		    xcalloc(n->yn_nkids / 2, sizeof(*cf->cf_upstreams));
	cfg_map_each(cx, path, n, "name: upstream", upstream_cb, cf);
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
	    path, cfg_esc(buf, sizeof(buf), s, n->yn_len));
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
 * One base URL. It comes only from this file and carries provider keys,
 * so it is held to https (plain http only to this machine), and anything
 * that could redirect or smuggle credentials is refused. Stores the URL
 * without trailing slashes and its host into *urlp and *hostp; 0, or -1
 * after an error.
 */
static int
parse_base_url(struct cfgctx *cx, const char *path, const struct ynode *n,
    char **urlp, char **hostp)
{
	CURLU *u;
	CURLUcode rc;
	char *scheme = NULL, *host = NULL, *url = NULL, buf[160];
	const char *s;
	size_t len, nerr = cx->cx_nerr;
	int ret = -1;

	if ((s = cfg_string(cx, path, n, "a URL")) == NULL)
		return (-1);
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
		    path, cfg_esc(buf, sizeof(buf), scheme, strlen(scheme)));
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
	*urlp = xstrndup(url, len);
	*hostp = xstrdup(host);
	ret = 0;
out:
	curl_free(url);
	curl_free(host);
	curl_free(scheme);
	curl_url_cleanup(u);
	return (ret);
}

/* Free uc's base URLs. */
static void
free_urls(struct upstream_conf *uc)
{
	size_t i;

	for (i = 0; i < uc->uc_nurls; i++) {
		free(uc->uc_urls[i].uu_url);
		free(uc->uc_urls[i].uu_host);
	}
	free(uc->uc_urls);
	uc->uc_urls = NULL;
	uc->uc_nurls = 0;
	uc->uc_base_url = NULL;
	uc->uc_host = NULL;
}

/* An item of a base_url list: a URL, or { url: URL, weight: N }. */
static void
base_url_item(struct cfgctx *cx, const char *path, const struct ynode *n,
    struct upstream_conf *uc)
{
	struct upstream_url *uu = &uc->uc_urls[uc->uc_nurls];
	const struct ynode *un = n, *wn = NULL;
	char where[CFG_PATH_MAX + 16], *end;
	long w = 1;
	size_t i;

	if (n->yn_type == YN_MAP) {
		for (i = 0; i + 1 < n->yn_nkids; i += 2) {
			if (strcmp(n->yn_kids[i]->yn_str, "url") == 0)
				continue;
			if (strcmp(n->yn_kids[i]->yn_str, "weight") == 0)
				continue;
			cfg_error(cx, n->yn_kids[i],
			    "%s: unknown key '%s' (expected url and weight)",
			    path, n->yn_kids[i]->yn_str);
		}
		if ((un = cfg_value(n, "url")) == NULL) {
			cfg_error(cx, n, "%s: url is required", path);
			return;
		}
		wn = cfg_value(n, "weight");
	}
	if (wn != NULL) {
		snprintf(where, sizeof(where), "%s.weight", path);
		errno = 0;
		w = wn->yn_type == YN_SCALAR ? strtol(wn->yn_str, &end, 10) : 0;
		if (wn->yn_type != YN_SCALAR || wn->yn_len == 0 ||
		    *end != '\0' || errno != 0 || w < 1 || w > 1000) {
			cfg_error(cx, wn,
			    "%s: expected a whole number from 1 to 1000",
			    where);
			return;
		}
	}
	snprintf(where, sizeof(where), "%s%s", path, n == un ? "" : ".url");
	if (parse_base_url(cx, where, un, &uu->uu_url, &uu->uu_host) == -1)
		return;
	for (i = 0; i < uc->uc_nurls; i++) {
		if (strcmp(uc->uc_urls[i].uu_url, uu->uu_url) != 0)
			continue;
		cfg_error(cx, un, "%s: the same URL is listed twice", where);
		free(uu->uu_url);
		free(uu->uu_host);
		return;
	}
	uu->uu_weight = (int)w;
	uc->uc_nurls++;
}

/*
 * upstreams.NAME.base_url: one URL, or a list of them (each a URL or a
 * { url, weight } mapping) that calls are spread over by weight.
 */
static void
cfgp_base_url(struct cfgctx *cx, const struct cfgkey *k, const char *path,
    const struct ynode *n, void *dst)
{
	struct upstream_conf *uc = dst;
	char where[CFG_PATH_MAX];
	size_t i;

	(void)k;
	free_urls(uc);
	if (n->yn_type == YN_SEQ) {
		if (n->yn_nkids == 0 || n->yn_nkids > UPSTREAM_URLS_MAX) {
			cfg_error(cx, n, "%s: expected 1 to %d URLs", path,
			    UPSTREAM_URLS_MAX);
			return;
		}
		uc->uc_urls = xcalloc(n->yn_nkids, sizeof(*uc->uc_urls));
		for (i = 0; i < n->yn_nkids; i++) {
			snprintf(where, sizeof(where), "%s[%zu]", path, i);
			base_url_item(cx, where, n->yn_kids[i], uc);
		}
	} else {
		uc->uc_urls = xcalloc(1, sizeof(*uc->uc_urls));
		if (parse_base_url(cx, path, n, &uc->uc_urls[0].uu_url,
			&uc->uc_urls[0].uu_host) == 0) {
			uc->uc_urls[0].uu_weight = 1;
			uc->uc_nurls = 1;
		}
	}
	if (uc->uc_nurls > 0) {
		uc->uc_base_url = uc->uc_urls[0].uu_url;
		uc->uc_host = uc->uc_urls[0].uu_host;
	}
}

/* Loading. */

/* Can tag t of a call ever be set: by a header, a default or a binding? */
static int
tag_settable(const struct config *cf, int t)
{
	size_t i;

	if (cf->cf_tag_from_header[t] || cf->cf_tag_default[t] != NULL)
		return (1);
	for (i = 0; i < cf->cf_nkeys; i++)
		if (cf->cf_keys[i].kb_tags[t] != NULL)
			return (1);
	return (0);
}

/*
 * A per: tag no call can carry would put every call in one budget while
 * the file says one per value: an error, at the policy.
 */
static void
config_check_policies(
    struct cfgctx *cx, const struct ynode *root, const struct config *cf)
{
	const struct ynode *list = NULL;
	size_t i;
	int t;

	if (cf->cf_policies == NULL || root == NULL || root->yn_type != YN_MAP)
		return;
	for (i = 0; i + 1 < root->yn_nkids; i += 2)
		if (strcmp(root->yn_kids[i]->yn_str, "policies") == 0)
			list = root->yn_kids[i + 1];
	if (list == NULL || list->yn_type != YN_SEQ)
		return;
	for (i = 0; i < cf->cf_policies->ps_n && i < list->yn_nkids; i++) {
		for (t = 0; t < TAG_MAX; t++) {
			if (!cf->cf_policies->ps_pol[i].po_per[t] ||
			    tag_settable(cf, t))
				continue;
			cfg_error(cx, list->yn_kids[i],
			    "policies[%zu] (%s).per: no call can have a %s tag "
			    "(attribution.headers leaves it out and no default "
			    "or key binding sets it)",
			    i, cf->cf_policies->ps_pol[i].po_name, tag_name(t));
		}
	}
}

/* policies: the list, parsed by the policy module. */
static void
cfgp_policies(struct cfgctx *cx, const struct cfgkey *k, const char *path,
    const struct ynode *n, void *dst)
{
	struct config *cf = dst;

	(void)k;
	policy_free(cf->cf_policies);
	cf->cf_policies = NULL;
	policy_parse(cx, path, n, &cf->cf_policies);
}

/*
 * timezone: an IANA zone name (Europe/Berlin) whose days, weeks and
 * months the calendar budget windows follow; UTC by default. It must be
 * in the system's zone database: a name the C library does not know
 * would silently mean UTC.
 */
static void
cfgp_timezone(struct cfgctx *cx, const struct cfgkey *k, const char *path,
    const struct ynode *n, void *dst)
{
	struct config *cf = dst;
	const char *dir = getenv("TZDIR"), *p;
	char file[512];

	(void)k;
	if (n->yn_type != YN_SCALAR || n->yn_len == 0 || n->yn_len > 64) {
		cfg_error(cx, n,
		    "%s: expected a zone name such as Europe/Berlin", path);
		return;
	}
	for (p = n->yn_str; *p != '\0'; p++)
		if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
			(*p >= '0' && *p <= '9') || *p == '/' || *p == '_' ||
			*p == '-' || *p == '+'))
			break;
	snprintf(file, sizeof(file), "%s/%s",
	    dir != NULL ? dir : "/usr/share/zoneinfo", n->yn_str);
	if (*p != '\0' || n->yn_str[0] == '/' ||
	    strstr(n->yn_str, "..") != NULL || access(file, R_OK) == -1) {
		cfg_error(cx, n,
		    "%s: unknown time zone '%s' (not in the zone database; "
		    "e.g. UTC, Europe/Berlin, America/New_York)",
		    path, cfg_esc(file, sizeof(file), n->yn_str, n->yn_len));
		return;
	}
	free(cf->cf_timezone);
	cf->cf_timezone = xstrdup(n->yn_str);
}

/* refusals.hard_cap_status: 429 (the default) or 402. */
static void
cfgp_hard_cap_status(struct cfgctx *cx, const struct cfgkey *k,
    const char *path, const struct ynode *n, void *dst)
{
	int *out = dst;

	(void)k;
	if (n->yn_type != YN_SCALAR ||
	    (strcmp(n->yn_str, "429") != 0 && strcmp(n->yn_str, "402") != 0)) {
		cfg_error(cx, n, "%s: expected 429 or 402", path);
		return;
	}
	*out = n->yn_str[1] == '2' ? 429 : 402;
}

static void
config_defaults(struct config *cf)
{
	int t;

	cf->cf_refs = 1;
	cf->cf_listen_host = xstrdup("127.0.0.1");
	cf->cf_listen_port = 8787;
	cf->cf_max_body_bytes = 32 * 1024 * 1024;
	cf->cf_max_header_bytes = 64 * 1024;
	cf->cf_max_headers = 100;
	cf->cf_max_connections = 1024;
	cf->cf_max_connections_per_client = -1; /* see config_load */
	/*
	 * SDKs write a request's whole head at once, so a head still
	 * incomplete after a few seconds is not a client being slow: it is a
	 * connection holding a slot. 10 s leaves room for a congested link
	 * (nginx's client_header_timeout is 60 s, for browsers on any link).
	 */
	cf->cf_header_timeout_ms = 10 * 1000;
	cf->cf_request_timeout_ms = 30 * 1000;
	cf->cf_client_write_timeout_ms = 300 * 1000;
	cf->cf_keepalive_timeout_ms = 60 * 1000;
	cf->cf_drain_timeout_ms = 30 * 1000;
	cf->cf_stream_high_watermark = 256 * 1024;
	cf->cf_durability = DURABILITY_PROCESS;
	cf->cf_ledger_queue_max_int = 10000;
	/* An unknown model is never recorded at $0 unless asked to be. */
	cf->cf_unknown_model = UNKNOWN_MODEL_FAMILY_MAX;
	cf->cf_hard_cap_status = 429;
	cf->cf_retry_backoff_ms = 200;
	cf->cf_retry_max_backoff_ms = 2000;
	for (t = 0; t < TAG_MAX; t++)
		cf->cf_tag_from_header[t] = 1;
	config_defaults_alerts(cf);
}

static void
config_free(struct config *cf)
{
	struct upstream_conf *uc;
	size_t i, j;
	int t;

	for (i = 0; i < cf->cf_nupstreams; i++) {
		uc = &cf->cf_upstreams[i];
		free(uc->uc_name);
		free_urls(uc);
		free(uc->uc_ca_file);
		free(uc->uc_api_key_env);
		free(uc->uc_service_tier);
		config_free_keys(uc);
		for (j = 0; j < uc->uc_ndeployments; j++) {
			free(uc->uc_deployments[j].dp_name);
			free(uc->uc_deployments[j].dp_model);
		}
		free(uc->uc_deployments);
	}
	free(cf->cf_upstreams);
	for (i = 0; i < cf->cf_nkeys; i++) {
		for (t = 0; t < TAG_MAX; t++)
			free(cf->cf_keys[i].kb_tags[t]);
	}
	free(cf->cf_keys);
	for (t = 0; t < TAG_MAX; t++)
		free(cf->cf_tag_default[t]);
	free(cf->cf_ledger_path);
	free(cf->cf_prices_path);
	free(cf->cf_unknown_price_as);
	if (cf->cf_prices != NULL)
		pricing_free(cf->cf_prices);
	policy_free(cf->cf_policies);
	config_free_routing(cf);
	config_free_cache(cf);
	free(cf->cf_timezone);
	free(cf->cf_listen_host);
	config_free_admin(cf);
	config_free_alerts(cf);
	config_free_fleet(cf);
	config_free_ship(cf);
	free(cf->cf_path);
	free(cf);
}

/*
 * Can the price file that prices: names be read? Said at the prices: value
 * when it cannot (the file's own errors carry its own positions), so a
 * missing file is reported at the line that names it. 1 if it can, or when
 * the path is the default one beside the file (no key to point at).
 */
static int
prices_readable(
    struct cfgctx *cx, const struct ynode *n, const struct config *cf)
{
	struct stat st;
	char buf[160];

	if (n == NULL || n->yn_type != YN_SCALAR)
		return (1);
	if (stat(cf->cf_prices_path, &st) == -1) {
		cfg_error(cx, n, "prices: cannot read '%s': %s",
		    cfg_esc(buf, sizeof(buf), cf->cf_prices_path,
			strlen(cf->cf_prices_path)),
		    strerror(errno));
		return (0);
	}
	if (!S_ISREG(st.st_mode)) {
		cfg_error(cx, n, "prices: '%s' is not a regular file",
		    cfg_esc(buf, sizeof(buf), cf->cf_prices_path,
			strlen(cf->cf_prices_path)));
		return (0);
	}
	return (1);
}

/*
 * Which top-level keys the file sets, a bit per top_keys entry. A key
 * with nothing under it ("policies:" and the end of the file) counts as
 * absent: that is what a file cut short while it was written looks like.
 */
static unsigned
top_keys_present(const struct ynode *root)
{
	unsigned bits = 0;
	size_t i, k;

	if (root->yn_type != YN_MAP)
		return (0);
	for (i = 0; i + 1 < root->yn_nkids; i += 2) {
		if (root->yn_kids[i]->yn_type != YN_SCALAR ||
		    ynode_is_null(root->yn_kids[i + 1]))
			continue;
		for (k = 0; top_keys[k].k_name != NULL; k++)
			if (strcmp(root->yn_kids[i]->yn_str,
				top_keys[k].k_name) == 0)
				bits |= 1u << k;
	}
	return (bits);
}

/*
 * Can cf replace the running configuration run? A reload takes a file
 * that loads without an error, but also refuses two things a file caught
 * half-written (an editor saving in place, a deploy tool copying, SIGHUP
 * at the wrong moment) looks like, and that would otherwise go live at
 * once: no upstreams at all (every call would be a 404), and a top-level
 * key the running configuration has that the new file lacks (a file cut
 * before its policies: would lift every cap). A section is removed by
 * keeping its key with an empty value, or by a restart. Returns 0, or -1
 * with every reason appended to errs.
 */
int
config_check_reload(
    const struct config *run, const struct config *cf, struct cfgerrs *errs)
{
	size_t k;
	int bad = 0;

	if (cf->cf_nupstreams == 0) {
		cfgerrs_add(errs,
		    "%s: no upstreams: every call would be answered 404 (an "
		    "empty or half-written file?)",
		    cf->cf_path);
		bad = 1;
	}
	for (k = 0; top_keys[k].k_name != NULL; k++) {
		if ((run->cf_top_keys & (1u << k)) == 0 ||
		    (cf->cf_top_keys & (1u << k)) != 0)
			continue;
		if (cf->cf_nupstreams == 0 &&
		    strcmp(top_keys[k].k_name, "upstreams") == 0)
			continue; /* said above */
		cfgerrs_add(errs,
		    "%s: %s: is missing or empty, but the running "
		    "configuration has it (a half-written file?); to remove "
		    "it, %s",
		    cf->cf_path, top_keys[k].k_name,
		    strcmp(top_keys[k].k_name, "policies") == 0
			? "write 'policies: []', or restart"
			: "restart");
		bad = 1;
	}
	return (bad ? -1 : 0);
}

/*
 * Load and check the file at path. Returns a new config (one reference,
 * generation 0), or NULL with every error found appended to errs.
 */
struct config *
config_load(const char *path, struct cfgerrs *errs)
{
	return (config_load_opts(path, 0, errs));
}

/*
 * The configuration at path for a command line tool: production secrets
 * optional (CONFIG_SECRETS_OPTIONAL), every error on stderr. NULL if it
 * has any.
 */
struct config *
config_load_cli(const char *path)
{
	struct cfgerrs errs = {0};
	struct config *cf;
	size_t i;

	cf = config_load_opts(path, CONFIG_SECRETS_OPTIONAL, &errs);
	for (i = 0; cf == NULL && i < errs.ce_n; i++)
		fprintf(stderr, "%s\n", errs.ce_msgs[i]);
	if (cf == NULL && errs.ce_n == 0)
		fprintf(stderr, "%s: cannot load configuration\n", path);
	cfgerrs_free(&errs);
	return (cf);
}

/*
 * config_load with flags (CONFIG_SECRETS_OPTIONAL); warnings, if any, are
 * appended to errs->ce_warns.
 */
struct config *
config_load_opts(const char *path, int flags, struct cfgerrs *errs)
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
	cx.cx_sort = 1;
	cx.cx_flags = flags;
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
	if (root != NULL) {
		cfg_apply(&cx, top_keys, NULL, root, root, cf);
		cf->cf_top_keys = top_keys_present(root);
	}
	cf->cf_ledger_queue_max = (size_t)cf->cf_ledger_queue_max_int;
	/*
	 * Left out, the per-client limit is off on a loopback listener (a
	 * sidecar: every client is 127.0.0.1, so it would cap the whole
	 * host) and a quarter of max_connections on any other address.
	 */
	if (cf->cf_max_connections_per_client < 0)
		cf->cf_max_connections_per_client =
		    host_is_loopback(cf->cf_listen_host)
		    ? 0
		    : (cf->cf_max_connections + 3) / 4;
	if (cf->cf_ledger_path == NULL)
		xasprintf(&cf->cf_ledger_path, "%s/data/ledger.db", cx.cx_dir);
	/* The price table is part of the configuration: a reload that
	 * cannot load it keeps the running one. Without a prices: key,
	 * prices.yaml beside the file is used if there is one; with neither,
	 * every call is recorded unpriced (or refused, as unknown_models
	 * says). */
	if (cf->cf_prices_path == NULL) {
		xasprintf(&cf->cf_prices_path, "%s/prices.yaml", cx.cx_dir);
		if (access(cf->cf_prices_path, F_OK) == -1) {
			free(cf->cf_prices_path);
			cf->cf_prices_path = NULL;
		}
	}
	if (cf->cf_prices_path != NULL &&
	    prices_readable(&cx, cfg_value(root, "prices"), cf) &&
	    cx.cx_nerr == 0 &&
	    (cf->cf_prices = pricing_load(cf->cf_prices_path, errs)) == NULL)
		cx.cx_nerr++;
	if (cf->cf_policies == NULL)
		cf->cf_policies = xcalloc(1, sizeof(*cf->cf_policies));
	config_check_meter(&cx, root, cf);
	config_check_admin(&cx, root, cf);
	config_check_policies(&cx, root, cf);
	if (cf->cf_routing == NULL)
		cf->cf_routing = xcalloc(1, sizeof(*cf->cf_routing));
	config_check_routing(&cx, root, cf);
	config_check_cache(&cx, root, cf);
	config_check_alerts(&cx, root, cf);
	config_check_fleet(&cx, root, cf);
	config_check_ship(&cx, root, cf);
	if (cx.cx_nerr != 0)
		goto fail;

	cfg_sort_errors(&cx);
	ynode_free(root);
	free(buf);
	free(cx.cx_dir);
	return (cf);
fail:
	cfg_sort_errors(&cx);
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

/* The model an Azure deployment serves, or NULL if it is not mapped. */
const char *
config_deployment_model(const struct upstream_conf *uc, const char *name)
{
	size_t i;

	for (i = 0; i < uc->uc_ndeployments; i++) {
		if (strcmp(uc->uc_deployments[i].dp_name, name) == 0)
			return (uc->uc_deployments[i].dp_model);
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

/*
 * An environment variable that should hold a secret is not set: an error,
 * or with CONFIG_SECRETS_OPTIONAL a warning (tollgate check, the ledger
 * commands). Returns 0 when the caller should go on without the secret,
 * -1 after an error.
 */
int
cfg_secret_env(
    struct cfgctx *cx, const struct ynode *n, const char *path, const char *var)
{
	struct cfgerrs *ce = cx->cx_errs;
	char *w;

	if (!(cx->cx_flags & CONFIG_SECRETS_OPTIONAL)) {
		cfg_error(cx, n, "%s: the environment variable %s is not set",
		    path, var);
		return (-1);
	}
	if (ce == NULL)
		return (0);
	xasprintf(&w,
	    "%s:%zu:%zu: warning: %s: the environment variable %s is not set "
	    "here; tollgate needs it to start",
	    cx->cx_file, n->yn_line, n->yn_col, path, var);
	ce->ce_warns = xreallocarray(
	    ce->ce_warns, ce->ce_nwarn + 1, sizeof(*ce->ce_warns));
	ce->ce_warns[ce->ce_nwarn++] = w;
	return (0);
}
