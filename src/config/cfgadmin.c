/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The admin: section: where the admin API listens and the bearer token it
 * requires. The token comes from an environment variable (token_env) or a
 * file only its owner can read (token_file), never from the YAML itself,
 * and it is a secret: it is never echoed in a message and is wiped when
 * the config is freed. Checks that need the whole file (an admin address
 * off loopback needs a token; the admin API never shares the proxy's
 * address) are in config_check_admin, run once everything is parsed. The
 * admin listener reads these at start only; a reload that changes them
 * is warned about by server_reload.
 */
#include <sys/stat.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tollgate/config.h"
#include "tollgate/util.h"

#include "cfg.h"

/* A token file larger than this is not a token. */
#define ADMIN_TOKEN_FILE_MAX 4096

static void cfgp_admin_listen(struct cfgctx *, const struct cfgkey *,
    const char *, const struct ynode *, void *);
static void cfgp_admin_token_env(struct cfgctx *, const struct cfgkey *,
    const char *, const struct ynode *, void *);
static void cfgp_admin_token_file(struct cfgctx *, const struct cfgkey *,
    const char *, const struct ynode *, void *);

static const struct cfgkey admin_keys[] = {
    KEY_CALL("listen", cfgp_admin_listen, 0, 0),
    KEY_CALL("token_env", cfgp_admin_token_env, 0, 0),
    KEY_CALL("token_file", cfgp_admin_token_file, 0, 0),
    KEY_END,
};

/* admin: a section of admin_keys, stored into the struct config. */
void
cfgp_admin(struct cfgctx *cx, const struct cfgkey *k, const char *path,
    const struct ynode *n, void *dst)
{
	(void)k;
	cfg_apply(cx, admin_keys, path, n, n, dst);
}

/* admin.listen: HOST:PORT, as the top-level listen. */
static void
cfgp_admin_listen(struct cfgctx *cx, const struct cfgkey *k, const char *path,
    const struct ynode *n, void *dst)
{
	struct config *cf = dst;

	(void)k;
	cfg_hostport(cx, path, n, &cf->cf_admin_host, &cf->cf_admin_port);
}

/* Replace the token, wiping the old one. */
static void
admin_set_token(struct config *cf, char *token)
{
	if (cf->cf_admin_token != NULL)
		freezero(cf->cf_admin_token, strlen(cf->cf_admin_token));
	cf->cf_admin_token = token;
}

/* Both token_env and token_file: say so at the second one. */
static int
admin_token_twice(struct cfgctx *cx, const char *path, const struct ynode *n,
    const struct config *cf)
{
	if (cf->cf_admin_token_src == NULL)
		return (0);
	cfg_error(cx, n, "%s: the token is already set by %s; use one of them",
	    path, cf->cf_admin_token_src);
	return (1);
}

/* admin.token_env: the name of a variable holding the token. */
static void
cfgp_admin_token_env(struct cfgctx *cx, const struct cfgkey *k,
    const char *path, const struct ynode *n, void *dst)
{
	struct config *cf = dst;
	const char *s, *v;

	(void)k;
	if ((s = cfg_string(cx, path, n, "an environment variable name")) ==
	    NULL)
		return;
	if (admin_token_twice(cx, path, n, cf))
		return;
	if ((v = getenv(s)) == NULL || v[0] == '\0') {
		if (cfg_secret_env(cx, n, path, s) == 0) {
			cf->cf_admin_token_unset = 1;
			cf->cf_admin_token_src = "admin.token_env";
		}
		return;
	}
	admin_set_token(cf, xstrdup(v));
	cf->cf_admin_token_src = "admin.token_env";
}

/*
 * admin.token_file: a file holding the token (one line; surrounding
 * whitespace is ignored), relative to the config's directory. It must not
 * be readable by group or others.
 */
