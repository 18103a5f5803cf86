/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The fleet: section: the Redis that the instances of a fleet share caps,
 * rate limits, kills and alerts through, this instance's name there, and
 * the lease and timeout knobs, with their defaults and ranges. The Redis
 * address is a redis:// or unix:// URL that never carries a password: the
 * password comes from an environment variable (password_env), is a secret
 * that no message repeats, and is wiped when the config is freed. The
 * default instance name needs the listen port, so it is filled in by
 * config_check_fleet once the whole file is parsed. src/fleet/ reads all
 * of this at start only; a reload that changes it is warned about by
 * server_reload.
 */
#include <sys/un.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "tollgate/config.h"
#include "tollgate/policy.h"
#include "tollgate/util.h"

#include "cfg.h"

#define FLEET_NAME_MAX 64 /* instance and key_prefix */
#define FLEET_DB_MAX 9999 /* Redis takes up to its `databases` setting */
#define FLEET_HOST_MAX 253
#define FLEET_SCHEME_CHARS                                                     \
	"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+.-"

#define FC_OFF(f) offsetof(struct fleet_conf, f)

/* A duration key whose range is [k_min, k_max] milliseconds. */
#define FLEET_DURATION(n, off, min, max)                                       \
	{                                                                      \
		.k_name = (n), .k_parse = cfgp_fleet_duration, .k_off = (off), \
		.k_min = (min), .k_max = (max)                                 \
	}

static void cfgp_fleet_redis(struct cfgctx *, const struct cfgkey *,
    const char *, const struct ynode *, void *);
static void cfgp_fleet_password_env(struct cfgctx *, const struct cfgkey *,
    const char *, const struct ynode *, void *);
static void cfgp_fleet_instance(struct cfgctx *, const struct cfgkey *,
    const char *, const struct ynode *, void *);
static void cfgp_fleet_prefix(struct cfgctx *, const struct cfgkey *,
    const char *, const struct ynode *, void *);
static void cfgp_fleet_lease_usd(struct cfgctx *, const struct cfgkey *,
    const char *, const struct ynode *, void *);
static void cfgp_fleet_duration(struct cfgctx *, const struct cfgkey *,
    const char *, const struct ynode *, void *);
static void cfgp_fleet_when_down(struct cfgctx *, const struct cfgkey *,
    const char *, const struct ynode *, void *);

static const struct cfgkey fleet_keys[] = {
    KEY_CALL("redis", cfgp_fleet_redis, 0, CFGKEY_REQUIRED),
    KEY_CALL("password_env", cfgp_fleet_password_env, 0, 0),
    KEY_CALL("instance", cfgp_fleet_instance, FC_OFF(fc_instance), 0),
    KEY_CALL("key_prefix", cfgp_fleet_prefix, FC_OFF(fc_prefix), 0),
    KEY_CALL("lease_usd", cfgp_fleet_lease_usd, FC_OFF(fc_lease_nusd), 0),
    FLEET_DURATION("lease_ttl", FC_OFF(fc_lease_ttl_ms), 3000, 600000),
    FLEET_DURATION("wait", FC_OFF(fc_wait_ms), 0, 30000),
    FLEET_DURATION("connect_timeout", FC_OFF(fc_connect_timeout_ms), 10, 60000),
    FLEET_DURATION("command_timeout", FC_OFF(fc_command_timeout_ms), 10, 60000),
    KEY_CALL("when_down", cfgp_fleet_when_down, FC_OFF(fc_when_down), 0),
    KEY_END,
};

/* Release what fc holds, wiping the password, and fc itself. */
static void
fleet_conf_free(struct fleet_conf *fc)
{
	if (fc == NULL)
		return;
	free(fc->fc_url);
	free(fc->fc_host);
	free(fc->fc_path);
	if (fc->fc_password != NULL)
		freezero(fc->fc_password, strlen(fc->fc_password));
	free(fc->fc_password_env);
	free(fc->fc_instance);
	free(fc->fc_prefix);
	free(fc);
}

/*
 * fleet: a section of fleet_keys. Left empty ("fleet:" with nothing under
 * it) it is off, as if it were not there.
 */
