/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The YAML walker's reader. It reads a YAML file (tollgate.yaml,
 * prices.yaml) from disk (refusing one over YAML_MAX_FILE_BYTES) and turns
 * libyaml's events
 * into a small tree of struct ynode, every string copied out so nothing of
 * libyaml outlives the parse. libyaml's own errors are reported at their
 * file:line:col. The YAML is pure data: anchors, aliases, tags, NUL bytes
 * and multiple documents are refused, and so is nesting deeper than
 * YAML_MAX_DEPTH. What the tree means is for cfgparse.c and its callers.
 */
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <yaml.h>

#include "tollgate/log.h"
#include "tollgate/util.h"
#include "tollgate/yaml.h"

/* A YAML file larger than this is refused before it is parsed. */
#define YAML_MAX_FILE_BYTES (4 * 1024 * 1024)
/* Deeper nesting than this is refused; tollgate.yaml needs about five. */
#define YAML_MAX_DEPTH 64

static struct ynode *
ynode_new(enum ynode_type type, const yaml_mark_t *mark)
{
	struct ynode *n;

	n = xcalloc(1, sizeof(*n));
	n->yn_type = type;
	n->yn_line = mark->line + 1;
	n->yn_col = mark->column + 1;
	return (n);
}

/* Free n and everything under it; NULL is allowed. */
void
ynode_free(struct ynode *n)
{
	size_t i;

	if (n == NULL)
		return;
	for (i = 0; i < n->yn_nkids; i++)
		ynode_free(n->yn_kids[i]);
	free(n->yn_kids);
	free(n->yn_str);
	free(n);
}

static void
ynode_add(struct ynode *n, struct ynode *kid)
{
	if (n->yn_nkids == n->yn_cap) {
		n->yn_cap = n->yn_cap == 0 ? 8 : n->yn_cap * 2;
		n->yn_kids =
		    xreallocarray(n->yn_kids, n->yn_cap, sizeof(*n->yn_kids));
	}
	n->yn_kids[n->yn_nkids++] = kid;
}

/* Plain "", "~" and "null" are YAML's null: an empty section. */
int
ynode_is_null(const struct ynode *n)
{
	if (n->yn_type != YN_SCALAR || !n->yn_plain)
		return (0);
	return (n->yn_len == 0 || strcmp(n->yn_str, "~") == 0 ||
	    strcmp(n->yn_str, "null") == 0 || strcmp(n->yn_str, "Null") == 0 ||
	    strcmp(n->yn_str, "NULL") == 0);
}

/* Report libyaml's own error: the problem at its mark. */
static void
cfg_yaml_error(struct cfgctx *cx, const yaml_parser_t *p)
{
	size_t i, line = 1, col = 1;

	switch (p->error) {
	case YAML_MEMORY_ERROR:
		fatalx("%s: libyaml: out of memory", __func__);
	case YAML_READER_ERROR:
		/* The reader has only a byte offset; count lines ourselves. */
		for (i = 0; i < p->problem_offset && i < cx->cx_len; i++) {
			if (cx->cx_buf[i] == '\n') {
				line++;
				col = 1;
			} else
				col++;
		}
		if (p->problem_value != -1)
			cfg_error_at(cx, line, col, "%s (byte 0x%02x)",
			    p->problem, (unsigned)p->problem_value & 0xffU);
		else
			cfg_error_at(cx, line, col, "%s", p->problem);
		break;
	default:
		if (p->context != NULL)
			cfg_error_at(cx, p->problem_mark.line + 1,
			    p->problem_mark.column + 1, "%s (%s at %zu:%zu)",
			    p->problem, p->context, p->context_mark.line + 1,
			    p->context_mark.column + 1);
		else
			cfg_error_at(cx, p->problem_mark.line + 1,
			    p->problem_mark.column + 1, "%s",
			    p->problem != NULL ? p->problem : "YAML error");
		break;
	}
}

static int
cfg_next(struct cfgctx *cx, yaml_parser_t *p, yaml_event_t *ev)
{
	if (!yaml_parser_parse(p, ev)) {
		cfg_yaml_error(cx, p);
		return (-1);
	}
	return (0);
}

/* Refuse anchors and explicit tags: the config is pure data. */
static void
cfg_check_props(struct cfgctx *cx, const struct ynode *n,
    const yaml_char_t *anchor, const yaml_char_t *tag)
{
	if (anchor != NULL)
		cfg_error(cx, n,
		    "YAML anchors are not allowed (the config is plain data)");
	if (tag != NULL)
		cfg_error(cx, n,
		    "YAML tags are not allowed (the config is plain data)");
}

/*
 * Build the node that starts with event ev (which the caller deletes),
 * reading further events for collections. Returns NULL after a YAML syntax
 * error, which ends the parse.
 */
static struct ynode *
cfg_read_node(
    struct cfgctx *cx, yaml_parser_t *p, const yaml_event_t *ev, int depth)
{
	struct ynode *n, *kid;
	yaml_event_t cev;
	yaml_event_type_t end;

