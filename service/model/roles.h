/*
 * Token roles, ordered: each allows what the one before it does and more.
 *   reader    GET calls, the event stream, /metrics
 *   operator  also starts and stops jobs: backups, restores, verification,
 *             policy runs, job verbs, transactions, image checks
 *   admin     everything (drives, images, bitmaps, policies, tokens, ...)
 * BV_ROLE_DEFAULT is for the route table only: "what the method implies"
 * (router.h), so that a route nobody thought about needs admin to change
 * anything.  The names exist once, in bv_role_names.
 */
#ifndef BV_MODEL_ROLES_H
#define BV_MODEL_ROLES_H

enum bv_role {
    BV_ROLE_DEFAULT = 0,
    BV_ROLE_READER,
    BV_ROLE_OPERATOR,
    BV_ROLE_ADMIN,
};

/* "reader", "operator", "admin", NULL: index i is role i + 1 (BVJ_ENUM). */
extern const char *const bv_role_names[];

static inline enum bv_role bv_role_from_index(int i) { return (enum bv_role)(i + 1); }
/* The role's name; "default" for BV_ROLE_DEFAULT. */
const char *bv_role_name(enum bv_role r);
/* The role for a name, BV_ROLE_DEFAULT when it is none. */
enum bv_role bv_role_parse(const char *name);

#endif
