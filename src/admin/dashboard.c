/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The dashboard: GET /, /dashboard, /dashboard.js and /dashboard.css on the
 * admin listener, one page with its script and style, built into the
 * binary from src/admin/dashboard/ (cmake/embed.cmake), so it works with no
 * network and nothing installed beside the binary. The files hold no data
 * and need no token; the page asks for the token, keeps it in the tab's
 * sessionStorage and sends it as a bearer token on every call to the admin
 * API it shows (docs/dashboard.md).
 *
 * Every answer carries a Content-Security-Policy that lets the page run
 * only this listener's script and style, talk only to this listener, and
 * never be framed: tag values come from clients, and even if one slipped
 * into markup no inline script could run nor any request leave for
 * another host.
 */
#include <string.h>

#include "tollgate/http.h"

#include "admin_int.h"
#include "dashboard_assets.inc"

static const char dashboard_csp[] =
    "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'";

static const struct {
	const char *da_path;
	const char *da_ctype;
	const unsigned char *da_body;
	size_t da_len;
} dashboard_files[] = {
    {"/", "text/html; charset=utf-8", dashboard_html, sizeof(dashboard_html)},
    {"/dashboard", "text/html; charset=utf-8", dashboard_html,
	sizeof(dashboard_html)},
    {"/dashboard.js", "text/javascript; charset=utf-8", dashboard_js,
	sizeof(dashboard_js)},
    {"/dashboard.css", "text/css; charset=utf-8", dashboard_css,
	sizeof(dashboard_css)},
};

/* Serve one of the dashboard's files; the route table sends only these. */
void
ep_dashboard(struct admin_req *ar)
{
	struct hdrs hs = {0};
	size_t i;

	for (i = 0; i < sizeof(dashboard_files) / sizeof(dashboard_files[0]);
	     i++)
		if (strcmp(ar->ar_path, dashboard_files[i].da_path) == 0)
			break;
	if (i == sizeof(dashboard_files) / sizeof(dashboard_files[0])) {
		admin_reply_error(ar, 404, "not found", NULL, NULL, NULL);
		return;
	}
	hdrs_add(&hs, "Content-Security-Policy", 23, dashboard_csp,
	    strlen(dashboard_csp));
	hdrs_add(&hs, "X-Frame-Options", 15, "DENY", 4);
	hdrs_add(&hs, "Referrer-Policy", 15, "no-referrer", 11);
	hdrs_add(&hs, "Cross-Origin-Resource-Policy", 28, "same-origin", 11);
	/* The embedded arrays end in a NUL that is not part of the file. */
	admin_reply_page(ar, dashboard_files[i].da_ctype,
	    dashboard_files[i].da_body, dashboard_files[i].da_len - 1, &hs);
	hdrs_clear(&hs);
}