	switch (ev->type) {
	case YAML_SCALAR_EVENT:
		n = ynode_new(YN_SCALAR, &ev->start_mark);
		n->yn_len = ev->data.scalar.length;
		n->yn_str = xmalloc(n->yn_len + 1);
		memcpy(n->yn_str, ev->data.scalar.value, n->yn_len);
		n->yn_str[n->yn_len] = '\0';
		n->yn_plain = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
		cfg_check_props(
		    cx, n, ev->data.scalar.anchor, ev->data.scalar.tag);
		if (memchr(n->yn_str, '\0', n->yn_len) != NULL)
			cfg_error(cx, n, "NUL bytes are not allowed");
		return (n);
	case YAML_ALIAS_EVENT:
		n = ynode_new(YN_ALIAS, &ev->start_mark);
		cfg_error(cx, n,
		    "YAML aliases are not allowed (the config is plain data)");
		return (n);
	case YAML_SEQUENCE_START_EVENT:
		n = ynode_new(YN_SEQ, &ev->start_mark);
		cfg_check_props(cx, n, ev->data.sequence_start.anchor,
		    ev->data.sequence_start.tag);
		end = YAML_SEQUENCE_END_EVENT;
		break;
	case YAML_MAPPING_START_EVENT:
		n = ynode_new(YN_MAP, &ev->start_mark);
		cfg_check_props(cx, n, ev->data.mapping_start.anchor,
		    ev->data.mapping_start.tag);
		end = YAML_MAPPING_END_EVENT;
		break;
	default:
		fatalx("%s: unexpected libyaml event %d", __func__, ev->type);
	}

	if (depth >= YAML_MAX_DEPTH) {
		cfg_error(
		    cx, n, "nesting deeper than %d levels", YAML_MAX_DEPTH);
		ynode_free(n);
		return (NULL);
	}
	for (;;) {
		if (cfg_next(cx, p, &cev) == -1) {
			ynode_free(n);
			return (NULL);
		}
		if (cev.type == end) {
			yaml_event_delete(&cev);
			return (n);
		}
		kid = cfg_read_node(cx, p, &cev, depth + 1);
		yaml_event_delete(&cev);
		if (kid == NULL) {
			ynode_free(n);
			return (NULL);
		}
		ynode_add(n, kid);
	}
}

/*
 * Parse buf into a tree. *rootp is NULL for an empty stream. Returns -1
 * after a syntax error or a second document.
 */
int
cfg_parse_yaml(struct cfgctx *cx, struct ynode **rootp)
{
	yaml_parser_t p;
	yaml_event_t ev;
	struct ynode *root = NULL;
	int state = 0; /* 0 before a document, 1 in it, 2 after it */
	int rv = -1;

	*rootp = NULL;
	if (!yaml_parser_initialize(&p))
		fatalx("%s: yaml_parser_initialize", __func__);
	yaml_parser_set_input_string(
	    &p, (const unsigned char *)cx->cx_buf, cx->cx_len);
	for (;;) {
		if (cfg_next(cx, &p, &ev) == -1)
			goto fail;
		switch (ev.type) {
		case YAML_STREAM_START_EVENT:
		case YAML_DOCUMENT_END_EVENT:
			break;
		case YAML_DOCUMENT_START_EVENT:
			if (state != 0) {
				cfg_error_at(cx, ev.start_mark.line + 1,
				    ev.start_mark.column + 1,
				    "more than one YAML document");
				yaml_event_delete(&ev);
				goto fail;
			}
			state = 1;
			break;
		case YAML_STREAM_END_EVENT:
			yaml_event_delete(&ev);
			*rootp = root;
			root = NULL;
			rv = 0;
			goto fail;
		default:
			/* The root node of the one document. */
			root = cfg_read_node(cx, &p, &ev, 0);
			if (root == NULL) {
				yaml_event_delete(&ev);
				goto fail;
			}
			state = 2;
			break;
		}
		yaml_event_delete(&ev);
	}
fail:
	ynode_free(root);
	yaml_parser_delete(&p);
	return (rv);
}

/* Read the whole file, refusing one over YAML_MAX_FILE_BYTES. */
char *
cfg_read_file(struct cfgctx *cx, const char *path, size_t *lenp)
{
	char *buf = NULL;
	size_t len = 0;
	ssize_t r;
	int fd;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1) {
		cfg_error(cx, NULL, "%s", strerror(errno));
		return (NULL);
	}
	buf = xmalloc(YAML_MAX_FILE_BYTES + 1);
	for (;;) {
		r = read(fd, buf + len, YAML_MAX_FILE_BYTES + 1 - len);
		if (r == -1 && errno == EINTR)
			continue;
		if (r == -1) {
			cfg_error(cx, NULL, "%s", strerror(errno));
			goto fail;
		}
		if (r == 0)
			break;
		len += (size_t)r;
		if (len > YAML_MAX_FILE_BYTES) {
			cfg_error(cx, NULL, "file is larger than %d bytes",
			    YAML_MAX_FILE_BYTES);
			goto fail;
		}
	}
	close(fd);
	buf[len] = '\0';
	*lenp = len;
	return (buf);
fail:
	close(fd);
	free(buf);
	return (NULL);
}