void
cfgp_fleet(struct cfgctx *cx, const struct cfgkey *k, const char *path,
    const struct ynode *n, void *dst)
{
	struct config *cf = dst;
	struct fleet_conf *fc;

	(void)k;
	if (ynode_is_null(n))
		return;
	fleet_conf_free(cf->cf_fleet);
	fc = cf->cf_fleet = xcalloc(1, sizeof(*fc));
	fc->fc_port = 6379;
	fc->fc_db = 0;
	fc->fc_lease_nusd = 1000000000LL; /* $1.00 */
	fc->fc_lease_ttl_ms = 30 * 1000;
	fc->fc_wait_ms = 1000;
	fc->fc_connect_timeout_ms = 1000;
	fc->fc_command_timeout_ms = 500;
	fc->fc_when_down = FLEET_DOWN_LOCAL;
	cfg_apply(cx, fleet_keys, path, n, n, fc);
	if (fc->fc_prefix == NULL)
		fc->fc_prefix = xstrdup("tollgate:");
}

/* Digits only, at most max: 0 and the value, or -1. */
static int
fleet_number(const char *s, size_t len, long max, long *out)
{
	long v = 0;
	size_t i;

	if (len == 0)
		return (-1);
	for (i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return (-1);
		v = v * 10 + (s[i] - '0');
		if (v > max)
			return (-1);
	}
	*out = v;
	return (0);
}

/* A host name ([A-Za-z0-9._-]) or an IPv4 literal. */
static int
fleet_host_ok(const char *s, size_t len)
{
	size_t i;

	if (len == 0 || len > FLEET_HOST_MAX)
		return (0);
	for (i = 0; i < len; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') ||
			(s[i] >= 'A' && s[i] <= 'Z') ||
			(s[i] >= '0' && s[i] <= '9') || s[i] == '.' ||
			s[i] == '-' || s[i] == '_'))
			return (0);
	return (1);
}

/*
 * redis://HOST[:PORT][/DB] after the scheme: the host (IPv6 in brackets),
 * the port (6379 by default) and the database (0 by default).
 */
static int
fleet_url_tcp(const char *s, struct fleet_conf *fc, char **cause)
{
	struct in6_addr a6;
	const char *end, *hend, *port = NULL, *p;
	char *host = NULL, buf[80];
	long v;

	end = s + strcspn(s, "/?#");
	if (*s == '[') {
		if ((p = memchr(s, ']', (size_t)(end - s))) == NULL) {
			xasprintf(cause,
			    "an IPv6 address needs its closing "
			    "']': redis://[::1]:6379");
			goto fail;
		}
		host = xstrndup(s + 1, (size_t)(p - s - 1));
		if (inet_pton(AF_INET6, host, &a6) != 1) {
			xasprintf(cause, "'%s' is not an IPv6 address",
			    cfg_esc(buf, sizeof(buf), host, strlen(host)));
			goto fail;
		}
		hend = p + 1;
		if (hend != end && *hend != ':') {
			xasprintf(cause,
			    "expected ':PORT' after the IPv6 "
			    "address");
			goto fail;
		}
	} else {
		hend = s + strcspn(s, ":/?#");
		if (hend < end &&
		    memchr(hend + 1, ':', (size_t)(end - hend - 1))) {
			xasprintf(cause,
			    "an IPv6 address goes in brackets: "
			    "redis://[::1]:6379");
			goto fail;
		}
		host = xstrndup(s, (size_t)(hend - s));
		if (*host == '\0') {
			xasprintf(cause,
			    "the host is missing: "
			    "redis://HOST:PORT/DB");
			goto fail;
		}
		if (!fleet_host_ok(host, strlen(host))) {
			xasprintf(cause, "'%s' is not a host name or address",
			    cfg_esc(buf, sizeof(buf), host, strlen(host)));
			goto fail;
		}
	}
	if (hend < end && *hend == ':') {
		port = hend + 1;
		if (fleet_number(port, (size_t)(end - port), 65535, &v) == -1 ||
		    v == 0) {
			xasprintf(cause, "bad port '%s' (expected 1-65535)",
			    cfg_esc(
				buf, sizeof(buf), port, (size_t)(end - port)));
			goto fail;
		}
		fc->fc_port = (int)v;
	}
	if (*end == '?') {
		xasprintf(cause,
		    "a redis:// URL takes no query; the database "
		    "goes in the path: redis://HOST:PORT/DB");
		goto fail;
	}
	if (*end == '/' && end[1] != '\0') {
		if (fleet_number(end + 1, strlen(end + 1), FLEET_DB_MAX, &v) ==
		    -1) {
			xasprintf(cause,
			    "bad database '%s' (expected a number, 0-%d)",
			    cfg_esc(buf, sizeof(buf), end + 1, strlen(end + 1)),
			    FLEET_DB_MAX);
			goto fail;
		}
		fc->fc_db = (int)v;
	}
	free(fc->fc_host);
	fc->fc_host = host;
	return (0);
fail:
	free(host);
	return (-1);
}

