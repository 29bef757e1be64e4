/* /api/v1/tokens: scoped API tokens (runtime/tokens.h). */
#ifndef BV_API_TOKENS_H
#define BV_API_TOKENS_H

#include "http/reply.h"

void api_tokens_create(struct bv_request *req, struct bv_reply *rep);
void api_tokens_list(struct bv_request *req, struct bv_reply *rep);
void api_tokens_delete(struct bv_request *req, struct bv_reply *rep);

#endif
