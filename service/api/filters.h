/* JSON ↔ filter configurations (blkdebug rules, blkverify children). */
#ifndef BV_API_FILTERS_H
#define BV_API_FILTERS_H

#include <stddef.h>

#include <cjson/cJSON.h>

#include "bv/blkdebug.h"

/* {"set_state":[{event,state?,new_state}],"inject_error":[{event,errno?,state?,
 * offset?|sector?,once?,immediately?,iotype?}]} → cfg.  -1 with err on bad input. */
int api_blkdebug_parse(const cJSON *obj, struct bv_blkdebug_config *cfg, char *err,
                       size_t errlen);

#endif