/* unix:///PATH[?db=N] after the scheme: an absolute socket path. */
static int
fleet_url_unix(const char *s, struct fleet_conf *fc, char **cause)
{
	struct sockaddr_un sun;
	const char *q, *p, *amp;
	char buf[80];
	size_t len;
	long v;
	int seen_db = 0;

	if (*s != '/') {
		/* unix://run/redis.sock: "run" would be read as a host. */
		xasprintf(cause,
		    "the socket path must be absolute, after "
		    "three slashes: unix:///run/redis.sock");
		return (-1);
	}
	len = strcspn(s, "?");
	if (len >= sizeof(sun.sun_path)) {
		xasprintf(cause, "the socket path is longer than %zu bytes",
		    sizeof(sun.sun_path) - 1);
		return (-1);
	}
	if (memchr(s, '%', len) != NULL) {
		xasprintf(cause,
		    "%%-escapes are not supported in the socket "
		    "path; write it as it is");
		return (-1);
	}
	if (len == 1 || s[len - 1] == '/') {
		xasprintf(cause,
		    "the socket path names a directory, not a "
		    "socket");
		return (-1);
	}
	for (q = s + len; *q != '\0'; q = amp) {
		p = q + 1;
		amp = p + strcspn(p, "&");
		if ((size_t)(amp - p) < 3 || strncmp(p, "db=", 3) != 0) {
			/* Not echoed: it could be a password=. */
			xasprintf(cause,
			    "the only query parameter allowed is "
			    "db=N");
			return (-1);
		}
		if (seen_db++) {
			xasprintf(cause, "db= is given twice");
			return (-1);
		}
		if (fleet_number(
			p + 3, (size_t)(amp - p - 3), FLEET_DB_MAX, &v) == -1) {
			xasprintf(cause,
			    "bad database '%s' (expected a number, 0-%d)",
			    cfg_esc(
				buf, sizeof(buf), p + 3, (size_t)(amp - p - 3)),
			    FLEET_DB_MAX);
			return (-1);
		}
		fc->fc_db = (int)v;
	}
	free(fc->fc_path);
	fc->fc_path = xstrndup(s, len);
	return (0);
}

/*
 * The Redis URL into fc: redis://HOST[:PORT][/DB] or
 * unix:///PATH[?db=N]. Written here rather than with curl's URL API,
 * which reads unix:///run/redis.sock as host "run" and path
 * /redis.sock, and redis:///x as host x. A URL with a user or password
 * is refused before anything in it is echoed: the password belongs in
 * the variable password_env names, never in the file or a message.
 * Returns 0, or -1 with *cause set.
 */
