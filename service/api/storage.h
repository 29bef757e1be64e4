/* GET /api/v1/storage: space in the storage directory (runtime/capacity.h). */
#ifndef BV_API_STORAGE_H
#define BV_API_STORAGE_H

#include "http/reply.h"

void api_storage_get(struct bv_request *req, struct bv_reply *rep);

#endif