static void
cfgp_admin_token_file(struct cfgctx *cx, const struct cfgkey *k,
    const char *path, const struct ynode *n, void *dst)
{
	struct config *cf = dst;
	struct stat st;
	char *file = NULL, *tok = NULL, buf[160];
	const char *s;
	ssize_t got;
	size_t len = 0, start;
	int fd = -1;

	(void)k;
	if ((s = cfg_string(cx, path, n, "a file path")) == NULL)
		return;
	if (admin_token_twice(cx, path, n, cf))
		return;
	if (s[0] == '/')
		file = xstrdup(s);
	else
		xasprintf(&file, "%s/%s", cx->cx_dir, s);
	cfg_esc(buf, sizeof(buf), file, strlen(file));
	if ((fd = open(file, O_RDONLY | O_CLOEXEC | O_NOCTTY)) == -1) {
		cfg_error(cx, n, "%s: cannot read '%s': %s", path, buf,
		    strerror(errno));
		goto out;
	}
	if (fstat(fd, &st) == -1 || !S_ISREG(st.st_mode)) {
		cfg_error(cx, n, "%s: '%s' is not a regular file", path, buf);
		goto out;
	}
	if (st.st_mode & (S_IRWXG | S_IRWXO)) {
		cfg_error(cx, n,
		    "%s: '%s' is accessible by group or others (mode %03o); "
		    "chmod 600 it",
		    path, buf, (unsigned)(st.st_mode & 0777));
		goto out;
	}
	tok = xmalloc(ADMIN_TOKEN_FILE_MAX + 1);
	while (len <= ADMIN_TOKEN_FILE_MAX) {
		got = read(fd, tok + len, ADMIN_TOKEN_FILE_MAX + 1 - len);
		if (got == -1 && errno == EINTR)
			continue;
		if (got == -1) {
			cfg_error(cx, n, "%s: cannot read '%s': %s", path, buf,
			    strerror(errno));
			goto out;
		}
		if (got == 0)
			break;
		len += (size_t)got;
	}
	if (len > ADMIN_TOKEN_FILE_MAX) {
		cfg_error(cx, n, "%s: '%s' is larger than %d bytes", path, buf,
		    ADMIN_TOKEN_FILE_MAX);
		goto out;
	}
	while (len > 0 &&
	    (tok[len - 1] == '\n' || tok[len - 1] == '\r' ||
		tok[len - 1] == ' ' || tok[len - 1] == '\t'))
		len--;
	for (start = 0; start < len &&
	     (tok[start] == ' ' || tok[start] == '\t' || tok[start] == '\n');
	     start++)
		;
	tok[len] = '\0';
	if (start == len || memchr(tok + start, '\n', len - start) != NULL ||
	    strlen(tok + start) != len - start) {
		cfg_error(cx, n, "%s: '%s' must hold the token on one line",
		    path, buf);
		goto out;
	}
	admin_set_token(cf, xstrdup(tok + start));
	cf->cf_admin_token_src = "admin.token_file";
out:
	if (tok != NULL)
		freezero(tok, ADMIN_TOKEN_FILE_MAX + 1);
	if (fd != -1)
		close(fd);
	free(file);
}

/* 127.0.0.0/8 and ::1 (also as ::ffff:127.x.y.z). */
static int
admin_host_is_loopback(const char *host)
{
	struct in_addr a4;
	struct in6_addr a6;

	if (inet_pton(AF_INET, host, &a4) == 1)
		return ((ntohl(a4.s_addr) >> 24) == 127);
	if (inet_pton(AF_INET6, host, &a6) == 1)
		return (IN6_IS_ADDR_LOOPBACK(&a6) ||
		    (IN6_IS_ADDR_V4MAPPED(&a6) && a6.s6_addr[12] == 127));
	return (0);
}

/*
 * Whole-file checks of admin:, and its defaults. An admin API reachable
 * off this machine must have a token; it never shares the proxy's address
 * (an ephemeral port 0 is never "the same").
 */
void
config_check_admin(
    struct cfgctx *cx, const struct ynode *root, struct config *cf)
{
	const struct ynode *admin, *at;

	admin = cfg_value(root, "admin");
	at = cfg_value(admin, "listen");
	if (cf->cf_admin_host == NULL) {
		cf->cf_admin_host = xstrdup("127.0.0.1");
		cf->cf_admin_port = 8788;
	}
	if (!admin_host_is_loopback(cf->cf_admin_host) &&
	    cf->cf_admin_token == NULL && !cf->cf_admin_token_unset)
		cfg_error(cx, at != NULL ? at : root,
		    "admin.listen: %s is not a loopback address, so the admin "
		    "API needs a token (admin.token_env or admin.token_file)",
		    cf->cf_admin_host);
	if (cf->cf_admin_port != 0 && cf->cf_admin_port == cf->cf_listen_port &&
	    cf->cf_listen_host != NULL &&
	    strcmp(cf->cf_admin_host, cf->cf_listen_host) == 0) {
		if (at == NULL)
			at = cfg_value(root, "listen");
		cfg_error(cx, at != NULL ? at : root,
		    "admin.listen: %s:%d is the proxy's listen address; the "
		    "admin API needs its own",
		    cf->cf_admin_host, cf->cf_admin_port);
	}
}

/* Release admin:'s fields, wiping the token. */
void
config_free_admin(struct config *cf)
{
	admin_set_token(cf, NULL);
	free(cf->cf_admin_host);
	cf->cf_admin_host = NULL;
}