static int
fleet_parse_url(const char *s, struct fleet_conf *fc, char **cause)
{
	const char *sep, *rest;
	char buf[40];
	size_t slen;

	if ((sep = strstr(s, "://")) == NULL) {
		xasprintf(
		    cause, "expected redis://HOST:PORT/DB or unix:///PATH");
		return (-1);
	}
	slen = (size_t)(sep - s);
	rest = sep + 3;
	if (strchr(rest, '@') != NULL &&
	    !(slen == 4 && strncasecmp(s, "unix", 4) == 0 && *rest == '/')) {
		xasprintf(cause,
		    "a user or password in the URL is not allowed; put the "
		    "password in an environment variable and name it in "
		    "password_env");
		return (-1);
	}
	if (strchr(rest, '#') != NULL) {
		xasprintf(cause, "a fragment (#...) is not allowed");
		return (-1);
	}
	if (slen == 5 && strncasecmp(s, "redis", 5) == 0)
		return (fleet_url_tcp(rest, fc, cause));
	if (slen == 4 && strncasecmp(s, "unix", 4) == 0)
		return (fleet_url_unix(rest, fc, cause));
	if (slen == 6 && strncasecmp(s, "rediss", 6) == 0) {
		xasprintf(cause,
		    "rediss:// (Redis over TLS) is not supported by this "
		    "build; use redis:// or unix://");
		return (-1);
	}
	/* Echoed only when it looks like a scheme, not like user:pass. */
	if (slen == 0 || slen > 16 || strspn(s, FLEET_SCHEME_CHARS) < slen)
		xasprintf(
		    cause, "expected redis://HOST:PORT/DB or unix:///PATH");
	else
		xasprintf(cause,
		    "scheme '%s' is not supported (use redis:// or unix://)",
		    cfg_esc(buf, sizeof(buf), s, slen));
	return (-1);
}

/* fleet.redis: where the fleet's Redis is (fleet_parse_url). */
static void
cfgp_fleet_redis(struct cfgctx *cx, const struct cfgkey *k, const char *path,
    const struct ynode *n, void *dst)
{
	struct fleet_conf *fc = dst;
	const char *s;
	char *cause = NULL;

	(void)k;
	if ((s = cfg_string(cx, path, n, "a redis:// or unix:// URL")) == NULL)
		return;
	if (fleet_parse_url(s, fc, &cause) == -1) {
		cfg_error(cx, n, "%s: %s", path, cause);
		free(cause);
		return;
	}
	free(fc->fc_url);
	fc->fc_url = xstrdup(s);
}

/* fleet.password_env: the name of a variable holding Redis's password. */
static void
cfgp_fleet_password_env(struct cfgctx *cx, const struct cfgkey *k,
    const char *path, const struct ynode *n, void *dst)
{
	struct fleet_conf *fc = dst;
	const char *s, *v;

	(void)k;
	if ((s = cfg_string(cx, path, n, "an environment variable name")) ==
	    NULL)
		return;
	free(fc->fc_password_env);
	fc->fc_password_env = xstrdup(s);
	if ((v = getenv(s)) == NULL || v[0] == '\0') {
		(void)cfg_secret_env(cx, n, path, s);
		return;
	}
	if (fc->fc_password != NULL)
		freezero(fc->fc_password, strlen(fc->fc_password));
	fc->fc_password = xstrdup(v);
}

/* 1..FLEET_NAME_MAX bytes, each one ok() accepts. */
static int
fleet_name_ok(const char *s, size_t len, int (*ok)(int))
{
	size_t i;

	if (len == 0 || len > FLEET_NAME_MAX)
		return (0);
	for (i = 0; i < len; i++)
		if (!ok((unsigned char)s[i]))
			return (0);
	return (1);
}

/* A byte of an instance name: [A-Za-z0-9._:-]. */
static int
fleet_instance_char(int c)
{
	return ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	    (c >= '0' && c <= '9') || c == '.' || c == '_' || c == ':' ||
	    c == '-');
}

/* A byte of a key prefix: printable, not a space. */
static int
fleet_prefix_char(int c)
{
	return (c > ' ' && c < 0x7f);
}

/*
 * fleet.instance: this instance's name in the fleet's keys and in
 * GET /v1/fleet; two instances with one name would share one lease.
 */
static void
cfgp_fleet_instance(struct cfgctx *cx, const struct cfgkey *k, const char *path,
    const struct ynode *n, void *dst)
{
	char **out = dst, buf[80];
	const char *s;

	(void)k;
	if ((s = cfg_string(cx, path, n, "an instance name")) == NULL)
		return;
	if (!fleet_name_ok(s, n->yn_len, fleet_instance_char)) {
		cfg_error(cx, n,
		    "%s: bad instance name '%s' (1-%d characters of "
		    "A-Z a-z 0-9 . _ : -)",
		    path, cfg_esc(buf, sizeof(buf), s, n->yn_len),
		    FLEET_NAME_MAX);
		return;
	}
	free(*out);
	*out = xstrdup(s);
}

