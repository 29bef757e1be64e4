/* Token roles: see roles.h. */
#include <string.h>

#include "model/roles.h"

const char *const bv_role_names[] = { "reader", "operator", "admin", NULL };

const char *bv_role_name(enum bv_role r)
{
    return r >= BV_ROLE_READER && r <= BV_ROLE_ADMIN ? bv_role_names[r - 1] : "default";
}

enum bv_role bv_role_parse(const char *name)
{
    for (int i = 0; name && bv_role_names[i]; i++)
        if (strcmp(name, bv_role_names[i]) == 0)
            return bv_role_from_index(i);
    return BV_ROLE_DEFAULT;
}
