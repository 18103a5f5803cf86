/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The config loader's private header, shared by the files under
 * src/config/ and by nothing else: the parts of tollgate's schema that one
 * file defines and another's key tables name. The YAML tree, the state of
 * a load, the key tables and the generic parsers they are built from are
 * the YAML walker's (include/tollgate/yaml.h); the public contract is
 * include/tollgate/config.h.
 */
#ifndef TOLLGATE_CFG_H
#define TOLLGATE_CFG_H

#include "tollgate/yaml.h"

struct config;
struct routing_rule;
struct upstream_conf;

/* config.c */
int cfg_hostport(
    struct cfgctx *, const char *, const struct ynode *, char **, int *);
int cfg_secret_env(
    struct cfgctx *, const struct ynode *, const char *, const char *);

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

/* cfgfleet.c */
void cfgp_fleet(struct cfgctx *, const struct cfgkey *, const char *,
    const struct ynode *, void *);
void config_check_fleet(struct cfgctx *, const struct ynode *, struct config *);
void config_free_fleet(struct config *);

/* cfgship.c */
void cfgp_ship(struct cfgctx *, const struct cfgkey *, const char *,
    const struct ynode *, void *);
void config_check_ship(struct cfgctx *, const struct ynode *, struct config *);
void config_free_ship(struct config *);

/* cfgcache.c */
void cfgp_cache(struct cfgctx *, const struct cfgkey *, const char *,
    const struct ynode *, void *);
void config_check_cache(struct cfgctx *, const struct ynode *, struct config *);
void config_free_cache(struct config *);

/* cfgrouting.c */
void config_check_match(struct cfgctx *, const struct ynode *, const char *,
    const struct routing_rule *, const struct config *);
void cfgp_routing(struct cfgctx *, const struct cfgkey *, const char *,
    const struct ynode *, void *);
void config_check_routing(
    struct cfgctx *, const struct ynode *, struct config *);
void config_free_routing(struct config *);

/* cfgmeter.c */
void cfgp_durability(struct cfgctx *, const struct cfgkey *, const char *,
    const struct ynode *, void *);
void cfgp_unknown_action(struct cfgctx *, const struct cfgkey *, const char *,
    const struct ynode *, void *);
void cfgp_keys(struct cfgctx *, const struct cfgkey *, const char *,
    const struct ynode *, void *);
void cfgp_api_key_env(struct cfgctx *, const struct cfgkey *, const char *,
    const struct ynode *, void *);
void cfgp_keys_env(struct cfgctx *, const struct cfgkey *, const char *,
    const struct ynode *, void *);
void config_free_keys(struct upstream_conf *);
void cfgp_deployments(struct cfgctx *, const struct cfgkey *, const char *,
    const struct ynode *, void *);
void cfgp_service_tier(struct cfgctx *, const struct cfgkey *, const char *,
    const struct ynode *, void *);
void config_check_meter(struct cfgctx *, const struct ynode *, struct config *);

#endif