/* fleet.key_prefix: what every fleet key in Redis starts with. */
static void
cfgp_fleet_prefix(struct cfgctx *cx, const struct cfgkey *k, const char *path,
    const struct ynode *n, void *dst)
{
	char **out = dst, buf[80];
	const char *s;

	(void)k;
	if ((s = cfg_string(cx, path, n, "a key prefix")) == NULL)
		return;
	if (!fleet_name_ok(s, n->yn_len, fleet_prefix_char)) {
		cfg_error(cx, n,
		    "%s: bad key prefix '%s' (1-%d printable characters, no "
		    "spaces)",
		    path, cfg_esc(buf, sizeof(buf), s, n->yn_len),
		    FLEET_NAME_MAX);
		return;
	}
	free(*out);
	*out = xstrdup(s);
}

/* fleet.lease_usd: an exact amount of USD, more than 0. */
static void
cfgp_fleet_lease_usd(struct cfgctx *cx, const struct cfgkey *k,
    const char *path, const struct ynode *n, void *dst)
{
	int64_t v;

	(void)k;
	if (n->yn_type != YN_SCALAR || ynode_is_null(n) ||
	    policy_parse_usd(n->yn_str, &v) == -1 || v == 0) {
		cfg_error(cx, n,
		    "%s: expected an amount of USD greater than 0, at most 9 "
		    "decimals (e.g. 1.00)",
		    path);
		return;
	}
	*(int64_t *)dst = v;
}

/* ms as the shortest of "500ms", "3s", "10m" that is exact. */
static const char *
fleet_ms_text(char *buf, size_t size, long long ms)
{
	if (ms != 0 && ms % 60000 == 0)
		snprintf(buf, size, "%lldm", ms / 60000);
	else if (ms % 1000 == 0)
		snprintf(buf, size, "%llds", ms / 1000);
	else
		snprintf(buf, size, "%lldms", ms);
	return (buf);
}

/* A duration (cfgp_duration's forms) within [k_min, k_max] ms. */
static void
cfgp_fleet_duration(struct cfgctx *cx, const struct cfgkey *k, const char *path,
    const struct ynode *n, void *dst)
{
	struct cfgkey any = *k;
	char lo[24], hi[24];
	size_t nerr = cx->cx_nerr;
	long v = -1;

	any.k_min = 0;
	cfgp_duration(cx, &any, path, n, &v);
	if (cx->cx_nerr != nerr)
		return;
	if (v < k->k_min || v > k->k_max) {
		cfg_error(cx, n, "%s: must be between %s and %s", path,
		    fleet_ms_text(lo, sizeof(lo), k->k_min),
		    fleet_ms_text(hi, sizeof(hi), k->k_max));
		return;
	}
	*(int64_t *)dst = v;
}

/* fleet.when_down: local | refuse. */
static void
cfgp_fleet_when_down(struct cfgctx *cx, const struct cfgkey *k,
    const char *path, const struct ynode *n, void *dst)
{
	enum fleet_when_down *out = dst;
	const char *s;

	(void)k;
	if ((s = cfg_string(cx, path, n, "local or refuse")) == NULL)
		return;
	if (strcmp(s, "local") == 0)
		*out = FLEET_DOWN_LOCAL;
	else if (strcmp(s, "refuse") == 0)
		*out = FLEET_DOWN_REFUSE;
	else
		cfg_error(cx, n, "%s: expected local or refuse", path);
}

/*
 * Whole-file part of fleet:: the default instance name, this host's name
 * and the listen port, which may be set after fleet: in the file. A host
 * name longer than the room left, or with bytes an instance name cannot
 * hold, is cut or has them replaced, so the default is always a valid
 * name.
 */
void
config_check_fleet(
    struct cfgctx *cx, const struct ynode *root, struct config *cf)
{
	struct fleet_conf *fc = cf->cf_fleet;
	char host[256], port[16];
	size_t i, room;

	(void)cx;
	(void)root;
	if (fc == NULL || fc->fc_instance != NULL)
		return;
	if (gethostname(host, sizeof(host)) == -1 || host[0] == '\0')
		snprintf(host, sizeof(host), "localhost");
	host[sizeof(host) - 1] = '\0';
	snprintf(port, sizeof(port), ":%d", cf->cf_listen_port);
	room = FLEET_NAME_MAX - strlen(port);
	if (strlen(host) > room)
		host[room] = '\0';
	for (i = 0; host[i] != '\0'; i++)
		if (!fleet_instance_char((unsigned char)host[i]))
			host[i] = '_';
	xasprintf(&fc->fc_instance, "%s%s", host, port);
}

/* Release fleet:'s fields, wiping the password. */
void
config_free_fleet(struct config *cf)
{
	fleet_conf_free(cf->cf_fleet);
	cf->cf_fleet = NULL;
}

/* Do two optional strings differ? */
static int
fleet_str_differs(const char *a, const char *b)
{
	if (a == NULL || b == NULL)
		return (a != b);
	return (strcmp(a, b) != 0);
}

/*
 * The first fleet: key whose value differs between a and b (either may
 * be NULL: no fleet), as its name, "fleet" when one has the section and
 * the other not, or NULL when they are the same. A changed password is
 * "password_env": only the key is ever named, never the value.
 */
const char *
config_fleet_changed(const struct fleet_conf *a, const struct fleet_conf *b)
{
	if (a == NULL || b == NULL)
		return (a != b ? "fleet" : NULL);
	if (fleet_str_differs(a->fc_url, b->fc_url))
		return ("redis");
	if (fleet_str_differs(a->fc_password_env, b->fc_password_env) ||
	    fleet_str_differs(a->fc_password, b->fc_password))
		return ("password_env");
	if (fleet_str_differs(a->fc_instance, b->fc_instance))
		return ("instance");
	if (fleet_str_differs(a->fc_prefix, b->fc_prefix))
		return ("key_prefix");
	if (a->fc_lease_nusd != b->fc_lease_nusd)
		return ("lease_usd");
	if (a->fc_lease_ttl_ms != b->fc_lease_ttl_ms)
		return ("lease_ttl");
	if (a->fc_wait_ms != b->fc_wait_ms)
		return ("wait");
	if (a->fc_connect_timeout_ms != b->fc_connect_timeout_ms)
		return ("connect_timeout");
	if (a->fc_command_timeout_ms != b->fc_command_timeout_ms)
		return ("command_timeout");
	if (a->fc_when_down != b->fc_when_down)
		return ("when_down");
	return (NULL);
}

/*
 * fleet: as one line of text, every key with the value in force (the
 * defaults included), for tollgate check; the caller frees it. The
 * password is named by its variable only.
 */
char *
config_fleet_describe(const struct fleet_conf *fc)
{
	char *out, where[300], usd[32], ttl[24], wait[24], ct[24], cmd[24];
	char pw[160];

	if (fc->fc_path != NULL)
		snprintf(where, sizeof(where), "unix socket %s", fc->fc_path);
	else if (strchr(fc->fc_host, ':') != NULL)
		snprintf(
		    where, sizeof(where), "[%s]:%d", fc->fc_host, fc->fc_port);
	else
		snprintf(
		    where, sizeof(where), "%s:%d", fc->fc_host, fc->fc_port);
	if (fc->fc_password_env == NULL)
		snprintf(pw, sizeof(pw), "no password");
	else
		snprintf(pw, sizeof(pw), "password from %s%s",
		    fc->fc_password_env,
		    fc->fc_password == NULL ? " (not set here)" : "");
	usd_format(usd, sizeof(usd), fc->fc_lease_nusd);
	xasprintf(&out,
	    "fleet: redis %s db %d, %s, instance %s, key_prefix %s, "
	    "lease_usd %s, lease_ttl %s, wait %s, connect_timeout %s, "
	    "command_timeout %s, when_down %s",
	    where, fc->fc_db, pw, fc->fc_instance, fc->fc_prefix, usd,
	    fleet_ms_text(ttl, sizeof(ttl), fc->fc_lease_ttl_ms),
	    fleet_ms_text(wait, sizeof(wait), fc->fc_wait_ms),
	    fleet_ms_text(ct, sizeof(ct), fc->fc_connect_timeout_ms),
	    fleet_ms_text(cmd, sizeof(cmd), fc->fc_command_timeout_ms),
	    fc->fc_when_down == FLEET_DOWN_REFUSE ? "refuse" : "local");
	return (out);
}
